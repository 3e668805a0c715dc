#include "common/host/launch_fwd.h"

#include <climits>
#include <cstdint>

namespace ioattn {

cudaError_t launch_fwd(const FwdKernelEntry &kernel, const FwdParams &params, cudaStream_t stream) {
  // One CTA per tile, grid.x = m-blocks * heads * batch: SingleTileScheduler's layout
  // (common/scheduler.cuh). For varlen, seqlen_q is the maximum over the batch.
  const int64_t m_blocks = (int64_t(params.seqlen_q) + kernel.block_m - 1) / kernel.block_m;
  const int64_t grid = m_blocks * params.num_heads * params.batch;
  if (grid == 0) return cudaSuccess;
  if (grid > INT_MAX) return cudaErrorInvalidConfiguration;  // the host checks catch this first

  cudaKernel_t handle = nullptr;
  cudaError_t err = kernel.kernel->get(kernel.image, kernel.symbol, &handle);
  if (err != cudaSuccess) return err;
  // The runtime takes a cudaKernel_t wherever it takes a __global__ function's address.
  const void *func = reinterpret_cast<const void *>(handle);
  if (kernel.smem_bytes > 48 * 1024) {
    // Opt in to more than 48 KB of dynamic shared memory (per device; cheap to repeat).
    err =
        cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, kernel.smem_bytes);
    if (err != cudaSuccess) return err;
  }
  FwdParams args = params;
  void *arg_ptrs[] = {&args};
  return cudaLaunchKernel(func, dim3(static_cast<unsigned>(grid)), dim3(kernel.num_threads),
                          arg_ptrs, static_cast<size_t>(kernel.smem_bytes), stream);
}

}  // namespace ioattn
