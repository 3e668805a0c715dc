// Tile schedulers: map a CTA to the (block, head, batch) tile it computes (or, with
// kWalksBlocks, to the first of the blocks it walks; or, persistent, to the tiles it loops over).
// `block` is the query block of a forward tile, the key block of a backward tile.
#pragma once

#include "common/portable.h"

namespace ioattn {

struct TileCoord {
  int block;
  int head;
  int batch;
};

// One tile per CTA, grid.x = num_blocks * num_heads * batch (1-D, so batch * heads may exceed
// the 65535 limit of grid.y/z; common/host/launch.cpp sizes the grid). The block varies fastest
// so that CTAs running together share the same K/V (forward) or Q/dO (backward) in L2. With
// kHeaviestFirst (the causal/local forward, where later query blocks visit more keys), blocks
// run in descending order so the long tiles start first and the short ones fill the tail.
template <bool kHeaviestFirst>
struct SingleTileScheduler {
  static constexpr bool kWalksBlocks = false;

  __device__ static TileCoord tile(int num_blocks, int num_heads) {
    const int64_t idx = blockIdx.x;
    const int m = int(idx % num_blocks);
    const int64_t bh = idx / num_blocks;
    TileCoord c;
    c.block = kHeaviestFirst ? num_blocks - 1 - m : m;
    c.head = int(bh % num_heads);
    c.batch = int(bh / num_heads);
    return c;
  }
};

// The deterministic backward's scheduler: grid.x = slots * num_heads * batch, the slot
// fastest; CTA (slot, head, batch) walks blocks slot, slot + slots, slot + 2 slots, ... of
// its (head, batch) in ascending order, so everything it adds to memory lands in a fixed
// order (see BwdParams::dq_splits).
struct StridedTileScheduler {
  static constexpr bool kWalksBlocks = true;

  __device__ static TileCoord tile(int slots, int num_heads) {
    return SingleTileScheduler<false>::tile(slots, num_heads);
  }
};

// Persistent: grid.x = min(tiles, SMs) CTAs; CTA i computes tiles i, i + grid, i + 2 grid, ...
// Tiles are numbered as in SingleTileScheduler (block fastest: CTAs running together share a
// head's K/V in L2), except with kHeaviestFirst (causal / local, where the last query blocks
// visit the most keys): longest-processing-time-first, the block slowest and descending, so
// the long tiles start first and the short ones fill the tail. Heavy-first over all heads at
// once would have a wave of CTAs take one block of each of `grid` heads, every CTA reading a
// different head's K/V, so the (head, batch) pairs are cut into sections and the order is LPT
// within each section. A section holds as many heads as either
//   - give a wave up to kBlocksPerHead neighbouring blocks of each head: they walk the same
//     keys a few blocks apart, so each K/V block is read from DRAM about once per wave; or
//   - have K and V fit in kL2Budget together (short sequences: many small heads),
// whichever is more: the larger the section, the closer the order is to plain LPT. (Measured
// on an H100 at seqlens 512-16k; alternating the direction of waves was slower.)
template <bool kHeaviestFirst>
struct PersistentTileScheduler {
  static constexpr int kBlocksPerHead = 8;
  static constexpr int64_t kL2Budget = 32 << 20;
  int num_blocks;
  int heads_batch;  // (head, batch) pairs, head fastest
  int num_heads;
  int num_tiles;
  int section;  // (head, batch) pairs per section (kHeaviestFirst)

  // kv_bytes_per_head: K and V bytes of one query head (its share of a K/V head).
  __device__ PersistentTileScheduler(int num_blocks_, int num_heads_, int batch,
                                     int64_t kv_bytes_per_head)
      : num_blocks(num_blocks_),
        heads_batch(num_heads_ * batch),
        num_heads(num_heads_),
        num_tiles(num_blocks_ * num_heads_ * batch) {
    const int per_head = num_blocks < kBlocksPerHead ? num_blocks : kBlocksPerHead;
    const int64_t by_wave = int64_t(gridDim.x) / per_head;
    const int64_t by_l2 = kL2Budget / (kv_bytes_per_head > 0 ? kv_bytes_per_head : 1);
    const int64_t fit = by_wave > by_l2 ? by_wave : by_l2;
    section = int(fit < 1 ? 1 : fit > heads_batch ? heads_batch : fit);
  }

  __device__ int first() const { return blockIdx.x; }
  __device__ int next(int t) const { return t + gridDim.x; }
  __device__ bool valid(int t) const { return t < num_tiles; }

  __device__ TileCoord tile(int t) const {
    TileCoord c;
    int bh;
    if constexpr (kHeaviestFirst) {
      const int per_section = section * num_blocks;  // tiles of a full section
      const int first_bh = t / per_section * section;
      const int heads_here = min(section, heads_batch - first_bh);  // the last may be short
      const int r = t % per_section;
      c.block = num_blocks - 1 - r / heads_here;
      bh = first_bh + r % heads_here;
    } else {
      c.block = t % num_blocks;
      bh = t / num_blocks;
    }
    c.head = bh % num_heads;
    c.batch = bh / num_heads;
    return c;
  }
};

}  // namespace ioattn
