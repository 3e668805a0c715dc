// Units of work of PersistentTileScheduler (common/scheduler.cuh), for the kernels and for the
// host, which launches min(units, SMs) CTAs: one per query tile, or, paired, one per pair of
// query tiles of a (head, batch).
#pragma once

#include "common/portable.h"

namespace ioattn {

IOATTN_HOST_DEVICE constexpr int64_t persistent_units(int64_t num_blocks, int64_t heads_batch,
                                                      bool paired) {
  return (paired ? (num_blocks + 1) / 2 : num_blocks) * heads_batch;
}

}  // namespace ioattn
