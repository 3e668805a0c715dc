// The SM80 forward kernel of one kernel-table variant. Each device source that
// cmake/gen_kernels.py generates includes this header and defines one extern "C" __global__
// entry point around FwdKernelFor<...>::run; the host finds the entry by that name in the
// library's embedded fat binary (common/host/launch_fwd.cpp), so host code never instantiates
// these templates and the device code can come from nvcc or NVRTC alike.
#pragma once

#include "common/mask.cuh"
#include "common/params.h"
#include "common/portable.h"
#include "common/scheduler.cuh"
#include "common/score_mod.cuh"
#include "sm80/epilogue_fwd.cuh"
#include "sm80/kernel_fwd.cuh"
#include "sm80/mainloop_fwd.cuh"
#include "sm80/tile_config.h"

namespace ioattn::sm80 {

template <class Element, int kHeadDim, bool kWindow, bool kSoftcap>
struct FwdKernelFor {
  using ScoreMod = conditional_t<kSoftcap, TanhSoftcap, NoSoftcap>;
  using Mainloop = MainloopFwd<Element, kHeadDim, Mask<kWindow>, ScoreMod>;
  using type = FwdKernel<Mainloop, EpilogueFwd<Mainloop>, SingleTileScheduler<kWindow>>;

  // The host launches from tile_config.h alone (block size, grid; the mainloop checks the
  // shared-memory size against fwd_smem_bytes), so the kernel must agree with it exactly.
  static constexpr FwdTileConfig kConfig = fwd_tile_config(kHeadDim, kWindow);
  static_assert(type::kNThreads == kConfig.num_warps * 32, "host and kernel disagree: threads");
  static_assert(type::kBlockM == kConfig.block_m, "host and kernel disagree: block_m");
};

}  // namespace ioattn::sm80
