// Validation of ioattn_fwd_args and its translation into FwdParams plus a kernel choice.
#pragma once

#include <cstdint>

#include "common/host/kernel_table.h"
#include "common/params.h"
#include "ioattn/api.h"

namespace ioattn {

struct FwdPlan {
  FwdParams params;
  const FwdKernelEntry *kernel;  // nullptr when there is nothing to compute
};

// IOATTN_OK and a filled plan, or an error status with the reason recorded (see error.h).
// Checks the struct only, plus the device's compute capability and shared-memory limit.
int32_t plan_fwd(const ioattn_fwd_args *args, FwdPlan *plan);

}  // namespace ioattn
