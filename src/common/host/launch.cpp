#include "common/host/launch.h"

#include <cstdint>

#include "common/host/launch_kernel.h"

namespace ioattn {

cudaError_t launch_bwd(const KernelEntry &kernel, const HelperKernelEntry &pre,
                       const HelperKernelEntry &post, const BwdParams &params,
                       cudaStream_t stream) {
  const int64_t rows_heads = params.rows_q * params.num_heads;
  if (rows_heads > 0) {
    // Preprocess: kBwdHelperThreads / 8 rows per CTA, the head fastest. It also zeroes
    // dq_accum (all max(1, dq_splits) slices, see plan_bwd) for the main kernel's atomics.
    const int64_t rows_per_cta = pre.num_threads / 8;
    const cudaError_t err = launch_kernel(pre.kernel, pre.image, pre.symbol,
                                          ceil_div(params.rows_q, rows_per_cta) * params.num_heads,
                                          pre.num_threads, 0, params, stream);
    if (err != cudaSuccess) return err;
  }
  // Main kernel: grid.x = key-block slots * K/V heads * batch (SingleTileScheduler over keys);
  // a slot is one key block, or in deterministic mode a strided run of them (BwdParams).
  const int64_t slots =
      params.dq_splits > 0 ? params.dq_splits : ceil_div(params.seqlen_k, kernel.block);
  cudaError_t err = launch_kernel(kernel.kernel, kernel.image, kernel.symbol,
                                  slots * params.num_heads_k * params.batch, kernel.num_threads,
                                  kernel.smem_bytes, params, stream);
  if (err != cudaSuccess || rows_heads == 0) return err;
  // Postprocess: one CTA per (query block, head, batch).
  return launch_kernel(post.kernel, post.image, post.symbol,
                       ceil_div(params.seqlen_q, kernel.block_q) * params.num_heads * params.batch,
                       post.num_threads, 0, params, stream);
}

}  // namespace ioattn
