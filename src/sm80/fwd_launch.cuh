// Host launcher of the SM80 forward kernel for one kernel-table entry. Included only by the
// generated instantiation files (one per dtype x head dim x mask x softcap).
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "common/mask.cuh"
#include "common/score_mod.cuh"
#include "ioattn/api.h"
#include "sm80/epilogue_fwd.cuh"
#include "sm80/fwd_run.h"
#include "sm80/kernel_fwd.cuh"
#include "sm80/mainloop_fwd.cuh"

namespace ioattn::sm80 {

template <int kDtype, int kHeadDim, bool kWindow, bool kSoftcap>
cudaError_t run_fwd(const FwdParams &p, cudaStream_t stream) {
  using Element = std::conditional_t<kDtype == IOATTN_DTYPE_BF16, __nv_bfloat16, __half>;
  using ScoreMod = std::conditional_t<kSoftcap, TanhSoftcap, NoSoftcap>;
  using Mainloop = MainloopFwd<Element, kHeadDim, Mask<kWindow>, ScoreMod>;
  using Kernel = FwdKernel<Mainloop, EpilogueFwd<Mainloop>, SingleTileScheduler<kWindow>>;

  const int64_t grid = Kernel::Scheduler::grid_size(Kernel::num_m_blocks(p), p.num_heads, p.batch);
  if (grid == 0) return cudaSuccess;
  if (grid > INT_MAX) return cudaErrorInvalidConfiguration;  // the host checks catch this first

  auto *kernel = &fwd_kernel<Kernel>;
  constexpr int kSmem = Kernel::kSmemBytes;
  if constexpr (kSmem > 48 * 1024) {
    // Opt in to more than 48 KB of dynamic shared memory (per device; cheap to repeat).
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    if (err != cudaSuccess) return err;
  }
  kernel<<<dim3(static_cast<unsigned>(grid)), dim3(Kernel::kNThreads), kSmem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace ioattn::sm80
