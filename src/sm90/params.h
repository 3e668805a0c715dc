// Kernel parameters of the SM90 forward: the shared FwdParams plus the TMA descriptors of q,
// k and v, which the host encodes per call (src/sm90/host/launch_fwd.cpp) and the kernel reads
// from its __grid_constant__ parameter space.
#pragma once

#include "common/params.h"
#include "common/persistent_schedule.h"
#include "common/portable.h"

namespace ioattn::sm90 {

// Bit-compatible with cuda.h's CUtensorMap (an opaque, 64-byte aligned 128-byte object).
struct alignas(64) TmaDescriptor {
  uint64_t opaque[16];
};

// Each tensor is mapped as 4-D (head_dim, rows, heads, batch), innermost first: rows =
// seqlen (dense) or total rows with batch = 1 (varlen, the kernel adds the sequence's first
// row). A box is 64 columns (one 128-byte swizzled panel) by a tile's rows.
//
// GQA packing (pack > 1): a tile's rows are the `pack` query heads of one K/V head (its whole
// group, group_size) at each of tile_positions query positions, row r at position r / pack of
// query head r % pack of the group; tma_q then maps q as 5-D (head_dim, pack, rows, heads_k,
// batch) with a box of 64 x pack x tile_positions. pack = 1: one query head per tile, rows are
// positions (tile_positions = block_m).
struct FwdParamsSm90 {
  FwdParams base;
  PersistentSchedule sched;  // the tile schedule (common/scheduler.cuh)
  int pack;
  int pack_magic;  // sm90/tile_rows.cuh
  int tile_positions;
  // 1: O goes out through TMA stores of 64 rows (tma_o, the epilogue's store_tma; kernels that
  // stage O, sm90::fwd_stage_o); 0: straight from registers (the other kernels, varlen, whose
  // tiles overlap the next sequence's rows, and GQA-packed tiles).
  int tma_store;
  TmaDescriptor tma_q;
  TmaDescriptor tma_k;
  TmaDescriptor tma_v;
  TmaDescriptor tma_o;
};

}  // namespace ioattn::sm90
