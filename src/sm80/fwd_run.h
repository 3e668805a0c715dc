// Declaration of the per-variant forward launchers; the definitions are instantiated by the
// generated files, and the generated kernel table takes their addresses.
#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"

namespace ioattn::sm80 {

template <int kDtype, int kHeadDim, bool kWindow, bool kSoftcap>
cudaError_t run_fwd(const FwdParams &p, cudaStream_t stream);

}  // namespace ioattn::sm80
