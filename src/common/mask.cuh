// Mask policies. A policy tells the mainloop which key blocks a query tile visits, which of
// them need element-wise masking (only boundary blocks do: the inner blocks run unmasked), and
// the visible key range [lo, hi) of one query row.
//
//   MaskFull    every key of the sequence is visible; only the ragged last key block is masked.
//   MaskWindow  sliding window (window_left, window_right), -1 = unbounded; causal is (-1, 0).
//               Aligned to the bottom-right corner: row i sees keys
//               [i + (sk - sq) - left, i + (sk - sq) + right] intersected with [0, sk).
#pragma once

#include "common/params.h"
#include "common/portable.h"

namespace ioattn {

struct KeyRange {
  int lo;  // first visible key
  int hi;  // one past the last visible key; hi <= lo means no visible key
};

struct BlockRange {
  int n_min;  // first key block to visit
  int n_max;  // one past the last key block; n_max <= n_min means the tile sees no key
};

template <bool kWindow>
struct Mask {
  static constexpr bool kIsWindow = kWindow;
  int seqlen_q;
  int seqlen_k;
  int64_t left;
  int64_t right;

  __device__ Mask(const FwdParams &p, int seqlen_q_, int seqlen_k_)
      : seqlen_q(seqlen_q_), seqlen_k(seqlen_k_), left(p.window_left), right(p.window_right) {}

  // Visible keys of query row `row` (0-based within the sequence).
  __device__ KeyRange keys_of_row(int row) const {
    if constexpr (!kWindow) {
      return {0, seqlen_k};
    } else {
      const int64_t diag = int64_t(row) + seqlen_k - seqlen_q;  // key aligned with this row
      int64_t lo = left < 0 ? 0 : diag - left;
      int64_t hi = right < 0 ? int64_t(seqlen_k) : diag + right + 1;
      lo = lo < 0 ? 0 : lo;
      hi = hi > seqlen_k ? int64_t(seqlen_k) : hi;
      return {int(lo > seqlen_k ? seqlen_k : lo), int(hi < 0 ? 0 : hi)};
    }
  }

  // Key blocks visited by query rows [m_begin, m_end) (m_end clipped to seqlen_q).
  template <int kBlockN>
  __device__ BlockRange blocks_of_rows(int m_begin, int m_end) const {
    const int last_row = (m_end < seqlen_q ? m_end : seqlen_q) - 1;
    // The window edges move right with the row: the first row has the leftmost lo, the last
    // row the rightmost hi.
    const int lo = keys_of_row(m_begin).lo;
    const int hi = keys_of_row(last_row).hi;
    if (hi <= lo) return {0, 0};
    return {lo / kBlockN, (hi + kBlockN - 1) / kBlockN};
  }

  // True when key block n_block holds a key that some row of [m_begin, m_end) must not see:
  // the block crosses the right edge of the first row, or the left edge of the last row.
  template <int kBlockN>
  __device__ bool block_needs_mask(int n_block, int m_begin, int m_end) const {
    const int n_begin = n_block * kBlockN;
    const int n_end = n_begin + kBlockN;
    if constexpr (!kWindow) {
      return n_end > seqlen_k;
    } else {
      const int last_row = (m_end < seqlen_q ? m_end : seqlen_q) - 1;
      return n_end > keys_of_row(m_begin).hi || n_begin < keys_of_row(last_row).lo;
    }
  }
};

using MaskFull = Mask<false>;
using MaskWindow = Mask<true>;

}  // namespace ioattn
