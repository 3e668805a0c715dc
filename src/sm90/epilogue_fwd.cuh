// SM90 forward epilogue: each consumer thread writes its O rows (converted to the element
// type, regrouped between neighbouring quad lanes into 8-byte pieces) and the fp32 LSE of its two
// rows straight from registers. No shared memory and no barrier, so the next tile's loads (already
// under way in the producer) never wait on it.
#pragma once

#include "common/pack.cuh"
#include "common/portable.h"
#include "sm90/tile_rows.cuh"

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

  // Where a tile's rows go: out and lse at (position 0, query head head0) of this sequence;
  // a row at position pos of the group's head i (tile_rows.cuh) goes to
  // out + pos * row_stride + i * head_stride, lse + pos + i * lse_head_stride.
  struct Dest {
    Element *out;
    int64_t row_stride;
    int64_t head_stride;
    float *lse;
    int64_t lse_head_stride;
    int seqlen_q;
    int head_dim;
  };

  // This thread's two rows (row0 and row0 + 8 of the tile). Rows outside [0, seqlen_q) (the
  // first of end-aligned tiles starts before 0), rows past the tile's live ones and columns
  // >= head_dim are not written.
  __device__ __forceinline__ static void store(const float (&acc_o)[1][kDT][4],
                                               const float (&lse)[2], const Dest &d,
                                               const TileRows &rows, int row0) {
    const int quad_lane = threadIdx.x % 4;
    const bool odd = quad_lane & 1;
    // Of each pair of blocks this lane stores block 2 g + odd, columns 2 (quad_lane & 2) .. +3:
    // the pair's first column plus lane_col.
    const int lane_col = 8 * odd + 2 * (quad_lane & 2);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + 8 * h;
      const int pos = rows.position(row);
      const int64_t head = rows.head(row);
      // One pointer per row, the pairs at constant offsets from it (folded into the stores); the
      // shuffles run in every lane, in or past the sequence.
      Element *lane_out = d.out + int64_t(pos) * d.row_stride + head * d.head_stride + lane_col;
      const bool in_sequence = rows.live(row) && unsigned(pos) < unsigned(d.seqlen_q);
#pragma unroll
      for (int g = 0; g < kDT / 2; ++g) {
        // Columns 16 g + 2 quad_lane (+1), and the same 8 columns on.
        const uint32_t first_cols =
            pack2<Element>(acc_o[0][2 * g][2 * h], acc_o[0][2 * g][2 * h + 1]);
        const uint32_t second =
            pack2<Element>(acc_o[0][2 * g + 1][2 * h], acc_o[0][2 * g + 1][2 * h + 1]);
        const uint32_t other = __shfl_xor_sync(0xffffffffu, odd ? first_cols : second, 1);
        // The even lane's two columns come first, its odd partner's follow.
        const uint2 v = odd ? make_uint2(other, second) : make_uint2(first_cols, other);
        if (in_sequence && 16 * g + lane_col < d.head_dim) {
          *reinterpret_cast<uint2 *>(lane_out + 16 * g) = v;
        }
      }
      if (in_sequence && quad_lane == 0) {
        d.lse[pos + head * d.lse_head_stride] = lse[h];
      }
    }
  }

  // A tile whose rows see no key at all: O = 0, LSE = -inf (this warpgroup's 64 rows, those
  // live and in [0, seqlen_q)).
  __device__ __forceinline__ static void store_zero(const Dest &d, const TileRows &rows,
                                                    int consumer) {
    const int chunks = d.head_dim / 8;
    for (int idx = threadIdx.x % 128; idx < kWgRows * chunks; idx += 128) {
      const int row = consumer * kWgRows + idx / chunks;
      const int pos = rows.position(row);
      if (rows.live(row) && unsigned(pos) < unsigned(d.seqlen_q)) {
        const int64_t head_off = rows.head(row);
        *reinterpret_cast<uint4 *>(d.out + int64_t(pos) * d.row_stride + head_off * d.head_stride +
                                   (idx % chunks) * 8) = make_uint4(0, 0, 0, 0);
        if (idx % chunks == 0) d.lse[pos + head_off * d.lse_head_stride] = neg_inf();
      }
    }
  }
};

}  // namespace ioattn::sm90
