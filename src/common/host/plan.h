// Validation of the ABI argument structs and their translation into kernel params plus the
// kernel-table entries that run them.
#pragma once

#include <cstdint>

#include "common/host/kernel_table.h"
#include "common/params.h"
#include "ioattn/api.h"

namespace ioattn {

struct FwdPlan {
  FwdParams params;
  const KernelEntry *kernel;  // nullptr when there is nothing to compute
};

struct BwdPlan {
  BwdParams params;
  const KernelEntry *kernel;  // nullptr when there is nothing to compute
  const HelperKernelEntry *pre;
  const HelperKernelEntry *post;
  int64_t workspace_bytes;  // what the arguments need (also when kernel is nullptr)
};

// The library's own layout requirements on top of the ABI's (every library defines it with
// its launch_fwd): e.g. what TMA descriptors can map. IOATTN_OK or IOATTN_ERR_UNSUPPORTED.
int32_t check_fwd_layout(const FwdParams &params);

// Whether a call that a long-sequence variant (KernelEntry::long_q, chosen by min_seqlen_q)
// runs is better run by the default tiles of the same kernel, which pad fewer query rows for
// it (every library defines it with its launch_fwd).
bool fwd_prefers_default_tiles(const KernelEntry &long_variant, const FwdParams &params);

// IOATTN_OK and a filled plan, or an error status with the reason recorded (see error.h).
// Checks the struct only, plus the device's compute capability and shared-memory limit.
int32_t plan_fwd(const ioattn_fwd_args *args, FwdPlan *plan);

// As plan_fwd. With check_workspace false the workspace fields are not looked at (for
// ioattn_bwd_workspace_size).
int32_t plan_bwd(const ioattn_bwd_args *args, bool check_workspace, BwdPlan *plan);

}  // namespace ioattn
