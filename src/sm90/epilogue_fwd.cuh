// SM90 forward epilogue: each consumer thread writes its O pairs (converted to the element
// type) and the fp32 LSE of its two rows straight from registers. No shared memory and no
// barrier, so the next tile's loads (already under way in the producer) never wait on it.
#pragma once

#include "common/pack.cuh"
#include "common/portable.h"

namespace ioattn::sm90 {

template <class Mainloop>
struct EpilogueFwd {
  using Element = typename Mainloop::Element;
  static constexpr int kDT = Mainloop::kDT;
  static constexpr int kWgRows = Mainloop::kWgRows;

  // out/lse_out point at query row 0 of this sequence and head; row0 is this thread's first
  // row of the tile (its second is row0 + 8). Rows >= seqlen_q and columns >= head_dim are
  // not written.
  __device__ __forceinline__ static void store(const float (&acc_o)[1][kDT][4],
                                               const float (&lse)[2], Element *out,
                                               int64_t out_row_stride, float *lse_out, int m_begin,
                                               int row0, int seqlen_q, int head_dim) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m_begin + row0 + 8 * h;
      if (row >= seqlen_q) continue;
      Element *out_row = out + int64_t(row) * out_row_stride + 2 * (lane % 4);
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        if (dt * 8 < head_dim) {
          *reinterpret_cast<uint32_t *>(out_row + dt * 8) =
              pack2<Element>(acc_o[0][dt][2 * h], acc_o[0][dt][2 * h + 1]);
        }
      }
      if (lane % 4 == 0) lse_out[row] = lse[h];
    }
  }

  // A tile whose rows see no key at all: O = 0, LSE = -inf (this warpgroup's 64 rows).
  __device__ __forceinline__ static void store_zero(Element *out, int64_t out_row_stride,
                                                    float *lse_out, int m_begin, int consumer,
                                                    int seqlen_q, int head_dim) {
    const int first = m_begin + consumer * kWgRows;
    const int rows = min(seqlen_q - first, kWgRows);
    const int chunks = head_dim / 8;
    for (int idx = threadIdx.x % 128; idx < rows * chunks; idx += 128) {
      *reinterpret_cast<uint4 *>(out + int64_t(first + idx / chunks) * out_row_stride +
                                 (idx % chunks) * 8) = make_uint4(0, 0, 0, 0);
    }
    for (int r = threadIdx.x % 128; r < rows; r += 128) lse_out[first + r] = neg_inf();
  }
};

}  // namespace ioattn::sm90
