// Cooperative global -> shared tile copies with cp.async, for every SM80 kernel.
#pragma once

#include "common/portable.h"
#include "sm80/ptx.cuh"
#include "sm80/smem_tile.cuh"

namespace ioattn::sm80 {

// Copies rows [0, rows_valid) of a (Tile::kRows, Tile::kCols) tile whose row r starts at
// gmem + r * row_stride, with kNThreads threads. Rows past rows_valid and 16-byte chunks past
// chunks_valid (head dims padded up to the compiled one) are zero-filled: padding then adds
// exact zeros to every GEMM and can never inject NaN from stale shared memory. Thread tid
// copies chunk (tid % kChunks) of rows tid / kChunks + i * kRowsPerPass of every sub-tile;
// kRowsPerPass is a multiple of 8, so the swizzle is the same for all of them and the shared
// memory offsets are one register plus immediates.
template <class Tile, int kNThreads, class Element>
__device__ __forceinline__ void load_tile(Element *smem, const Element *gmem, int64_t row_stride,
                                          int rows_valid, int chunks_valid, int tid) {
  constexpr int kChunks = Tile::kChunksPerSubRow;
  constexpr int kRowsPerPass = kNThreads / kChunks;
  static_assert(Tile::kRows % kRowsPerPass == 0 && kRowsPerPass % 8 == 0);
  const int c = tid % kChunks;
  const int r0 = tid / kChunks;
  const uint32_t dst0 = smem_addr(smem) + 2 * (r0 * Tile::kSubCols + (c ^ Tile::swizzle(r0)) * 8);
  const Element *src = gmem + int64_t(r0) * row_stride + c * 8;
  const int64_t pass_stride = int64_t(kRowsPerPass) * row_stride;
  const int rows_left = rows_valid - r0;
  const int chunks_left = chunks_valid - c;
#pragma unroll
  for (int i = 0; i < Tile::kRows / kRowsPerPass; ++i) {
#pragma unroll
    for (int sub = 0; sub < Tile::kSubTiles; ++sub) {
      const bool pred = i * kRowsPerPass < rows_left && sub * kChunks < chunks_left;
      const uint32_t dst = dst0 + 2 * ((sub * Tile::kRows + i * kRowsPerPass) * Tile::kSubCols);
      cp_async_16(dst, pred ? src + sub * Tile::kSubCols : gmem, pred);
    }
    src += pass_stride;
  }
}

}  // namespace ioattn::sm80
