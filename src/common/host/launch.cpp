#include "common/host/launch.h"

#include <climits>
#include <cstdint>

namespace ioattn {
namespace {

// One launch of `kernel` (loaded on first use) with a params struct as its only argument.
template <class Params>
cudaError_t launch(LazyKernel *kernel, const DeviceImage &image, const char *symbol, int64_t grid,
                   int num_threads, int smem_bytes, const Params &params, cudaStream_t stream) {
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

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

cudaError_t launch_fwd(const KernelEntry &kernel, const FwdParams &params, cudaStream_t stream) {
  // One CTA per tile, grid.x = m-blocks * heads * batch: SingleTileScheduler's layout
  // (common/scheduler.cuh). For varlen, seqlen_q is the maximum over the batch.
  const int64_t grid = ceil_div(params.seqlen_q, kernel.block) * params.num_heads * params.batch;
  return launch(kernel.kernel, kernel.image, kernel.symbol, grid, kernel.num_threads,
                kernel.smem_bytes, params, stream);
}

cudaError_t launch_bwd(const KernelEntry &kernel, const HelperKernelEntry &pre,
                       const HelperKernelEntry &post, const BwdParams &params,
                       cudaStream_t stream) {
  const int64_t rows_heads = params.rows_q * params.num_heads;
  if (rows_heads > 0) {
    // dq_accum: max(1, dq_splits) slices of (rows_q, num_heads, head_dim), see plan_bwd.
    const int64_t slices = params.dq_splits > 0 ? params.dq_splits : 1;
    cudaError_t err = cudaMemsetAsync(
        params.dq_accum, 0, size_t(slices * params.acc_split_stride) * sizeof(float), stream);
    if (err != cudaSuccess) return err;
    // Preprocess: kBwdHelperThreads / 8 rows per CTA, the head fastest.
    const int64_t rows_per_cta = pre.num_threads / 8;
    err = launch(pre.kernel, pre.image, pre.symbol,
                 ceil_div(params.rows_q, rows_per_cta) * params.num_heads, pre.num_threads, 0,
                 params, stream);
    if (err != cudaSuccess) return err;
  }
  // Main kernel: grid.x = key-block slots * K/V heads * batch (SingleTileScheduler over keys);
  // a slot is one key block, or in deterministic mode a strided run of them (BwdParams).
  const int64_t slots =
      params.dq_splits > 0 ? params.dq_splits : ceil_div(params.seqlen_k, kernel.block);
  cudaError_t err =
      launch(kernel.kernel, kernel.image, kernel.symbol, slots * params.num_heads_k * params.batch,
             kernel.num_threads, kernel.smem_bytes, params, stream);
  if (err != cudaSuccess || rows_heads == 0) return err;
  // Postprocess: one thread per 8 elements of dq.
  return launch(post.kernel, post.image, post.symbol,
                ceil_div(rows_heads * (params.head_dim / 8), post.num_threads), post.num_threads, 0,
                params, stream);
}

}  // namespace ioattn
