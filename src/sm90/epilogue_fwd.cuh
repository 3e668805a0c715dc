// SM90 forward epilogue: each consumer thread writes its O rows (converted to the element
// type, regrouped within the quad into 8- or 16-byte pieces) and the fp32 LSE of its two rows
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

  // The four threads of a quad hold the same row, each two columns (4 bytes) of every 8-column
  // block. Written as they are, one store instruction covers 8 rows x 16 bytes: half sectors,
  // and twice the memory transactions (measured: 1.5-2.5 us per tile at hd128/256, beside ~2 us
  // per key block). So the quad first transposes groups of kGroup blocks (kGroup / 2 shuffles
  // per block): lane q then holds kGroup pieces of contiguous columns of one block, and a store
  // fills whole 32-byte sectors. Groups of 2 blocks (8-byte stores) take half the shuffles and
  // selects of groups of 4 (16-byte stores), 56 fewer instructions per thread and tile at hd128:
  // +1-2% at hd64/128 on an H100 (seqlen 512-8k). At hd192/256 the twice as many store requests
  // for the larger O tile cost more than that (-1..-3% at hd256 causal), so they keep groups
  // of 4.
  static constexpr int kGroup = Mainloop::kHeadDim <= 128 ? 2 : 4;
  static_assert(kDT % kGroup == 0, "whole groups of 8-column blocks");

  // out/lse_out point at query row 0 of this sequence and head; row0 is this thread's first
  // row of the tile (its second is row0 + 8). Rows >= seqlen_q and columns >= head_dim are
  // not written.
  __device__ __forceinline__ static void store(const float (&acc_o)[1][kDT][4],
                                               const float (&lse)[2], Element *out,
                                               int64_t out_row_stride, float *lse_out, int m_begin,
                                               int row0, int seqlen_q, int head_dim) {
    const int quad_lane = threadIdx.x % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m_begin + row0 + 8 * h;
      Element *out_row = out + int64_t(row) * out_row_stride;
#pragma unroll
      for (int g = 0; g < kDT / kGroup; ++g) {
        // v[j]: columns 8 (kGroup g + j) + 2 quad_lane, +1 of this row; after the transpose,
        // block kGroup g + quad_lane % kGroup, columns 2 (quad_lane - quad_lane % kGroup + j),
        // +1 (from quad lane quad_lane - quad_lane % kGroup + j).
        uint32_t v[kGroup];
#pragma unroll
        for (int j = 0; j < kGroup; ++j) {
          v[j] =
              pack2<Element>(acc_o[0][kGroup * g + j][2 * h], acc_o[0][kGroup * g + j][2 * h + 1]);
        }
        transpose_in_groups(v, quad_lane);
        const int within = quad_lane % kGroup;
        const int col = 8 * (kGroup * g + within) + 2 * (quad_lane - within);
        if (row < seqlen_q && col < head_dim) {
          if constexpr (kGroup == 2) {
            *reinterpret_cast<uint2 *>(out_row + col) = make_uint2(v[0], v[1]);
          } else {
            *reinterpret_cast<uint4 *>(out_row + col) = make_uint4(v[0], v[1], v[2], v[3]);
          }
        }
      }
      if (row < seqlen_q && quad_lane == 0) lse_out[row] = lse[h];
    }
  }

  // Within each group of kGroup neighbouring quad lanes, v[j] of lane i becomes v[i] of lane j.
  // One exchange round per lane bit: across bit b the entries whose index bit b differs from
  // the lane's (each round swaps one bit of (lane, index), so the rounds together swap lane and
  // index).
  __device__ __forceinline__ static void transpose_in_groups(uint32_t (&v)[kGroup], int quad_lane) {
#pragma unroll
    for (int bit = 1; bit < kGroup; bit <<= 1) {
      const bool upper = quad_lane & bit;
#pragma unroll
      for (int k = 0; k < kGroup; ++k) {
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
