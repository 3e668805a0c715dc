// The exported C ABI (src/include/ioattn/api.h), shared by every kernel library; each library
// links its own generated kernel table.
#include "ioattn/api.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "common/host/error.h"
#include "common/host/kernel_table.h"
#include "common/host/launch.h"
#include "common/host/plan.h"

namespace {

#define IOATTN_FIELD(S, f) \
  ioattn_field { #f, int64_t(offsetof(S, f)), int64_t(sizeof(static_cast<S *>(nullptr)->f)) }

const ioattn_field kFwdArgsFields[] = {
    IOATTN_FIELD(ioattn_fwd_args, struct_size),
    IOATTN_FIELD(ioattn_fwd_args, q),
    IOATTN_FIELD(ioattn_fwd_args, k),
    IOATTN_FIELD(ioattn_fwd_args, v),
    IOATTN_FIELD(ioattn_fwd_args, out),
    IOATTN_FIELD(ioattn_fwd_args, lse),
    IOATTN_FIELD(ioattn_fwd_args, cu_seqlens_q),
    IOATTN_FIELD(ioattn_fwd_args, cu_seqlens_k),
    IOATTN_FIELD(ioattn_fwd_args, q_batch_stride),
    IOATTN_FIELD(ioattn_fwd_args, q_row_stride),
    IOATTN_FIELD(ioattn_fwd_args, q_head_stride),
    IOATTN_FIELD(ioattn_fwd_args, k_batch_stride),
    IOATTN_FIELD(ioattn_fwd_args, k_row_stride),
    IOATTN_FIELD(ioattn_fwd_args, k_head_stride),
    IOATTN_FIELD(ioattn_fwd_args, v_batch_stride),
    IOATTN_FIELD(ioattn_fwd_args, v_row_stride),
    IOATTN_FIELD(ioattn_fwd_args, v_head_stride),
    IOATTN_FIELD(ioattn_fwd_args, out_batch_stride),
    IOATTN_FIELD(ioattn_fwd_args, out_row_stride),
    IOATTN_FIELD(ioattn_fwd_args, out_head_stride),
    IOATTN_FIELD(ioattn_fwd_args, lse_batch_stride),
    IOATTN_FIELD(ioattn_fwd_args, lse_head_stride),
    IOATTN_FIELD(ioattn_fwd_args, batch),
    IOATTN_FIELD(ioattn_fwd_args, seqlen_q),
    IOATTN_FIELD(ioattn_fwd_args, seqlen_k),
    IOATTN_FIELD(ioattn_fwd_args, total_q),
    IOATTN_FIELD(ioattn_fwd_args, total_k),
    IOATTN_FIELD(ioattn_fwd_args, num_heads),
    IOATTN_FIELD(ioattn_fwd_args, num_heads_k),
    IOATTN_FIELD(ioattn_fwd_args, head_dim),
    IOATTN_FIELD(ioattn_fwd_args, window_left),
    IOATTN_FIELD(ioattn_fwd_args, window_right),
    IOATTN_FIELD(ioattn_fwd_args, softmax_scale),
    IOATTN_FIELD(ioattn_fwd_args, softcap),
    IOATTN_FIELD(ioattn_fwd_args, dtype),
    IOATTN_FIELD(ioattn_fwd_args, device),
    IOATTN_FIELD(ioattn_fwd_args, stream),
};
static_assert(offsetof(ioattn_fwd_args, stream) + sizeof(void *) == sizeof(ioattn_fwd_args),
              "kFwdArgsFields must end with the last field of ioattn_fwd_args");

const ioattn_field kBwdArgsFields[] = {
    IOATTN_FIELD(ioattn_bwd_args, struct_size),
    IOATTN_FIELD(ioattn_bwd_args, q),
    IOATTN_FIELD(ioattn_bwd_args, k),
    IOATTN_FIELD(ioattn_bwd_args, v),
    IOATTN_FIELD(ioattn_bwd_args, out),
    IOATTN_FIELD(ioattn_bwd_args, lse),
    IOATTN_FIELD(ioattn_bwd_args, dout),
    IOATTN_FIELD(ioattn_bwd_args, dq),
    IOATTN_FIELD(ioattn_bwd_args, dk),
    IOATTN_FIELD(ioattn_bwd_args, dv),
    IOATTN_FIELD(ioattn_bwd_args, cu_seqlens_q),
    IOATTN_FIELD(ioattn_bwd_args, cu_seqlens_k),
    IOATTN_FIELD(ioattn_bwd_args, workspace),
    IOATTN_FIELD(ioattn_bwd_args, workspace_bytes),
    IOATTN_FIELD(ioattn_bwd_args, q_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, q_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, q_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, k_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, k_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, k_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, v_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, v_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, v_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, out_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, out_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, out_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, dout_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, dout_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, dout_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, dq_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, dq_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, dq_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, dk_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, dk_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, dk_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, dv_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, dv_row_stride),
    IOATTN_FIELD(ioattn_bwd_args, dv_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, lse_batch_stride),
    IOATTN_FIELD(ioattn_bwd_args, lse_head_stride),
    IOATTN_FIELD(ioattn_bwd_args, batch),
    IOATTN_FIELD(ioattn_bwd_args, seqlen_q),
    IOATTN_FIELD(ioattn_bwd_args, seqlen_k),
    IOATTN_FIELD(ioattn_bwd_args, total_q),
    IOATTN_FIELD(ioattn_bwd_args, num_heads),
    IOATTN_FIELD(ioattn_bwd_args, num_heads_k),
    IOATTN_FIELD(ioattn_bwd_args, head_dim),
    IOATTN_FIELD(ioattn_bwd_args, window_left),
    IOATTN_FIELD(ioattn_bwd_args, window_right),
    IOATTN_FIELD(ioattn_bwd_args, softmax_scale),
    IOATTN_FIELD(ioattn_bwd_args, softcap),
    IOATTN_FIELD(ioattn_bwd_args, dtype),
    IOATTN_FIELD(ioattn_bwd_args, device),
    IOATTN_FIELD(ioattn_bwd_args, deterministic),
    IOATTN_FIELD(ioattn_bwd_args, reserved),
    IOATTN_FIELD(ioattn_bwd_args, stream),
};
static_assert(offsetof(ioattn_bwd_args, stream) + sizeof(void *) == sizeof(ioattn_bwd_args),
              "kBwdArgsFields must end with the last field of ioattn_bwd_args");

const ioattn_field kFieldFields[] = {
    IOATTN_FIELD(ioattn_field, name),
    IOATTN_FIELD(ioattn_field, offset),
    IOATTN_FIELD(ioattn_field, size),
};

template <size_t N>
int32_t report(const ioattn_field (&fields)[N], int64_t size, ioattn_field *out, int32_t capacity,
               int64_t *struct_size) {
  for (int32_t i = 0; i < capacity && i < int32_t(N); ++i) out[i] = fields[i];
  if (struct_size != nullptr) *struct_size = size;
  return int32_t(N);
}

// Runs `fn` with args->device current, restoring the caller's device afterwards.
template <class Fn>
int32_t on_device(int device, Fn &&fn) {
  int current = -1;
  cudaError_t err = cudaGetDevice(&current);
  if (err == cudaSuccess && current != device) err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return ioattn::fail(IOATTN_ERR_CUDA, std::string("cannot select CUDA device ") +
                                             std::to_string(device) + ": " +
                                             cudaGetErrorString(err));
  }
  const int32_t status = fn();
  if (current != device) cudaSetDevice(current);
  return status;
}

}  // namespace

extern "C" {

int32_t ioattn_abi_version(void) { return IOATTN_ABI_VERSION; }

int32_t ioattn_struct_layout(const char *name, ioattn_field *fields, int32_t capacity,
                             int64_t *struct_size) {
  if (name == nullptr) return -1;
  if (fields == nullptr) capacity = 0;
  const std::string n(name);
  if (n == "ioattn_fwd_args") {
    return report(kFwdArgsFields, sizeof(ioattn_fwd_args), fields, capacity, struct_size);
  }
  if (n == "ioattn_bwd_args") {
    return report(kBwdArgsFields, sizeof(ioattn_bwd_args), fields, capacity, struct_size);
  }
  if (n == "ioattn_field") {
    return report(kFieldFields, sizeof(ioattn_field), fields, capacity, struct_size);
  }
  return -1;
}

const char *ioattn_build_info(void) { return ioattn::kBuildInfoJson; }

const char *ioattn_status_string(int32_t status) {
  switch (status) {
    case IOATTN_OK:
      return "IOATTN_OK";
    case IOATTN_ERR_UNSUPPORTED:
      return "IOATTN_ERR_UNSUPPORTED";
    case IOATTN_ERR_INVALID:
      return "IOATTN_ERR_INVALID";
    case IOATTN_ERR_CUDA:
      return "IOATTN_ERR_CUDA";
    case IOATTN_ERR_ABI:
      return "IOATTN_ERR_ABI";
    default:
      return "unknown status";
  }
}

const char *ioattn_last_error(void) { return ioattn::last_error(); }

int32_t ioattn_fwd_supported(const ioattn_fwd_args *args) {
  ioattn::FwdPlan plan;
  return ioattn::plan_fwd(args, &plan);
}

int32_t ioattn_fwd(const ioattn_fwd_args *args) {
  ioattn::FwdPlan plan;
  if (int32_t s = ioattn::plan_fwd(args, &plan); s != IOATTN_OK) return s;
  if (plan.kernel == nullptr) return IOATTN_OK;
  return on_device(args->device, [&] {
    const cudaError_t err =
        ioattn::launch_fwd(*plan.kernel, plan.params, static_cast<cudaStream_t>(args->stream));
    if (err != cudaSuccess) {
      return ioattn::fail(IOATTN_ERR_CUDA,
                          std::string("forward kernel launch failed: ") + cudaGetErrorString(err));
    }
    return int32_t(IOATTN_OK);
  });
}

int32_t ioattn_bwd_workspace_size(const ioattn_bwd_args *args, int64_t *bytes) {
  ioattn::BwdPlan plan;
  const int32_t status = ioattn::plan_bwd(args, /*check_workspace=*/false, &plan);
  if (status == IOATTN_OK && bytes != nullptr) *bytes = plan.workspace_bytes;
  return status;
}

int32_t ioattn_bwd_supported(const ioattn_bwd_args *args) {
  ioattn::BwdPlan plan;
  return ioattn::plan_bwd(args, /*check_workspace=*/true, &plan);
}

int32_t ioattn_bwd(const ioattn_bwd_args *args) {
  ioattn::BwdPlan plan;
  if (int32_t s = ioattn::plan_bwd(args, /*check_workspace=*/true, &plan); s != IOATTN_OK) {
    return s;
  }
  if (plan.kernel == nullptr) return IOATTN_OK;
  return on_device(args->device, [&] {
    const cudaError_t err = ioattn::launch_bwd(*plan.kernel, *plan.pre, *plan.post, plan.params,
                                               static_cast<cudaStream_t>(args->stream));
    if (err != cudaSuccess) {
      return ioattn::fail(IOATTN_ERR_CUDA,
                          std::string("backward kernel launch failed: ") + cudaGetErrorString(err));
    }
    return int32_t(IOATTN_OK);
  });
}

}  // extern "C"
