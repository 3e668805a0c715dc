// SM90 forward epilogue, two ways. store: each consumer thread writes its O rows (converted to
// the element type, regrouped between neighbouring quad lanes into 8-byte pieces) and the fp32
// LSE of its two rows straight from registers; no shared memory and no barrier, so the next
// tile's loads (already under way in the producer) never wait on it. store_tma (hd128 window
// kernels, dense and unpacked: sm90::fwd_stage_o): O goes through a buffer of its own in shared
// memory and TMA stores, which the warpgroup does not wait for.
#pragma once

#include "common/pack.cuh"
#include "common/portable.h"
#include "sm90/params.h"
#include "sm90/ptx.cuh"
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
    }
    store_lse(lse, d, rows, row0);
  }

  // The LSE of this thread's two rows (one lane per quad writes), rows outside [0, seqlen_q)
  // and past the tile's live ones skipped.
  __device__ __forceinline__ static void store_lse(const float (&lse)[2], const Dest &d,
                                                   const TileRows &rows, int row0) {
    if (threadIdx.x % 4 != 0) return;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + 8 * h;
      const int pos = rows.position(row);
      if (rows.live(row) && unsigned(pos) < unsigned(d.seqlen_q)) {
        d.lse[pos + int64_t(rows.head(row)) * d.lse_head_stride] = lse[h];
      }
    }
  }

  // Named barriers kFirstBarrier + consumer (after the mainloop's ping-pong ones): a consumer
  // warpgroup's O is all in shared memory.
  static constexpr int kFirstBarrier = 1 + Mainloop::kConsumerWarpgroups;
  using TileQ = typename Mainloop::TileQ;

  // The TMA-store epilogue (MainloopFwd::kStageO and FwdParamsSm90::tma_store): a consumer
  // warpgroup puts its 64 O rows into its rows of the O buffer (stmatrix, in the swizzled layout
  // TMA reads), then one thread stores them, one box of 64 rows per 64-column panel, and goes on
  // without waiting for the writes. Rows past seqlen_q and columns past head_dim lie outside the
  // tensor map (tma_o) and are not written; the warpgroup's first row must be >= 0 (end-aligned
  // tiles that start before row 0 take store). head, batch: of the tile (unpacked).
  __device__ __forceinline__ static void store_tma(const float (&acc_o)[1][kDT][4],
                                                   const float (&lse)[2], const Dest &d,
                                                   const TileRows &rows, int consumer, char *o_tile,
                                                   const TmaDescriptor *map, int head, int batch) {
    const int bar = kFirstBarrier + consumer;
    // why: the previous tile's store must have read the buffer before it is overwritten (only
    // the thread that issued it can wait; the barrier tells the others).
    if (threadIdx.x % 128 == 0) bulk_wait_read();
    bar_sync(bar, 128);
    const int lane = threadIdx.x % 32;
    // Lane l addresses row l % 8 of matrix m = l / 8 of each stmatrix: matrix m holds rows
    // 8 (m % 2) .. + 7 of this warp's 16 and 8-column block 2 j + m / 2 (the fragments of acc_o,
    // in that order). Rows are 8-aligned, so a row's swizzle is lane % 8.
    const int m = lane / 8;
    const int row = consumer * kWgRows + (threadIdx.x / 32) % 4 * 16 + 8 * (m % 2) + lane % 8;
    const uint32_t row_addr = smem_addr(o_tile) + row * 128;
#pragma unroll
    for (int j = 0; j < kDT / 2; ++j) {
      const int block = 2 * j + m / 2;
      stmatrix_x4(row_addr + (block / 8) * TileQ::kPanelBytes + (((block % 8) ^ (lane % 8)) << 4),
                  pack2<Element>(acc_o[0][2 * j][0], acc_o[0][2 * j][1]),
                  pack2<Element>(acc_o[0][2 * j][2], acc_o[0][2 * j][3]),
                  pack2<Element>(acc_o[0][2 * j + 1][0], acc_o[0][2 * j + 1][1]),
                  pack2<Element>(acc_o[0][2 * j + 1][2], acc_o[0][2 * j + 1][3]));
    }
    // why: the TMA store reads through the async proxy; each thread's stmatrix writes must be
    // visible to it, and all 128 threads' written, before the one thread issues it.
    fence_proxy_async_smem();
    bar_sync(bar, 128);
    if (threadIdx.x % 128 == 0) {
#pragma unroll
      for (int panel = 0; panel < TileQ::kPanels; ++panel) {
        tma_store_4d(map, o_tile + panel * TileQ::kPanelBytes + consumer * kWgRows * 128,
                     panel * 64, rows.first + consumer * kWgRows, head, batch);
      }
      bulk_commit();
    }
    store_lse(lse, d, rows, Mainloop::thread_row0(consumer));
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
