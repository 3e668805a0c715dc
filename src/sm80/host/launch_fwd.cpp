// libioattn_sm80's forward launch: one CTA per (query block, head, batch) tile.
#include "common/host/launch.h"
#include "common/host/launch_kernel.h"
#include "common/host/plan.h"
#include "ioattn/api.h"

namespace ioattn {

// cp.async reads any layout the ABI allows.
int32_t check_fwd_layout(const FwdParams &) { return IOATTN_OK; }

// No long-sequence variants.
bool fwd_prefers_default_tiles(const KernelEntry &, const FwdParams &) { return false; }

cudaError_t launch_fwd(const KernelEntry &kernel, const FwdParams &params, cudaStream_t stream) {
  // grid.x = m-blocks * heads * batch: SingleTileScheduler's layout (common/scheduler.cuh).
  // For varlen, seqlen_q is the maximum over the batch.
  const int64_t grid = ceil_div(params.seqlen_q, kernel.block) * params.num_heads * params.batch;
  return launch_kernel(kernel.kernel, kernel.image, kernel.symbol, grid, kernel.num_threads,
                       kernel.smem_bytes, params, stream);
}

}  // namespace ioattn
