// The SM80 backward kernels of one kernel-table variant, and the per-dtype helpers. Like
// fwd_entry.cuh: each generated device source includes this header and defines extern "C"
// __global__ entry points the host finds by name (common/host/launch.cpp).
#pragma once

#include "common/mask.cuh"
#include "common/params.h"
#include "common/portable.h"
#include "common/scheduler.cuh"
#include "common/score_mod.cuh"
#include "sm80/bwd_aux.cuh"
#include "sm80/epilogue_bwd.cuh"
#include "sm80/kernel_bwd.cuh"
#include "sm80/mainloop_bwd.cuh"
#include "sm80/tile_config.h"

namespace ioattn::sm80 {

// kSmallSmem: the tiles for GPUs with less shared memory (tile_config.h). kDeterministic: the
// StridedTileScheduler kernel of deterministic = 1 (see BwdParams).
template <class Element, int kHeadDim, bool kWindow, bool kSoftcap, bool kSmallSmem,
          bool kDeterministic = false>
struct BwdKernelFor {
  using ScoreMod = conditional_t<kSoftcap, TanhSoftcap, NoSoftcap>;
  using Mainloop = MainloopBwd<Element, kHeadDim, Mask<kWindow>, ScoreMod, kSmallSmem>;
  // Key blocks in ascending order: under a causal mask the first ones see the most queries.
  using Scheduler = conditional_t<kDeterministic, StridedTileScheduler, SingleTileScheduler<false>>;
  using type = BwdKernel<Mainloop, EpilogueBwd<Mainloop>, Scheduler>;

  // The host launches from tile_config.h alone, so the kernel must agree with it exactly.
  static constexpr BwdTileConfig kConfig = bwd_tile_config(kHeadDim, kSmallSmem);
  static_assert(type::kNThreads == bwd_num_threads(kHeadDim, kSmallSmem),
                "host and kernel disagree: threads");
  static_assert(type::kBlockN == kConfig.block_n, "host and kernel disagree: block_n");
};

template <class Element, int kHeadDim, bool kWindow, bool kSoftcap, bool kSmallSmem>
using BwdDeterministicKernelFor =
    BwdKernelFor<Element, kHeadDim, kWindow, kSoftcap, kSmallSmem, true>;

}  // namespace ioattn::sm80
