// SM90 forward epilogue: each consumer thread writes its O rows (converted to the element
// type, regrouped between neighbouring quad lanes into 8-byte pieces) and the fp32 LSE of its two
// rows straight from registers. No shared memory and no barrier, so the next tile's loads (already
// under way in the producer) never wait on it.
#pragma once

#include "common/pack.cuh"
#include "common/portable.h"

namespace ioattn::sm90 {

template <class Mainloop>
struct EpilogueFwd {
  using Element = typename Mainloop::Element;
  static constexpr int kDT = Mainloop::kDT;
  static constexpr int kWgRows = Mainloop::kWgRows;

  // The four threads of a quad hold the same row, each two columns (4 bytes) of every 8-column
  // block. Written as they are, one store instruction covers 8 rows x 16 bytes: half sectors,
  // and twice the memory transactions (measured: 1.5-2.5 us per tile at hd128/256, beside ~2 us
  // per key block). So neighbouring quad lanes swap halves of each pair of blocks (one shuffle
  // per pair): the even lane then holds 4 contiguous columns of the first block, the odd lane
  // of the second, and each 8-byte store fills whole 32-byte sectors. The former epilogue, a full
  // 4 x 4 transpose within the quad for 16-byte stores, took twice the shuffles and selects; on
  // an H100 it was 2-7% slower at hd64/128 (seqlen 512-4k, chained same-run A/Bs) and tied at
  // hd256.
  static_assert(kDT % 2 == 0, "whole pairs of 8-column blocks");

  // out/lse_out point at query row 0 of this sequence and head; row0 is this thread's first
  // row of the tile (its second is row0 + 8). Rows outside [0, seqlen_q) (m_begin < 0: see
  // FwdKernel::Work) and columns >= head_dim are not written.
  __device__ __forceinline__ static void store(const float (&acc_o)[1][kDT][4],
                                               const float (&lse)[2], Element *out,
                                               int64_t out_row_stride, float *lse_out, int m_begin,
                                               int row0, int seqlen_q, int head_dim) {
    const int quad_lane = threadIdx.x % 4;
    const bool odd = quad_lane & 1;
    // Of each pair of blocks this lane stores block 2 g + odd, columns 2 (quad_lane & 2) .. +3:
    // the pair's first column plus lane_col.
    const int lane_col = 8 * odd + 2 * (quad_lane & 2);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m_begin + row0 + 8 * h;
      // One pointer per row, the pairs at constant offsets from it (folded into the stores); the
      // shuffles run in every lane, in or past the sequence.
      Element *lane_out = out + int64_t(row) * out_row_stride + lane_col;
      const bool in_sequence = unsigned(row) < unsigned(seqlen_q);  // 0 <= row < seqlen_q
#pragma unroll
      for (int g = 0; g < kDT / 2; ++g) {
        // Columns 16 g + 2 quad_lane (+1), and the same 8 columns on.
        const uint32_t first = pack2<Element>(acc_o[0][2 * g][2 * h], acc_o[0][2 * g][2 * h + 1]);
        const uint32_t second =
            pack2<Element>(acc_o[0][2 * g + 1][2 * h], acc_o[0][2 * g + 1][2 * h + 1]);
        const uint32_t other = __shfl_xor_sync(0xffffffffu, odd ? first : second, 1);
        // The even lane's two columns come first, its odd partner's follow.
        const uint2 v = odd ? make_uint2(other, second) : make_uint2(first, other);
        if (in_sequence && 16 * g + lane_col < head_dim) {
          *reinterpret_cast<uint2 *>(lane_out + 16 * g) = v;
        }
      }
      if (in_sequence && quad_lane == 0) lse_out[row] = lse[h];
    }
  }

  // A tile whose rows see no key at all: O = 0, LSE = -inf (this warpgroup's 64 rows, those
  // in [0, seqlen_q)).
  __device__ __forceinline__ static void store_zero(Element *out, int64_t out_row_stride,
                                                    float *lse_out, int m_begin, int consumer,
                                                    int seqlen_q, int head_dim) {
    const int first = m_begin + consumer * kWgRows;
    const int rows = min(seqlen_q - first, kWgRows);
    const int chunks = head_dim / 8;
    for (int idx = threadIdx.x % 128; idx < rows * chunks; idx += 128) {
      const int row = first + idx / chunks;
      if (row >= 0) {
        *reinterpret_cast<uint4 *>(out + int64_t(row) * out_row_stride + (idx % chunks) * 8) =
            make_uint4(0, 0, 0, 0);
      }
    }
    for (int r = threadIdx.x % 128; r < rows; r += 128) {
      if (first + r >= 0) lse_out[first + r] = neg_inf();
    }
  }
};

}  // namespace ioattn::sm90
