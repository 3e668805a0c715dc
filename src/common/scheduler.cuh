// Tile schedulers: map a CTA to the (m_block, head, batch) tile it computes.
#pragma once

#include "common/portable.h"

namespace ioattn {

struct TileCoord {
  int m_block;
  int head;
  int batch;
};

// One tile per CTA, grid.x = num_m_blocks * num_heads * batch (1-D, so batch * heads may
// exceed the 65535 limit of grid.y/z; common/host/launch_fwd.cpp sizes the grid). The m-block
// varies fastest so that CTAs running together share the same K/V in L2. With kHeaviestFirst
// (causal/local, where later query blocks visit more keys), m-blocks run in descending order so the
// long tiles start first and the short ones fill the tail.
template <bool kHeaviestFirst>
struct SingleTileScheduler {
  __device__ static TileCoord tile(int num_m_blocks, int num_heads) {
    const int64_t idx = blockIdx.x;
    const int m = int(idx % num_m_blocks);
    const int64_t bh = idx / num_m_blocks;
    TileCoord c;
    c.m_block = kHeaviestFirst ? num_m_blocks - 1 - m : m;
    c.head = int(bh % num_heads);
    c.batch = int(bh / num_heads);
    return c;
  }
};

}  // namespace ioattn
