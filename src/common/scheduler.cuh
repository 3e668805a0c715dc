// Tile schedulers: map a CTA to the (block, head, batch) tile it computes (or, with
// kWalksBlocks, to the first of the blocks it walks; or, persistent, to the tiles it loops over).
// `block` is the query block of a forward tile, the key block of a backward tile.
#pragma once

#include "common/persistent_schedule.h"
#include "common/portable.h"

namespace ioattn {

struct TileCoord {
  int block;
  int head;
  int batch;
  bool reversed = false;  // walk the tile's key blocks last to first (mirrored pairs)
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

// Persistent: grid.x = min(units, CTAs that fit the device) (make_persistent_schedule, whose
// constants the kernel takes as a parameter); CTA i computes units i, i + grid, i + 2 grid, ...
//
// Without kPaired a unit is one tile, numbered as in SingleTileScheduler (block fastest: the
// CTAs running together share a head's K/V in L2).
//
// With kPaired (causal / local masks, where query block b visits about b + 1 key blocks) a unit
// is the pair of query blocks (num_blocks - 1 - j, j) of one (head, batch), the heavier first.
// Every pair costs about the same, so the static round robin stays balanced; and units are
// (head, batch)-major, so the CTAs running together cover only a few heads, whose K/V stay in
// L2. With an odd num_blocks the middle blocks are left over: they come last, one unit each
// (interleaved with the pairs, an even grid would hand them all to the same CTAs). A launch can
// also ask a paired kernel for single tiles only (PersistentSchedule::first_single,
// by_singles): where a (head, batch) has a few tiles of about the same cost (GQA-packed ones),
// pairs would leave CTAs idle. The
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
// With tail_split (sm90::fwd_tail_split) and at least two pairs per CTA, the round robin stops
// one or two rounds early (two from 32 query blocks on) and the rest runs as single tiles in a
// tail: the pairs left and every middle block, heaviest query block first (TailOrder), dealt
// in a snake (even rounds to CTAs 0, 1, ..., odd ones to CTAs G-1, G-2, ...), so that each CTA
// pairs heavier tiles with lighter ones again and the last round holds only the lightest. Pairs
// all cost the same, so with U pairs on G CTAs the round robin ends after ceil(U / G) rounds of
// work for U / G on average: 3-5.5% of the SMs' time idle in the benchmark's causal cells
// (e.g. hd64 causal 8k: 10.67 rounds of units run in 11). ncu at hd64 causal 8k (30 heads):
// the SMs were active 95.7% of the kernel's time, FA3's (dynamic scheduler) 98.8%, at the
// same instruction count. With the tail hd64 causal 4k-16k went from 0.94-0.96x FA3 to
// 0.98-1.02x (same runs).
//
// Mirrored pairs (where the launch asks for them: sm90::fwd_mirrored_pairs): a unit is query
// block j of (head, batch) 2 g, then block num_blocks - 1 - j of 2 g + 1, whose key blocks the
// kernel walks last to first (kernels that can, sm90::fwd_mirrors_pairs; the others walk it first
// to last). The num_blocks consecutive units of g run together
// on as many CTAs, which start together and walk up from key block 0, so they read each K/V
// block of 2 g at about the same time; under a causal mask every CTA's two tiles together walk
// the same number of key blocks, so the tiles of 2 g + 1 end together, and walking down they
// read its blocks together too (the last at the end). Pairs of one (head, batch) read a block up to
// half a pair's time apart, and where K/V blocks are large and sequences short the re-reads missed
// L2: ncu at hd256 causal 512 (lighter tile of the pair first, which mirrored pairs replace there)
// measured 219 MB of DRAM reads for 201 MB of Q, K and V, with DRAM at 74% of its peak, so every
// extra byte cost time.
template <bool kPaired>
struct PersistentTileScheduler {
  const PersistentSchedule &s;  // the launch's constants (make_persistent_schedule)

  __device__ explicit PersistentTileScheduler(const PersistentSchedule &schedule) : s(schedule) {}

  // A tile index t below 2 * bulk_units is a unit (unpaired) or 2 * unit + the half of the
  // pair (paired); from 2 * bulk_units on it is 2 * bulk_units + the tail position.
  __device__ int first() const {
    if (!kPaired) return blockIdx.x;
    return s.bulk_units > 0 ? 2 * blockIdx.x : 2 * s.bulk_units + blockIdx.x;
  }
  __device__ int next(int t) const {
    if (!kPaired) return t + s.grid;
    if (t < 2 * s.bulk_units) {
      if (t % 2 == 0) return t + 1;
      const int unit = t / 2 + s.grid;
      return unit < s.bulk_units ? 2 * unit : 2 * s.bulk_units + int(blockIdx.x);
    }
    // Snake: even rounds of the tail run left to right over the CTAs, odd ones right to left.
    const int round = s.by_grid.div(t - 2 * s.bulk_units) + 1;
    const int slot = round % 2 == 0 ? int(blockIdx.x) : s.grid - 1 - int(blockIdx.x);
    return 2 * s.bulk_units + round * s.grid + slot;
  }
  __device__ bool valid(int t) const {
    if (!kPaired) return t < s.num_units;
    return t < 2 * s.bulk_units || t - 2 * s.bulk_units < s.tail_tiles;
  }

  // A single tile's unit (a middle block, or any tile of a launch that does not pair) has one
  // tile: its second half gets block = num_blocks, which holds no query row (the kernel skips it
  // like a varlen tile past the end of its sequence).
  __device__ TileCoord tile(int t) const {
    TileCoord c;
    int bh;
    if constexpr (kPaired) {
      if (t >= 2 * s.bulk_units) {
        bh = s.tail.tile(t - 2 * s.bulk_units, c.block);
      } else {
        const int unit = t / 2;
        if (unit < s.num_pairs) {
          // Pairs and mirrored pairs (s.mirrored = 1) in one branch-free form: the heavier tile
          // is the first of a pair and the second of a mirrored pair, whose halves come from
          // (head, batch) pairs 2 g and 2 g + 1.
          int j;
          const int half = t % 2;
          bh = (1 + s.mirrored) * s.by_blocks.divmod(unit, j) + (half & s.mirrored);
          c.block = half == s.mirrored ? s.num_blocks - 1 - j : j;
          c.reversed = half & s.mirrored;
          if (bh == s.heads_batch) {  // the missing half of an odd count's last mirrored pair
            --bh;
            c.block = s.num_blocks;
          }
        } else {
          int r;
          bh = s.by_singles.divmod(unit - s.num_pairs, r);
          c.block = t % 2 == 0 ? s.first_single + r : s.num_blocks;
        }
      }
    } else {
      bh = s.by_blocks.divmod(t, c.block);
    }
    c.batch = s.by_heads.divmod(bh, c.head);
    return c;
  }
};

}  // namespace ioattn
