// Tile schedulers: map a CTA to the (block, head, batch) tile it computes (or, with
// kWalksBlocks, to the first of the blocks it walks; or, persistent, to the tiles it loops over).
// `block` is the query block of a forward tile, the key block of a backward tile.
#pragma once

#include "common/persistent_units.h"
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

// Persistent: grid.x = min(units, SMs) CTAs (persistent_units); CTA i computes units i,
// i + grid, i + 2 grid, ...
//
// Without kPaired a unit is one tile, numbered as in SingleTileScheduler (block fastest: the
// CTAs running together share a head's K/V in L2).
//
// With kPaired (causal / local masks, where query block b visits about b + 1 key blocks) a unit
// is the pair of query blocks (num_blocks - 1 - j, j) of one (head, batch), the heavier first.
// Every pair costs about the same, so the static round robin stays balanced; and units are
// (head, batch)-major, so the CTAs running together cover only a few heads, whose K/V stay in
// L2. With an odd num_blocks the middle blocks are left over: they come last, one unit each
// (interleaved with the pairs, an even grid would hand them all to the same CTAs). The
// longest-processing-time-first order this replaces (round robin over tiles sorted by cost)
// left the CTAs with the heaviest tile of every wave up to 12% more work than the mean at
// hd256, and its waves spread over many heads: ncu measured a 57% L2 hit rate at hd256 causal
// 2k (FA3: 75%). Pairs were 6-40% faster on an H100 at hd128/256 causal, 1k-16k.
//
// Nor did a dynamic scheduler pay (FA3's: single tiles claimed from an atomic counter,
// heaviest first within sections of a few heads). It evened out the CTAs' end times (ncu: SM
// active 97% of elapsed vs 95% for pairs at hd128 causal 2k), but per-tile traces showed the
// median tile 7-11% slower for the same number of key blocks (L2 hit rates at 2k at most 2
// points below the pairs'): 0-10% came with the order alone (handed out statically), the rest with
// the handoff, which also made the producer spill around its TMA issues (24 registers). Net 1-17%
// slower at hd64/128 causal, 1k-16k.
//
// light_first runs the lighter tile of each pair first. Its key blocks are the first ones of the
// heavier tile's, which then finds them still in L2; the other way round the light tile re-reads
// blocks the heavy one read at its start, which by then can have left L2 where K/V blocks are
// large and sequences short (ncu, hd256 causal 512: DRAM reads 269 MB heavy first, 227 MB light
// first, for 201 MB of Q, K and V). The kernels choose it per launch (sm90::fwd_light_first).
template <bool kPaired>
struct PersistentTileScheduler {
  int num_blocks;
  int num_heads;
  int pairs_per_bh;  // full pairs of one (head, batch)
  int num_pairs;     // full pairs of all (head, batch) pairs; the middle blocks follow
  int num_units;
  bool light_first;  // paired: the lighter tile of a pair first (see the comment above)

  __device__ PersistentTileScheduler(int num_blocks_, int num_heads_, int batch,
                                     bool light_first_ = false)
      : num_blocks(num_blocks_),
        num_heads(num_heads_),
        pairs_per_bh(num_blocks_ / 2),
        num_pairs(num_blocks_ / 2 * num_heads_ * batch),
        num_units(int(persistent_units(num_blocks_, int64_t(num_heads_) * batch, kPaired))),
        light_first(light_first_) {}

  // A tile index t is the unit (unpaired) or 2 * unit + the half of the pair (paired).
  __device__ int first() const { return kPaired ? 2 * blockIdx.x : blockIdx.x; }
  __device__ int next(int t) const {
    if constexpr (kPaired) return t % 2 == 0 ? t + 1 : t - 1 + 2 * gridDim.x;
    return t + gridDim.x;
  }
  __device__ bool valid(int t) const { return (kPaired ? t / 2 : t) < num_units; }

  // A middle block's unit has one tile: its second half gets block = num_blocks, which holds
  // no query row (the kernel skips it like a varlen tile past the end of its sequence).
  __device__ TileCoord tile(int t) const {
    TileCoord c;
    int bh;
    if constexpr (kPaired) {
      const int unit = t / 2;
      if (unit < num_pairs) {
        const int j = unit % pairs_per_bh;
        c.block = (t % 2 == 0) != light_first ? num_blocks - 1 - j : j;
        bh = unit / pairs_per_bh;
      } else {
        c.block = t % 2 == 0 ? num_blocks / 2 : num_blocks;
        bh = unit - num_pairs;
      }
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
