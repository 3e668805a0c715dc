// Mask policies. A policy tells the mainloop which key blocks a query tile visits (forward) or
// which query blocks a key tile visits (backward), which (query block, key block) pairs need
// element-wise masking (only boundary blocks do: the inner blocks run unmasked), and the
// visible key range [lo, hi) of one query row.
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
  int begin;  // first block to visit
  int end;    // one past the last block; end <= begin means there is nothing to visit
};

// Visible key - row distances, relative to a base (Mask::distances): [lo, hi).
struct DistanceRange {
  int lo;
  int hi;
};

template <bool kWindow>
struct Mask {
  static constexpr bool kIsWindow = kWindow;
  int seqlen_q;
  int seqlen_k;
  int left;  // the host caps both edges at max(seqlen_q, seqlen_k) (fill_common)
  int right;
  // The window as visible key - row distances [lo_dist, hi_dist) (with a window mask), clamped to
  // [-seqlen_q, seqlen_k]: a key of the sequence is less than seqlen_q before any of its rows and
  // less than seqlen_k after, so the clamp hides no key from a row of the sequence, and
  // keys_of_row, which the kernels call several times per tile, stays 32-bit. Unclamped,
  // lo_dist = (sk - sq) - left and hi_dist = (sk - sq) + right + 1; formed as below, no
  // intermediate leaves [-seqlen_q, seqlen_k].
  int lo_dist = 0;
  int hi_dist = 0;

  __device__ Mask(const FwdParams &p, int seqlen_q_, int seqlen_k_)
      : seqlen_q(seqlen_q_),
        seqlen_k(seqlen_k_),
        left(int(p.window_left)),
        right(int(p.window_right)) {
    if constexpr (kWindow) {
      lo_dist = left < 0 || left > seqlen_k ? -seqlen_q : (seqlen_k - left) - seqlen_q;
      hi_dist = right < 0 || right >= seqlen_q ? seqlen_k : seqlen_k - (seqlen_q - 1 - right);
    }
  }

  // The window around `diag` (the key aligned with a row, or a distance): [diag - left,
  // diag + right + 1), a missing edge at -unbounded / +unbounded. distances and
  // query_blocks_of_keys clamp them to their own ranges; keys_of_row takes them from lo_dist and
  // hi_dist (the same edges around diag = sk - sq, formed in 32 bits).
  struct Edges {
    int64_t lo;
    int64_t hi;
  };
  __device__ Edges edges(int64_t diag, int64_t unbounded) const {
    return {left < 0 ? -unbounded : diag - left, right < 0 ? unbounded : diag + right + 1};
  }
  __device__ static int64_t clamp(int64_t x, int64_t lo, int64_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
  }

  // Visible keys of query row `row` (0-based within the sequence; rows outside it, of tiles
  // that stick out of the sequence, may see fewer keys than the window's edges would give them).
  __device__ KeyRange keys_of_row(int row) const {
    if constexpr (!kWindow) {
      return {0, seqlen_k};
    } else {
      // row + dist clamped to [0, seqlen_k]; the sum is formed only where it is < seqlen_k, so
      // it cannot overflow.
      auto key = [&](int dist) {
        return dist >= seqlen_k - row ? seqlen_k : (row + dist > 0 ? row + dist : 0);
      };
      return {key(lo_dist), key(hi_dist)};
    }
  }

  // The mask as a band of key - row distances, for fragments that hold many rows per lane:
  // row i sees key j iff 0 <= j < seqlen_k and
  //   (sk - sq) - left <= j - i <= (sk - sq) + right      (no edge where left / right is -1),
  // keys_of_row's edges relative to the row. For a lane whose rows and keys are its first row
  // and key plus compile-time offsets, `base` = first key - first row, and a pair at distance
  // base + c is visible iff lo <= c < hi (and its key is in the sequence): one range per lane
  // and block instead of a row's bounds per row (the SM80 backward turns it into a bit mask
  // per key row). A missing edge becomes +-2^30, beyond any c within a tile, so the
  // comparisons stay 32-bit.
  __device__ DistanceRange distances(int64_t base) const {
    constexpr int64_t kUnbounded = int64_t(1) << 30;
    if constexpr (!kWindow) {
      return {int(-kUnbounded), int(kUnbounded)};
    } else {
      const Edges e = edges(int64_t(seqlen_k) - seqlen_q - base, kUnbounded);
      return {int(clamp(e.lo, -kUnbounded, kUnbounded)), int(clamp(e.hi, -kUnbounded, kUnbounded))};
    }
  }

  // Key blocks visited by query rows [m_begin, m_end), clipped to [0, seqlen_q) (the first
  // tile of the SM90 forward's end-aligned tiles starts before row 0).
  template <int kBlockN>
  __device__ BlockRange blocks_of_rows(int m_begin, int m_end) const {
    const int last_row = (m_end < seqlen_q ? m_end : seqlen_q) - 1;
    // The window edges move right with the row: the first row has the leftmost lo, the last
    // row the rightmost hi.
    const int lo = keys_of_row(m_begin > 0 ? m_begin : 0).lo;
    const int hi = keys_of_row(last_row).hi;
    if (hi <= lo) return {0, 0};
    return {lo / kBlockN, (hi + kBlockN - 1) / kBlockN};
  }

  // Query blocks of kBlockM rows whose rows see at least one key of [n_begin, n_end) (the
  // backward's view: which query tiles a key tile visits). Row i sees key j iff
  // lo(i) <= j < hi(i), and both edges move right with i, so the rows form one interval:
  //   lo(i) < n_end   <=>  i < n_end + left - (sk - sq)       (always, without a left edge)
  //   hi(i) > n_begin <=>  i >= n_begin - right - (sk - sq)   (always, without a right edge)
  // Rows whose own range is empty may be included; the boundary mask zeroes them.
  template <int kBlockM>
  __device__ BlockRange query_blocks_of_keys(int n_begin, int n_end) const {
    if (n_end > seqlen_k) n_end = seqlen_k;
    if (n_end <= n_begin || seqlen_q <= 0) return {0, 0};
    int64_t first = 0;
    int64_t last = seqlen_q;  // one past
    if constexpr (kWindow) {
      const int64_t shift = int64_t(seqlen_k) - seqlen_q;
      if (right >= 0) first = int64_t(n_begin) - right - shift;
      if (left >= 0) last = int64_t(n_end) + left - shift;
      first = first < 0 ? 0 : first;
      last = last > seqlen_q ? int64_t(seqlen_q) : last;
      if (last <= first) return {0, 0};
    }
    return {int(first / kBlockM), int((last + kBlockM - 1) / kBlockM)};
  }

  // The key blocks that every row of [m_begin, m_end) sees whole, which need no element-wise
  // mask: those from the left edge of the last row (clipped to the sequence) to the right edge of
  // the first row. Rows before 0 (m_begin < 0) see fewer keys than row 0: the range errs towards
  // masking there. Without a window only the ragged last block is masked.
  template <int kBlockN>
  __device__ BlockRange unmasked_blocks(int m_begin, int m_end) const {
    if constexpr (!kWindow) {
      return {0, seqlen_k / kBlockN};
    } else {
      const int last_row = (m_end < seqlen_q ? m_end : seqlen_q) - 1;
      // Both edges are clamped to [0, seqlen_k], so the divisions round as intended.
      return {(keys_of_row(last_row).lo + kBlockN - 1) / kBlockN,
              keys_of_row(m_begin).hi / kBlockN};
    }
  }

  // True when key block n_block holds a key that some row of [m_begin, m_end) must not see.
  template <int kBlockN>
  __device__ bool block_needs_mask(int n_block, int m_begin, int m_end) const {
    const BlockRange whole = unmasked_blocks<kBlockN>(m_begin, m_end);
    return n_block < whole.begin || n_block >= whole.end;
  }
};

// The keys of one row's chunk of a fragment (below) whose offsets from the chunk's first key
// are < x, as bits: bit 2 j is the key at offset 8 j, bit 2 j + 1 the one at 8 j + 1 (j < 16;
// a thread holds keys in pairs 8 apart). __funnelshift_lc(p, 0, 2 c) is the low 2 c bits of
// the pattern p for c in [0, 16].
__device__ __forceinline__ uint32_t keys_before(int x) {
  auto count = [](int c) { return c < 0 ? 0 : (c > 16 ? 16 : c); };
  const int even = count((x + 7) >> 3);  // j with 8 j < x
  const int odd = count((x + 6) >> 3);   // j with 8 j + 1 < x
  return __funnelshift_lc(0x55555555u, 0u, 2 * even) | __funnelshift_lc(0xaaaaaaaau, 0u, 2 * odd);
}

// Scores of keys that a row must not see become -inf, in an accumulator fragment of the m16n8
// layout (common/softmax.cuh): s[mt][nt][i] holds row first_row + 16 mt + 8 (i / 2) and key
// first_key + 8 nt + i % 2, where first_row and first_key are this thread's (lane / 4 and
// 2 (lane % 4) included). For boundary blocks only (block_needs_mask).
//
// Wide fragments (kNT >= kMaskBitsMinTiles) turn each row's visible keys into 32-bit masks,
// one per 16 n8 tiles (keys_before of the two edges), which ptxas spreads over predicates 7
// bits at a time (R2P): an element then costs one FSEL instead of a compare per edge and the
// FSEL. The masks cost ~20 instructions per row, which narrow fragments do not earn back, and
// a few registers, which the SM90 hd256 kernels (64-key blocks, 80 when measured, beside 128 O
// accumulators) do not have: there it spilled and lost 1.3% (hd256 causal 4k). Measured on an H100
// (SM90, bf16, causal, same run): hd64 +3.2% at seqlen 512, +2% at 1k, +1.5% at 2k, +1.3% at 4k,
// +0.6% at 8k; hd128 +1% at 512, +0.2-0.3% at 2k-4k.
inline constexpr int kMaskBitsMinTiles = 12;

//
// keys[mt][h]: the visible keys of the row of s[mt][..][2 h] and s[mt][..][2 h + 1] (a row's
// keys_of_row, which callers that mask many blocks of the same rows compute once).
// kRightEdgeOnly: the fragment's keys all lie at or after every row's first visible key (under a
// causal mask, always), so only the right edge is tested.
template <bool kRightEdgeOnly = false, int kMT, int kNT>
__device__ __forceinline__ void mask_fragment_keys(float (&s)[kMT][kNT][4],
                                                   const KeyRange (&keys)[kMT][2], int first_key) {
  constexpr int kChunk = 16;  // n8 tiles per 32-bit mask
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int nt0 = 0; nt0 < kNT; nt0 += kChunk) {
        if constexpr (kNT >= kMaskBitsMinTiles) {
          const int base = first_key + 8 * nt0;
          const uint32_t visible = keys_before(keys[mt][h].hi - base) &
                                   (kRightEdgeOnly ? ~0u : ~keys_before(keys[mt][h].lo - base));
#pragma unroll
          for (int nt = nt0; nt < nt0 + kChunk && nt < kNT; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              if (!((visible >> (2 * (nt - nt0) + e)) & 1u)) s[mt][nt][2 * h + e] = neg_inf();
            }
          }
        } else {
#pragma unroll
          for (int nt = nt0; nt < nt0 + kChunk && nt < kNT; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int key = first_key + 8 * nt + e;
              if ((!kRightEdgeOnly && key < keys[mt][h].lo) || key >= keys[mt][h].hi) {
                s[mt][nt][2 * h + e] = neg_inf();
              }
            }
          }
        }
      }
    }
  }
}

// The same for rows first_row + 16 mt + 8 h.
template <class MaskT, int kMT, int kNT>
__device__ __forceinline__ void mask_fragment(float (&s)[kMT][kNT][4], const MaskT &mask,
                                              int first_row, int first_key) {
  KeyRange keys[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) keys[mt][h] = mask.keys_of_row(first_row + 16 * mt + 8 * h);
  }
  mask_fragment_keys(s, keys, first_key);
}

using MaskFull = Mask<false>;
using MaskWindow = Mask<true>;

}  // namespace ioattn
