// The launch constants of PersistentTileScheduler (common/scheduler.cuh): how many CTAs, which
// units they walk, the tail's order, and the divisors the kernel splits a tile index with. The
// host computes them once per launch (they go to the kernel as parameters, so the kernel reads
// them from the constant bank instead of keeping them in registers or recomputing them per
// tile); the device part maps a tail position to its tile.
#pragma once

#include "common/fast_div.h"
#include "common/portable.h"

namespace ioattn {

// Units of work: one per query tile, or, paired, one per pair of query tiles of a (head,
// batch) (an odd num_blocks leaves a middle block, one unit of its own). The host launches
// min(units, CTAs that fit) CTAs.
IOATTN_HOST_DEVICE constexpr int64_t persistent_units(int64_t num_blocks, int64_t heads_batch,
                                                      bool paired) {
  return (paired ? (num_blocks + 1) / 2 : num_blocks) * heads_batch;
}

// Units of a mirrored schedule (PersistentTileScheduler): one per query block of every pair of
// (head, batch), the last pair perhaps a half.
IOATTN_HOST_DEVICE constexpr int64_t mirrored_units(int64_t num_blocks, int64_t heads_batch) {
  return (heads_batch + 1) / 2 * num_blocks;
}

// The tail of a paired persistent schedule: the tiles of the pairs from unit `first` on and the
// middle blocks of every (head, batch), heaviest (highest query block) first, same-block tiles in
// ascending (head, batch). Position k maps to its tile in O(1): the block runs down from
// num_blocks - 1 in groups of equal block, whose sizes change at four points (where the
// partially covered (head, batch) `bh0`, whose pairs start at j0, joins or leaves, and at the
// middle block).
struct TailOrder {
  int num_blocks = 0, pairs_per_bh = 0, bh0 = 0, j0 = 0;
  int with_bh0 = 0;     // tiles per block where bh0 has one: (head, batch) pairs bh0 .. end
  int without_bh0 = 0;  // where it has none: bh0 + 1 .. end
  int mids = 0;         // middle-block tiles (all (head, batch) pairs; 0 for an even num_blocks)
  int end1 = 0, end2 = 0, end3 = 0, end4 = 0;  // ends of the position ranges of the groups
  FastDiv by_with, by_without;                 // by with_bh0, without_bh0 (1 where that is 0)

  TailOrder() = default;
  // num_blocks >= 2, first < the pairs of all (head, batch).
  IOATTN_HOST_DEVICE TailOrder(int num_blocks_, int heads_batch, int first)
      : num_blocks(num_blocks_),
        pairs_per_bh(num_blocks_ / 2),
        bh0(first / (num_blocks_ / 2)),
        j0(first % (num_blocks_ / 2)),
        with_bh0(heads_batch - bh0),
        without_bh0(heads_batch - bh0 - 1),
        mids(num_blocks_ % 2 ? heads_batch : 0),
        by_with(with_bh0),
        by_without(without_bh0 > 0 ? without_bh0 : 1) {
    end1 = j0 * without_bh0;                       // heavy blocks of pairs j < j0
    end2 = end1 + (pairs_per_bh - j0) * with_bh0;  // heavy blocks of pairs j >= j0
    end3 = end2 + mids;                            // middle blocks
    end4 = end3 + (pairs_per_bh - j0) * with_bh0;  // light blocks of pairs j >= j0
  }
  IOATTN_HOST_DEVICE int size() const { return end4 + j0 * without_bh0; }

#ifdef __CUDACC__
  // The tile at position k: its query block, and its (head, batch) returned.
  __device__ __forceinline__ int tile(int k, int &block) const {
    int r;
    if (k < end1) {
      block = num_blocks - 1 - by_without.divmod(k, r);
      return bh0 + 1 + r;
    }
    if (k < end2) {
      block = num_blocks - 1 - j0 - by_with.divmod(k - end1, r);
      return bh0 + r;
    }
    if (k < end3) {
      block = pairs_per_bh;
      return k - end2;
    }
    if (k < end4) {
      block = pairs_per_bh - 1 - by_with.divmod(k - end3, r);
      return bh0 + r;
    }
    block = j0 - 1 - by_without.divmod(k - end4, r);
    return bh0 + 1 + r;
  }
#endif
};

// See PersistentTileScheduler for what the fields mean.
struct PersistentSchedule {
  int grid = 0;        // CTAs
  int num_blocks = 0;  // query blocks per (head, batch)
  int num_pairs = 0;   // paired: full pairs of all (head, batch) pairs; the single tiles follow
  int num_units = 0;
  int bulk_units = 0;    // paired: units of the round robin (num_units without a tail)
  int tail_tiles = 0;    // paired: single tiles after them, in TailOrder
  int mirrored = 0;      // paired: mirrored pairs (no tail)
  int heads_batch = 0;   // (head, batch) pairs
  int first_single = 0;  // paired: the query block of a (head, batch)'s first single tile
  FastDiv by_heads;      // (head, batch) index -> batch, head
  FastDiv by_blocks;     // unit (paired) or tile -> (head, batch), and pair or block;
                         // mirrored: unit -> pair of (head, batch), and block
  FastDiv by_singles;    // paired: single unit -> (head, batch), and block from first_single
  FastDiv by_grid;       // tail position -> round
  TailOrder tail;
};

#ifndef __CUDACC_RTC__  // host code; NVRTC compiles device code only
// heads: of the schedule (GQA-packed: head groups); paired_kernel: the kernel's scheduler pairs
// tiles (PersistentTileScheduler<true>); pair: the launch wants pairs, else a paired kernel's
// units are all single tiles (every query block of a (head, batch), in order); max_ctas: what
// the device holds at once.
// mirrored: mirror the pairs (see PersistentTileScheduler), which then end without a tail.
inline PersistentSchedule make_persistent_schedule(int num_blocks, int heads, int batch,
                                                   bool paired_kernel, bool pair, bool mirror,
                                                   bool tail_split, int64_t max_ctas) {
  PersistentSchedule s;
  const bool paired = paired_kernel && pair;
  const bool mirrored = paired && mirror;
  const int64_t heads_batch = int64_t(heads) * batch;
  const int64_t units = mirrored ? mirrored_units(num_blocks, heads_batch)
                                 : persistent_units(num_blocks, heads_batch, paired);
  s.grid = int(units < max_ctas ? units : max_ctas);
  s.num_blocks = num_blocks;
  const int pairs_per_bh = paired ? num_blocks / 2 : 0;
  s.num_pairs = mirrored ? int(units) : pairs_per_bh * heads * batch;
  s.num_units = int(units);
  s.bulk_units = s.num_units;
  s.mirrored = mirrored;
  s.heads_batch = int(heads_batch);
  s.first_single = paired ? num_blocks / 2 : 0;  // the middle block of an odd num_blocks
  s.by_heads = FastDiv(heads > 0 ? heads : 1);
  const int blocks_divisor = !paired_kernel || mirrored ? num_blocks : pairs_per_bh;
  s.by_blocks = FastDiv(blocks_divisor > 0 ? blocks_divisor : 1);
  s.by_singles = FastDiv(paired || num_blocks < 1 ? 1 : num_blocks);
  s.by_grid = FastDiv(s.grid > 0 ? s.grid : 1);
  if (paired && !mirrored && tail_split && s.num_pairs >= 2 * s.grid) {
    // One more round of pairs in the tail where tiles are long (see TailOrder).
    const int rounds = s.num_pairs / s.grid - (num_blocks >= 32 ? 2 : 1);
    s.bulk_units = rounds * s.grid;
    s.tail = TailOrder(num_blocks, heads * batch, s.bulk_units);
    s.tail_tiles = s.tail.size();
  }
  return s;
}
#endif

}  // namespace ioattn
