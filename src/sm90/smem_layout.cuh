// Shared-memory tiles of 16-bit elements in the 128-byte-swizzle layout that TMA writes
// (CU_TENSOR_MAP_SWIZZLE_128B) and WGMMA reads, and the WGMMA descriptors that address them.
//
// A tile of kRows x kCols elements is stored as ceil(kCols / 64) column panels, panel p holding
// columns [64p, 64p + 64) of every row as one 128-byte line; within each 1024-byte group of 8
// lines, 16-byte chunk c of line r sits at chunk c ^ (r % 8). One TMA box fills one panel. The
// panels start 1024-byte aligned, so the descriptors' base-offset field is 0. Columns a panel
// has beyond the tensor's head dim are zero-filled by TMA (the padded head dims 96, 192).
#pragma once

#include "common/portable.h"

namespace ioattn::sm90 {

template <int kRows_, int kCols_>
struct SwizzledTile {
  static constexpr int kRows = kRows_;
  static constexpr int kCols = kCols_;
  static constexpr int kPanelCols = 64;  // 128 bytes of 16-bit elements
  static constexpr int kPanels = (kCols + kPanelCols - 1) / kPanelCols;
  static constexpr int kPanelBytes = kRows * 128;
  static constexpr int kBytes = kPanels * kPanelBytes;
  static_assert(kRows % 8 == 0, "whole 8-line swizzle atoms");
};

namespace detail {
// bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte offset >> 4,
// 49-51 base offset (0: the swizzle atoms are 1024-byte aligned), 62-63 swizzle (1 = 128 B).
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | uint64_t((lbo >> 4) & 0x3FFF) << 16 |
         uint64_t((sbo >> 4) & 0x3FFF) << 32 | uint64_t(1) << 62;
}
}  // namespace detail

// Operand whose K dimension is the tile's columns (Q as A, K as B of S = Q.K^T): the 16
// columns [16 kk, 16 kk + 16) of rows [row0, row0 + M or N). Within a panel, a k16 step is a
// 32-byte move of the start address (the hardware applies the swizzle to the final address);
// 8-line groups are 1024 bytes apart (SBO). The leading offset is unused for K-major swizzled
// operands whose K extent (32 bytes) lies inside one 128-byte line.
template <class Tile>
__device__ __forceinline__ uint64_t desc_k_major(uint32_t tile_addr, int row0, int kk) {
  const uint32_t addr = tile_addr + (kk / 4) * Tile::kPanelBytes + row0 * 128 + (kk % 4) * 32;
  return detail::make_desc(addr, 16, 1024);
}

// Operand whose K dimension is the tile's rows and N its columns (V as B of O += P.V, "MN-major",
// wgmma's transpose-B form): rows [16 kk, 16 kk + 16), all columns. N is contiguous within a
// panel; the leading offset steps from one 64-column panel to the next, the stride offset from
// one 8-row group to the next.
template <class Tile>
__device__ __forceinline__ uint64_t desc_mn_major(uint32_t tile_addr, int kk) {
  return detail::make_desc(tile_addr + kk * 16 * 128, Tile::kPanelBytes, 1024);
}

}  // namespace ioattn::sm90
