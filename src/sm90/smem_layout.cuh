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

// A descriptor is moved within its tile by adding the byte offset / 16 to its start-address
// field (bits 0-13). The add cannot carry out of the field, since shared memory ends below
// 2^18 bytes, so only the low word changes: one 32-bit add on the uniform datapath per WGMMA,
// where rebuilding the descriptor from an address costs a mask, a shift and an or.
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  return (desc & 0xFFFFFFFF00000000ull) | (uint32_t(desc) + (bytes >> 4));
}

// Operand whose K dimension is the tile's columns (Q as A, K as B of S = Q.K^T), rows
// [row0, row0 + M or N): the descriptor of its first k16 step. The leading offset is unused for
// K-major swizzled operands whose K extent (32 bytes) lies inside one 128-byte line; 8-line
// groups are 1024 bytes apart (SBO).
__device__ __forceinline__ uint64_t desc_k_major(uint32_t tile_addr, int row0) {
  return detail::make_desc(tile_addr + row0 * 128, 16, 1024);
}

// Byte offset of k16 step kk (columns [16 kk, 16 kk + 16)) of a K-major operand: a 32-byte move
// within a panel (the hardware applies the swizzle to the final address), then the next panel.
template <class Tile>
IOATTN_HOST_DEVICE constexpr uint32_t k_major_step(int kk) {
  return (kk / 4) * Tile::kPanelBytes + (kk % 4) * 32;
}

// Operand whose K dimension is the tile's rows and N its columns (V as B of O += P.V, "MN-major",
// wgmma's transpose-B form): the descriptor of its first k16 step, all columns. N is contiguous
// within a panel; the leading offset steps from one 64-column panel to the next, the stride
// offset from one 8-row group to the next.
template <class Tile>
__device__ __forceinline__ uint64_t desc_mn_major(uint32_t tile_addr) {
  return detail::make_desc(tile_addr, Tile::kPanelBytes, 1024);
}

// Byte offset of k16 step kk (rows [16 kk, 16 kk + 16)) of an MN-major operand.
IOATTN_HOST_DEVICE constexpr uint32_t mn_major_step(int kk) { return kk * 16 * 128; }

}  // namespace ioattn::sm90
