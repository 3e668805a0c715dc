// Launching kernel-table entries on a stream (the caller has made the right device current).
// Nothing here allocates or synchronizes.
#pragma once

#include <cuda_runtime_api.h>

#include "common/host/kernel_table.h"
#include "common/params.h"

namespace ioattn {

// The forward over every (query block, head, batch) tile of `params`. Each library defines
// its own (src/<library>/host/launch_fwd.cpp), with check_fwd_layout (plan.h).
cudaError_t launch_fwd(const KernelEntry &kernel, const FwdParams &params, cudaStream_t stream);

// The backward's kernels in order: dq_accum = 0, preprocess (dsum), the main kernel over
// every (key block, K/V head, batch) tile, postprocess (dq).
cudaError_t launch_bwd(const KernelEntry &kernel, const HelperKernelEntry &pre,
                       const HelperKernelEntry &post, const BwdParams &params, cudaStream_t stream);

}  // namespace ioattn
