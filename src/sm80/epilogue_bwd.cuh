// SM80 backward epilogue: writes one CTA's dK (scaled by d(score)/d(q.k)) and dV, converted
// to the element type. Both go through shared memory (the K and V tiles, free once the
// mainloop is done) so that global stores are full 16-byte rows.
#pragma once

#include "common/portable.h"
#include "sm80/ptx.cuh"

namespace ioattn::sm80 {

template <class Mainloop>
struct EpilogueBwd {
  using Element = typename Mainloop::Element;
  using TileKV = typename Mainloop::TileKV;
  using SharedStorage = typename Mainloop::SharedStorage;
  static constexpr int kPairs = Mainloop::kPairs;
  static constexpr int kMT = Mainloop::kMT;
  static constexpr int kWarpKeys = Mainloop::kWarpKeys;
  static constexpr int kWarpsN = Mainloop::kWarpsN;
  static constexpr int kWarpsD = Mainloop::kWarpsD;
  static constexpr int kBlockN = Mainloop::kBlockN;
  static constexpr int kNThreads = Mainloop::kNThreads;
  static constexpr int kChunksPerRow = TileKV::kChunksPerRow;

  // Stages a warp's (kWarpKeys keys x dealt columns) accumulator into a K/V-shaped tile.
  __device__ __forceinline__ static void stage(Element *tile, const float (&acc)[kMT][kPairs][2][4],
                                               float scale, int wn, int wd, int lane) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int pr = 0; pr < kPairs; ++pr)
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = wn * kWarpKeys + 16 * mt + lane / 4 + 8 * h;
            const int chunk = TileKV::template Dealt<kWarpsD>::col(pr, wd) / 8 + t;
            *reinterpret_cast<uint32_t *>(tile + TileKV::offset(row, chunk) + 2 * (lane % 4)) =
                pack2<Element>(acc[mt][pr][t][2 * h] * scale, acc[mt][pr][t][2 * h + 1] * scale);
          }
  }

  // Rows [0, rows_valid) and chunks [0, chunks_valid) of a staged tile to dst (row 0 of the
  // CTA's keys).
  __device__ __forceinline__ static void copy_out(const Element *tile, Element *dst,
                                                  int64_t row_stride, int rows_valid,
                                                  int chunks_valid) {
    for (int idx = threadIdx.x; idx < kBlockN * kChunksPerRow; idx += kNThreads) {
      const int row = idx / kChunksPerRow;
      const int chunk = idx % kChunksPerRow;
      if (row < rows_valid && chunk < chunks_valid) {
        *reinterpret_cast<uint4 *>(dst + int64_t(row) * row_stride + chunk * 8) =
            *reinterpret_cast<const uint4 *>(tile + TileKV::offset(row, chunk));
      }
    }
  }

  // dk/dv point at key row n_begin of this sequence and K/V head; rows past seqlen_k and
  // columns past head_dim are not written.
  __device__ __forceinline__ static void store(const Mainloop &mainloop, SharedStorage &smem,
                                               Element *dk, int64_t dk_row_stride, Element *dv,
                                               int64_t dv_row_stride, float dk_scale,
                                               int rows_valid, int head_dim) {
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    // Barrier: every warp has finished its last dQ GEMM, the last reader of the K tile (and
    // of the V tile, through dP^T), so both may be overwritten.
    __syncthreads();
    stage(smem.k, mainloop.acc_dk, dk_scale, warp % kWarpsN, warp / kWarpsN, lane);
    stage(smem.v, mainloop.acc_dv, 1.f, warp % kWarpsN, warp / kWarpsN, lane);
    // Barrier: a staged row holds the columns of kWarpsD warps and is copied out by others.
    __syncthreads();
    copy_out(smem.k, dk, dk_row_stride, rows_valid, head_dim / 8);
    copy_out(smem.v, dv, dv_row_stride, rows_valid, head_dim / 8);
  }

  // Keys that no query sees: dK = dV = 0.
  __device__ __forceinline__ static void store_zero(Element *dk, int64_t dk_row_stride, Element *dv,
                                                    int64_t dv_row_stride, int rows_valid,
                                                    int head_dim) {
    const int chunks_valid = head_dim / 8;
    const int rows = min(rows_valid, kBlockN);
    for (int idx = threadIdx.x; idx < rows * chunks_valid; idx += kNThreads) {
      const int row = idx / chunks_valid;
      const int chunk = idx % chunks_valid;
      const uint4 zero = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4 *>(dk + int64_t(row) * dk_row_stride + chunk * 8) = zero;
      *reinterpret_cast<uint4 *>(dv + int64_t(row) * dv_row_stride + chunk * 8) = zero;
    }
  }
};

}  // namespace ioattn::sm80
