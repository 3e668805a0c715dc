// The SM90 forward kernel of one kernel-table variant (see sm80/fwd_entry.cuh for how the
// generated entry points use it).
#pragma once

#include "common/mask.cuh"
#include "common/portable.h"
#include "common/scheduler.cuh"
#include "common/score_mod.cuh"
#include "sm90/epilogue_fwd.cuh"
#include "sm90/kernel_fwd.cuh"
#include "sm90/mainloop_fwd.cuh"
#include "sm90/tile_config.h"

namespace ioattn::sm90 {

template <class Element, int kHeadDim, bool kWindow, bool kSoftcap, bool kLongQ>
struct FwdKernelFor {
  using ScoreMod = conditional_t<kSoftcap, TanhSoftcap, NoSoftcap>;
  using Mainloop = MainloopFwd<Element, kHeadDim, Mask<kWindow>, ScoreMod, kLongQ>;
  using Scheduler = PersistentTileScheduler<kWindow>;
  using type = FwdKernel<Mainloop, EpilogueFwd<Mainloop>, Scheduler>;

  static constexpr FwdTileConfig kConfig = fwd_tile_config(kHeadDim, kWindow, kLongQ);
  static_assert(type::kNThreads == fwd_num_threads(kHeadDim, kWindow, kLongQ),
                "host and kernel disagree: threads");
  static_assert(type::kBlockM == kConfig.block_m, "host and kernel disagree: block_m");
};

}  // namespace ioattn::sm90
