// Tile schedulers: map a CTA to the (block, head, batch) tile it computes (or, with
// kWalksBlocks, to the first of the blocks it walks). `block` is the query block of a forward
// tile, the key block of a backward tile.
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

}  // namespace ioattn
