// SM90 forward epilogue: each consumer thread writes its O rows (converted to the element
// type, regrouped within the quad into 16-byte blocks) and the fp32 LSE of its two rows
// straight from registers. No shared memory and no barrier, so the next tile's loads (already
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

  // out/lse_out point at query row 0 of this sequence and head; row0 is this thread's first
  // row of the tile (its second is row0 + 8). Rows >= seqlen_q and columns >= head_dim are
  // not written.
  //
  // The four threads of a quad hold the same row, each two columns of every 8-column block.
  // Written as they are, one store instruction covers 8 rows x 16 bytes: half sectors, and
  // twice the memory transactions (measured: 1.5-2.5 us per tile at hd128/256, beside ~2 us
  // per key block). A 4 x 4 transpose within the quad (four shuffles per four blocks) gives
  // each thread one whole block, 16 bytes; a quad then writes 64 contiguous bytes of its row.
  __device__ __forceinline__ static void store(const float (&acc_o)[1][kDT][4],
                                               const float (&lse)[2], Element *out,
                                               int64_t out_row_stride, float *lse_out, int m_begin,
                                               int row0, int seqlen_q, int head_dim) {
    static_assert(kDT % 4 == 0, "whole groups of four 8-column blocks");
    const int lane = threadIdx.x % 32;
    const int quad_lane = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m_begin + row0 + 8 * h;
      Element *out_row = out + int64_t(row) * out_row_stride;
#pragma unroll
      for (int g = 0; g < kDT / 4; ++g) {
        // v[j]: columns 8 (4g + j) + 2 quad_lane, +1 of this row; after the transpose, the
        // columns 8 (4g + quad_lane) + 2 j, +1 (from quad lane j).
        uint32_t v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          v[j] = pack2<Element>(acc_o[0][4 * g + j][2 * h], acc_o[0][4 * g + j][2 * h + 1]);
        }
        quad_transpose(v, quad_lane);
        const int col = 8 * (4 * g + quad_lane);
        if (row < seqlen_q && col < head_dim) {
          *reinterpret_cast<uint4 *>(out_row + col) = make_uint4(v[0], v[1], v[2], v[3]);
        }
      }
      if (row < seqlen_q && quad_lane == 0) lse_out[row] = lse[h];
    }
  }

  // v[j] of quad lane i becomes v[i] of quad lane j. Two exchange rounds: across lane bit 0
  // the entries whose index bit 0 differs from the lane's, then likewise for bit 1 (each
  // round swaps one bit of (lane, index), so the two together swap lane and index).
  __device__ __forceinline__ static void quad_transpose(uint32_t (&v)[4], int quad_lane) {
#pragma unroll
    for (int bit = 1; bit <= 2; bit <<= 1) {
      const bool upper = quad_lane & bit;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k & bit) continue;  // k: the entry pair (k, k | bit)
        const uint32_t send = upper ? v[k] : v[k | bit];
        const uint32_t recv = __shfl_xor_sync(0xffffffffu, send, bit);
        if (upper) {
          v[k] = recv;
        } else {
          v[k | bit] = recv;
        }
      }
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
