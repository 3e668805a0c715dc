// SM80 forward epilogue: writes O (converted to the element type) and the fp32 LSE of one
// query tile. O goes through shared memory so that global stores are full 16-byte rows.
#pragma once

#include "common/portable.h"
#include "sm80/ptx.cuh"

namespace ioattn::sm80 {

template <class Mainloop>
struct EpilogueFwd {
  using Element = typename Mainloop::Element;
  using TileQ = typename Mainloop::TileQ;
  static constexpr int kMT = Mainloop::kMT;
  static constexpr int kDT = Mainloop::kDT;
  static constexpr int kWarpRows = Mainloop::kWarpRows;
  static constexpr int kChunksPerRow = TileQ::kChunksPerRow;
  static_assert((kWarpRows * kChunksPerRow) % 32 == 0);

  // out/lse point at query row 0 of this sequence and head; rows [m_begin, m_begin + kBlockM)
  // of the tile are written where they are < seqlen_q; columns only up to head_dim.
  __device__ __forceinline__ static void store(const float (&acc_o)[kMT][kDT][4],
                                               const float (&lse)[2 * kMT], Element *smem_stage,
                                               Element *out, int64_t out_row_stride, float *lse_out,
                                               int m_begin, int seqlen_q, int head_dim) {
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    // Each warp stages only its own rows of the Q tile, whose last reader (this warp's Q.K^T
    // of the final block, or the Q fragment load) is behind it, so no CTA barrier is needed.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = warp * kWarpRows + mt * 16 + lane / 4 + 8 * h;
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
          const uint32_t v = pack2<Element>(acc_o[mt][dt][2 * h], acc_o[mt][dt][2 * h + 1]);
          *reinterpret_cast<uint32_t *>(smem_stage + TileQ::offset(row, dt) + 2 * (lane % 4)) = v;
        }
      }
    // The staged rows were written by all lanes of this warp and are read back by other lanes.
    __syncwarp();

    const int rows_valid = seqlen_q - m_begin;
    const int chunks_valid = head_dim / 8;
#pragma unroll
    for (int i = 0; i < kWarpRows * kChunksPerRow / 32; ++i) {
      const int idx = i * 32 + lane;
      const int row = warp * kWarpRows + idx / kChunksPerRow;
      const int chunk = idx % kChunksPerRow;
      if (row < rows_valid && chunk < chunks_valid) {
        const uint4 v = *reinterpret_cast<const uint4 *>(smem_stage + TileQ::offset(row, chunk));
        *reinterpret_cast<uint4 *>(out + int64_t(m_begin + row) * out_row_stride + chunk * 8) = v;
      }
    }

    if (lane % 4 == 0) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = warp * kWarpRows + mt * 16 + lane / 4 + 8 * h;
          if (row < rows_valid) lse_out[m_begin + row] = lse[2 * mt + h];
        }
    }
  }

  // A tile whose rows see no key at all: O = 0, LSE = -inf.
  __device__ __forceinline__ static void store_zero(Element *out, int64_t out_row_stride,
                                                    float *lse_out, int m_begin, int seqlen_q,
                                                    int head_dim) {
    constexpr int kBlockM = Mainloop::kBlockM;
    const int rows_valid = min(seqlen_q - m_begin, kBlockM);
    const int chunks_valid = head_dim / 8;
    for (int idx = threadIdx.x; idx < rows_valid * chunks_valid; idx += Mainloop::kNThreads) {
      const int row = idx / chunks_valid;
      const int chunk = idx % chunks_valid;
      *reinterpret_cast<uint4 *>(out + int64_t(m_begin + row) * out_row_stride + chunk * 8) =
          make_uint4(0, 0, 0, 0);
    }
    for (int row = threadIdx.x; row < rows_valid; row += Mainloop::kNThreads) {
      lse_out[m_begin + row] = neg_inf();
    }
  }
};

}  // namespace ioattn::sm80
