// The query rows of an SM90 forward tile, as (query position, query head) pairs. Unpacked, a
// tile is block_m consecutive positions of one query head. GQA-packed (FwdParamsSm90::pack > 1),
// it is `pack` query heads (the group of one K/V head) at each of tile_positions positions:
// tile row r is position first + r / pack of the group's query head r % pack, so that the
// group's heads share every K/V block a tile loads (decoding: one tile per K/V head instead of
// one per query head, each with a single row).
#pragma once

#include "common/portable.h"

namespace ioattn::sm90 {

// Divisions by pack of tile rows (< 256, pack <= 256) as (row x magic) >> 16 with magic =
// ceil(2^16 / pack): exact while row x pack < 2^16, and without a branch or a division in the
// mainloop (where the hd256 kernels have no registers to spare). magic = 2^16 for pack = 1.
IOATTN_HOST_DEVICE constexpr int pack_magic(int pack) { return (65536 + pack - 1) / pack; }

struct TileRows {
  int first;      // query position of tile row 0 (< 0 for the first of end-aligned tiles)
  int pack;       // query heads per position (1: unpacked)
  int magic;      // pack_magic(pack)
  int positions;  // query positions per tile

  __device__ __forceinline__ int position_offset(int row) const { return (row * magic) >> 16; }
  __device__ __forceinline__ int position(int row) const { return first + position_offset(row); }
  __device__ __forceinline__ int head(int row) const { return row - position_offset(row) * pack; }
  // Rows from pack x positions on are never loaded (their Q rows are stale).
  __device__ __forceinline__ bool live(int row) const { return row < pack * positions; }
  // One past the last position of the live rows among [0, row_end).
  __device__ __forceinline__ int end_of(int row_end) const {
    const int rows = row_end < pack * positions ? row_end : pack * positions;
    return rows <= 0 ? first : position(rows - 1) + 1;
  }
};

}  // namespace ioattn::sm90
