// Launching one forward kernel-table entry on a stream.
#pragma once

#include <cuda_runtime_api.h>

#include "common/host/kernel_table.h"
#include "common/params.h"

namespace ioattn {

// Launches `kernel` over every (m-block, head, batch) tile of `params` on `stream` (the caller
// has made the right device current). Never allocates and never synchronizes.
cudaError_t launch_fwd(const FwdKernelEntry &kernel, const FwdParams &params, cudaStream_t stream);

}  // namespace ioattn
