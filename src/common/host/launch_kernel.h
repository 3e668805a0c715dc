// One launch of a kernel-table kernel with a params struct as its only argument.
#pragma once

#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>

#include "common/host/device_code.h"

namespace ioattn {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Loads `symbol` from `image` on first use; grid 0 launches nothing.
template <class Params>
cudaError_t launch_kernel(LazyKernel *kernel, const DeviceImage &image, const char *symbol,
                          int64_t grid, int num_threads, int smem_bytes, const Params &params,
                          cudaStream_t stream) {
  if (grid == 0) return cudaSuccess;
  if (grid > INT_MAX) return cudaErrorInvalidConfiguration;  // the host checks catch this first
  cudaKernel_t handle = nullptr;
  cudaError_t err = kernel->get(image, symbol, &handle);
  if (err != cudaSuccess) return err;
  // The runtime takes a cudaKernel_t wherever it takes a __global__ function's address.
  const void *func = reinterpret_cast<const void *>(handle);
  if (smem_bytes > 48 * 1024) {
    // Opt in to more than 48 KB of dynamic shared memory (per device; cheap to repeat).
    err = cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (err != cudaSuccess) return err;
  }
  Params args = params;
  void *arg_ptrs[] = {&args};
  return cudaLaunchKernel(func, dim3(static_cast<unsigned>(grid)), dim3(num_threads), arg_ptrs,
                          static_cast<size_t>(smem_bytes), stream);
}

}  // namespace ioattn
