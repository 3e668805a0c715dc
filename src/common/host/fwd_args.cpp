#include "common/host/fwd_args.h"

#include <cuda_runtime_api.h>

#include <climits>
#include <cmath>
#include <string>

#include "common/host/error.h"

namespace ioattn {
namespace {

bool aligned16(const void *p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

std::string str(int64_t v) { return std::to_string(v); }

int32_t check_strides(const char *name, int64_t batch_stride, int64_t row_stride,
                      int64_t head_stride, bool varlen) {
  const bool ok = (varlen || batch_stride % 8 == 0) && row_stride % 8 == 0 && head_stride % 8 == 0;
  if (!ok) {
    return fail(IOATTN_ERR_INVALID, std::string(name) + ": batch/row/head strides must be " +
                                        "multiples of 8 elements (16-byte aligned rows), got (" +
                                        str(batch_stride) + ", " + str(row_stride) + ", " +
                                        str(head_stride) + ")");
  }
  return IOATTN_OK;
}

// Smallest compiled head dim that can run `head_dim` for this variant.
const FwdKernelEntry *find_kernel(int32_t dtype, int64_t head_dim, bool window, bool softcap) {
  const FwdKernelEntry *best = nullptr;
  for (int i = 0; i < kNumFwdKernels; ++i) {
    const FwdKernelEntry &e = kFwdKernels[i];
    if (e.dtype != dtype || e.window != window || e.softcap != softcap || e.head_dim < head_dim) {
      continue;
    }
    if (best == nullptr || e.head_dim < best->head_dim) best = &e;
  }
  return best;
}

int32_t check_device(int device, const FwdKernelEntry &kernel) {
  int major = 0, minor = 0, smem_optin = 0;
  cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  }
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so the caller's next CUDA call is unaffected
    return fail(IOATTN_ERR_CUDA,
                "cannot query CUDA device " + str(device) + ": " + cudaGetErrorString(err));
  }
  if (major * 10 + minor < kMinComputeCapability) {
    return fail(IOATTN_ERR_UNSUPPORTED,
                std::string("libioattn_") + kLibraryName + " needs compute capability >= " +
                    str(kMinComputeCapability / 10) + "." + str(kMinComputeCapability % 10) +
                    ", device " + str(device) + " has " + str(major) + "." + str(minor));
  }
  if (kernel.smem_bytes > smem_optin) {
    return fail(IOATTN_ERR_UNSUPPORTED, "head_dim " + str(kernel.head_dim) + " needs " +
                                            str(kernel.smem_bytes) +
                                            " bytes of shared memory per block, device " +
                                            str(device) + " allows " + str(smem_optin));
  }
  return IOATTN_OK;
}

}  // namespace

int32_t plan_fwd(const ioattn_fwd_args *a, FwdPlan *plan) {
  clear_error();
  if (a == nullptr) return fail(IOATTN_ERR_INVALID, "args is NULL");
  if (a->struct_size != int64_t(sizeof(ioattn_fwd_args))) {
    return fail(IOATTN_ERR_ABI, "ioattn_fwd_args.struct_size is " + str(a->struct_size) +
                                    ", this library expects " + str(sizeof(ioattn_fwd_args)));
  }
  if (a->dtype != IOATTN_DTYPE_FP16 && a->dtype != IOATTN_DTYPE_BF16) {
    return fail(IOATTN_ERR_INVALID, "dtype must be IOATTN_DTYPE_FP16 or IOATTN_DTYPE_BF16");
  }
  const bool varlen = a->cu_seqlens_q != nullptr;
  if (varlen != (a->cu_seqlens_k != nullptr)) {
    return fail(IOATTN_ERR_INVALID, "cu_seqlens_q and cu_seqlens_k must both be set or both NULL");
  }
  if (a->batch < 0 || a->seqlen_q < 0 || a->seqlen_k < 0) {
    return fail(IOATTN_ERR_INVALID, "batch, seqlen_q and seqlen_k must be >= 0");
  }
  if (a->batch > INT_MAX || a->seqlen_q > INT_MAX || a->seqlen_k > INT_MAX) {
    return fail(IOATTN_ERR_UNSUPPORTED, "batch and sequence lengths must be < 2^31");
  }
  if (a->num_heads < 1 || a->num_heads_k < 1 || a->num_heads > INT_MAX ||
      a->num_heads % a->num_heads_k != 0) {
    return fail(IOATTN_ERR_INVALID, "num_heads (" + str(a->num_heads) +
                                        ") must be a positive multiple of num_heads_k (" +
                                        str(a->num_heads_k) + ")");
  }
  if (a->head_dim < 1) return fail(IOATTN_ERR_INVALID, "head_dim must be >= 1");
  if (a->head_dim % 8 != 0) {
    return fail(IOATTN_ERR_UNSUPPORTED,
                "head_dim " + str(a->head_dim) + " is not a multiple of 8 (pad it to one)");
  }
  if (a->window_left < -1 || a->window_right < -1) {
    return fail(IOATTN_ERR_INVALID, "window_left and window_right must be >= -1");
  }
  if (!std::isfinite(a->softmax_scale) || !(a->softmax_scale > 0.f)) {
    return fail(IOATTN_ERR_INVALID, "softmax_scale must be finite and > 0");
  }
  if (!std::isfinite(a->softcap) || a->softcap < 0.f) {
    return fail(IOATTN_ERR_INVALID, "softcap must be finite and >= 0");
  }
  if (a->device < 0) return fail(IOATTN_ERR_INVALID, "device must be >= 0");

  const bool window = a->window_left >= 0 || a->window_right >= 0;
  const bool softcap = a->softcap > 0.f;
  const FwdKernelEntry *kernel = find_kernel(a->dtype, a->head_dim, window, softcap);
  if (kernel == nullptr) {
    return fail(IOATTN_ERR_UNSUPPORTED,
                std::string("libioattn_") + kLibraryName + " has no forward kernel for " +
                    (a->dtype == IOATTN_DTYPE_BF16 ? "bf16" : "fp16") + ", head_dim " +
                    str(a->head_dim) + (window ? ", window mask" : "") +
                    (softcap ? ", softcap" : "") + " (see ioattn_build_info for what was built)");
  }
  if (int32_t s = check_device(a->device, *kernel); s != IOATTN_OK) return s;

  FwdParams &p = plan->params;
  p = FwdParams{};
  plan->kernel = nullptr;
  const int64_t rows_q = varlen ? a->seqlen_q : a->batch * a->seqlen_q;
  if (a->batch == 0 || a->seqlen_q == 0 || rows_q == 0) return IOATTN_OK;  // nothing to do

  if (!a->q || !a->k || !a->v || !a->out || !a->lse) {
    return fail(IOATTN_ERR_INVALID, "q, k, v, out and lse must be non-NULL");
  }
  if (!aligned16(a->q) || !aligned16(a->k) || !aligned16(a->v) || !aligned16(a->out)) {
    return fail(IOATTN_ERR_INVALID, "q, k, v and out must be 16-byte aligned");
  }
  for (int32_t s :
       {check_strides("q", a->q_batch_stride, a->q_row_stride, a->q_head_stride, varlen),
        check_strides("k", a->k_batch_stride, a->k_row_stride, a->k_head_stride, varlen),
        check_strides("v", a->v_batch_stride, a->v_row_stride, a->v_head_stride, varlen),
        check_strides("out", a->out_batch_stride, a->out_row_stride, a->out_head_stride, varlen)}) {
    if (s != IOATTN_OK) return s;
  }
  const int64_t block_m = 64;  // the smallest tile height of any kernel bounds the grid
  const int64_t tiles = (a->seqlen_q + block_m - 1) / block_m * a->num_heads * a->batch;
  if (tiles > INT_MAX) {
    return fail(IOATTN_ERR_UNSUPPORTED, "batch * num_heads * seqlen_q is too large for one grid");
  }

  p.q = a->q;
  p.k = a->k;
  p.v = a->v;
  p.out = a->out;
  p.lse = a->lse;
  p.cu_seqlens_q = a->cu_seqlens_q;
  p.cu_seqlens_k = a->cu_seqlens_k;
  p.q_batch_stride = a->q_batch_stride;
  p.q_row_stride = a->q_row_stride;
  p.q_head_stride = a->q_head_stride;
  p.k_batch_stride = a->k_batch_stride;
  p.k_row_stride = a->k_row_stride;
  p.k_head_stride = a->k_head_stride;
  p.v_batch_stride = a->v_batch_stride;
  p.v_row_stride = a->v_row_stride;
  p.v_head_stride = a->v_head_stride;
  p.o_batch_stride = a->out_batch_stride;
  p.o_row_stride = a->out_row_stride;
  p.o_head_stride = a->out_head_stride;
  p.lse_batch_stride = a->lse_batch_stride;
  p.lse_head_stride = a->lse_head_stride;
  p.batch = int(a->batch);
  p.seqlen_q = int(a->seqlen_q);
  p.seqlen_k = int(a->seqlen_k);
  p.num_heads = int(a->num_heads);
  p.num_heads_k = int(a->num_heads_k);
  p.group_size = int(a->num_heads / a->num_heads_k);
  p.head_dim = int(a->head_dim);
  p.window_left = a->window_left;
  p.window_right = a->window_right;
  constexpr float kLog2e = 1.4426950408889634f;
  if (softcap) {
    p.softcap_pre = a->softmax_scale / a->softcap;
    p.score_scale = a->softcap;
  } else {
    p.softcap_pre = 0.f;
    p.score_scale = a->softmax_scale;
  }
  p.score_scale_log2 = p.score_scale * kLog2e;
  plan->kernel = kernel;
  return IOATTN_OK;
}

}  // namespace ioattn
