#include "common/host/plan.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <string>

#include "common/host/error.h"

namespace ioattn {
namespace {

bool aligned16(const void *p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

std::string str(int64_t v) { return std::to_string(v); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

// The device's compute capability (checked against the library's) and shared memory per block
// (opt-in maximum; IOATTN_MAX_SMEM_PER_BLOCK, where set, lowers it, so that the tiles of
// smaller GPUs can be tested on a larger one).
int32_t device_smem(int device, int *smem_optin) {
  int major = 0, minor = 0;
  cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  }
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
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
  if (const char *limit = std::getenv("IOATTN_MAX_SMEM_PER_BLOCK"); limit && *limit) {
    *smem_optin = std::min<int64_t>(*smem_optin, std::atoll(limit));
  }
  return IOATTN_OK;
}

// The checks ioattn_fwd_args and ioattn_bwd_args share (same field names), up to the choice
// of the smallest compiled head dim that runs the call, from `table`; smem_optin: the device's
// shared memory per block (device_smem), for a later choice among the table's kernels.
template <class Args>
int32_t check_common(const Args *a, const char *struct_name, const char *op,
                     const KernelEntry *table, int table_size, const KernelEntry **kernel,
                     int *smem_optin) {
  if (a == nullptr) return fail(IOATTN_ERR_INVALID, "args is NULL");
  if (a->struct_size != int64_t(sizeof(Args))) {
    return fail(IOATTN_ERR_ABI, std::string(struct_name) + ".struct_size is " +
                                    str(a->struct_size) + ", this library expects " +
                                    str(sizeof(Args)));
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
  auto runs_call = [&](const KernelEntry &e) {
    return e.dtype == a->dtype && e.window == window && e.softcap == softcap &&
           e.head_dim >= a->head_dim && e.min_seqlen_q <= a->seqlen_q;
  };
  if (std::none_of(table, table + table_size, runs_call)) {
    return fail(IOATTN_ERR_UNSUPPORTED,
                std::string("libioattn_") + kLibraryName + " has no " + op + " kernel for " +
                    (a->dtype == IOATTN_DTYPE_BF16 ? "bf16" : "fp16") + ", head_dim " +
                    str(a->head_dim) + (window ? ", window mask" : "") +
                    (softcap ? ", softcap" : "") + " (see ioattn_build_info for what was built)");
  }
  if (int32_t s = device_smem(int(a->device), smem_optin); s != IOATTN_OK) return s;

  // Prefers, among the kernels that run the call and fit the device: the smallest head dim,
  // then the variant for the longest seqlen_q, then the default tiles over the small-shared-
  // memory ones.
  auto better = [](const KernelEntry &e, const KernelEntry *than) {
    if (than == nullptr || e.head_dim != than->head_dim) {
      return than == nullptr || e.head_dim < than->head_dim;
    }
    if (e.min_seqlen_q != than->min_seqlen_q) return e.min_seqlen_q > than->min_seqlen_q;
    return !e.small_smem && than->small_smem;
  };
  const KernelEntry *best = nullptr;
  const KernelEntry *least = nullptr;  // the one that runs the call with the least shared memory
  for (int i = 0; i < table_size; ++i) {
    const KernelEntry &e = table[i];
    if (!runs_call(e)) continue;
    if (least == nullptr || e.smem_bytes < least->smem_bytes) least = &e;
    if (e.smem_bytes <= *smem_optin && better(e, best)) best = &e;
  }
  if (best == nullptr) {
    return fail(IOATTN_ERR_UNSUPPORTED, "head_dim " + str(a->head_dim) + " needs " +
                                            str(least->smem_bytes) +
                                            " bytes of shared memory per block, device " +
                                            str(a->device) + " allows " + str(*smem_optin));
  }
  *kernel = best;
  return IOATTN_OK;
}

// Pointers, strides, shapes and score constants that both passes read.
template <class Args>
void fill_common(const Args *a, FwdParams &p) {
  p.q = a->q;
  p.k = a->k;
  p.v = a->v;
  p.out = const_cast<void *>(static_cast<const void *>(a->out));  // read-only in the backward
  p.lse = const_cast<float *>(a->lse);
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
  // A left edge >= seqlen_k, or a right one >= seqlen_q, excludes no key (as -1, unbounded;
  // bottom-right aligned, and the lengths are maxima for varlen): capped there, the edges fit
  // the kernels' 32-bit mask arithmetic (the Python layer already turns them into -1).
  const int64_t widest = a->seqlen_q > a->seqlen_k ? a->seqlen_q : a->seqlen_k;
  p.window_left = a->window_left < widest ? a->window_left : widest;
  p.window_right = a->window_right < widest ? a->window_right : widest;
  if (a->softcap > 0.f) {
    p.softcap_pre = a->softmax_scale / a->softcap;
    p.score_scale = a->softcap;
  } else {
    p.softcap_pre = 0.f;
    p.score_scale = a->softmax_scale;
  }
  p.score_scale_log2 = p.score_scale * kLog2e;
}

template <class Args>
int32_t check_qkv_layout(const Args *a, bool varlen) {
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
  return IOATTN_OK;
}

int32_t grid_too_large(const char *what) {
  return fail(IOATTN_ERR_UNSUPPORTED, std::string(what) + " is too large for one grid");
}

}  // namespace

int32_t plan_fwd(const ioattn_fwd_args *a, FwdPlan *plan) {
  clear_error();
  plan->kernel = nullptr;
  const KernelEntry *kernel = nullptr;
  int smem_optin = 0;
  if (int32_t s = check_common(a, "ioattn_fwd_args", "forward", kFwdKernels, kNumFwdKernels,
                               &kernel, &smem_optin);
      s != IOATTN_OK) {
    return s;
  }
  FwdParams &p = plan->params;
  p = FwdParams{};
  const bool varlen = a->cu_seqlens_q != nullptr;
  const int64_t rows_q = varlen ? a->seqlen_q : a->batch * a->seqlen_q;
  if (a->batch == 0 || a->seqlen_q == 0 || rows_q == 0) return IOATTN_OK;  // nothing to do

  if (int32_t s = check_qkv_layout(a, varlen); s != IOATTN_OK) return s;
  if (varlen ? (a->total_q < 0 || a->total_k < 0 || a->total_q > INT_MAX || a->total_k > INT_MAX)
             : (a->total_q != a->batch * a->seqlen_q || a->total_k != a->batch * a->seqlen_k)) {
    return fail(IOATTN_ERR_INVALID,
                "total_q / total_k must be the row counts of q and k (< 2^31 "
                "for varlen; batch * seqlen otherwise)");
  }
  const int64_t block_m = 64;  // the smallest tile height of any kernel bounds the grid
  if (ceil_div(a->seqlen_q, block_m) * a->num_heads * a->batch > INT_MAX) {
    return grid_too_large("batch * num_heads * seqlen_q");
  }
  fill_common(a, p);
  p.total_q = a->total_q;
  p.total_k = a->total_k;
  if (int32_t s = check_fwd_layout(p); s != IOATTN_OK) return s;
  if (kernel->long_q && fwd_prefers_default_tiles(*kernel, p)) {
    for (int i = 0; i < kNumFwdKernels; ++i) {
      const KernelEntry &e = kFwdKernels[i];
      if (e.dtype == kernel->dtype && e.head_dim == kernel->head_dim &&
          e.window == kernel->window && e.softcap == kernel->softcap && !e.long_q &&
          !e.small_smem && e.smem_bytes <= smem_optin) {
        kernel = &e;
        break;
      }
    }
  }
  plan->kernel = kernel;
  return IOATTN_OK;
}

int32_t plan_bwd(const ioattn_bwd_args *a, bool check_workspace, BwdPlan *plan) {
  clear_error();
  plan->kernel = nullptr;
  plan->workspace_bytes = 0;
  const KernelEntry *kernel = nullptr;
  int smem_optin = 0;
  // The fields beyond the common ones are read only from a struct of this layout (else
  // check_common reports the NULL or the size mismatch).
  const bool layout_ok = a != nullptr && a->struct_size == int64_t(sizeof(*a));
  if (layout_ok) {
    if (a->reserved != 0) return fail(IOATTN_ERR_INVALID, "reserved must be 0");
    if (a->deterministic != 0 && a->deterministic != 1) {
      return fail(IOATTN_ERR_INVALID, "deterministic must be 0 or 1");
    }
  }
  // deterministic = 1 runs the kernel whose scheduler walks key blocks in order (BwdParams).
  const bool deterministic = layout_ok && a->deterministic == 1;
  if (int32_t s =
          check_common(a, "ioattn_bwd_args", deterministic ? "deterministic backward" : "backward",
                       deterministic ? kBwdDetKernels : kBwdKernels,
                       deterministic ? kNumBwdDetKernels : kNumBwdKernels, &kernel, &smem_optin);
      s != IOATTN_OK) {
    return s;
  }
  const bool varlen = a->cu_seqlens_q != nullptr;
  if (varlen && a->total_q < 0) return fail(IOATTN_ERR_INVALID, "total_q must be >= 0");
  const HelperKernelEntry *pre = nullptr;
  const HelperKernelEntry *post = nullptr;
  for (int i = 0; i < kNumBwdPreKernels; ++i) {
    if (kBwdPreKernels[i].dtype == a->dtype) pre = &kBwdPreKernels[i];
  }
  for (int i = 0; i < kNumBwdPostKernels; ++i) {  // it reads the kernel's dq_accum layout
    const HelperKernelEntry &h = kBwdPostKernels[i];
    if (h.dtype == a->dtype && h.head_dim == kernel->head_dim &&
        h.small_smem == kernel->small_smem) {
      post = &h;
    }
  }
  if (pre == nullptr || post == nullptr) {
    return fail(IOATTN_ERR_UNSUPPORTED,
                "the backward helper kernels for this dtype and tile config are missing");
  }

  // Deterministic mode: each of dq_splits CTAs per (K/V head, batch) owns a dq_accum slice
  // (see BwdParams). As many slices as fill the GPU with one wave of CTAs (one CTA per SM:
  // the backward kernels use every register), never more than there are key blocks.
  int dq_splits = 0;
  if (deterministic) {
    int num_sms = 0;
    if (cudaError_t err =
            cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, int(a->device));
        err != cudaSuccess) {
      cudaGetLastError();  // not sticky: clear it
      return fail(IOATTN_ERR_CUDA,
                  std::string("cannot query CUDA device: ") + cudaGetErrorString(err));
    }
    const int64_t key_blocks = std::max<int64_t>(1, ceil_div(a->seqlen_k, kernel->block));
    const int64_t ctas_per_split = std::max<int64_t>(1, a->batch * a->num_heads_k);
    dq_splits = int(std::clamp<int64_t>(num_sms / ctas_per_split, 1, key_blocks));
  }

  // Workspace: dq_accum max(1, dq_splits) slices of (query-block tiles, num_heads, tile) fp32,
  // a tile being block_q x the kernel's head dim (sm80/dq_accum.cuh: a dense sequence has
  // ceil(seqlen_q / block_q) tiles, varlen sequences floor(total_q / block_q) + batch in all),
  // each slice 256-byte aligned, then dsum (rows_q * num_heads).
  const int64_t rows_q = varlen ? a->total_q : a->batch * a->seqlen_q;
  const int64_t tiles = varlen ? a->total_q / kernel->block_q + a->batch
                               : a->batch * ceil_div(a->seqlen_q, kernel->block_q);
  const int64_t tile_elems = int64_t(kernel->block_q) * kernel->head_dim;
  const int64_t slice_bytes = (tiles * a->num_heads * tile_elems * 4 + 255) / 256 * 256;
  const int64_t acc_bytes = std::max(1, dq_splits) * slice_bytes;
  plan->workspace_bytes = acc_bytes + rows_q * a->num_heads * 4;

  BwdParams &p = plan->params;
  p = BwdParams{};
  if (a->batch == 0 || (rows_q == 0 && a->seqlen_k == 0)) return IOATTN_OK;  // nothing to do

  if (int32_t s = check_qkv_layout(a, varlen); s != IOATTN_OK) return s;
  if (!a->dout || !a->dq || !a->dk || !a->dv) {
    return fail(IOATTN_ERR_INVALID, "dout, dq, dk and dv must be non-NULL");
  }
  if (!aligned16(a->dout) || !aligned16(a->dq) || !aligned16(a->dk) || !aligned16(a->dv)) {
    return fail(IOATTN_ERR_INVALID, "dout, dq, dk and dv must be 16-byte aligned");
  }
  for (int32_t s :
       {check_strides("dout", a->dout_batch_stride, a->dout_row_stride, a->dout_head_stride,
                      varlen),
        check_strides("dq", a->dq_batch_stride, a->dq_row_stride, a->dq_head_stride, varlen),
        check_strides("dk", a->dk_batch_stride, a->dk_row_stride, a->dk_head_stride, varlen),
        check_strides("dv", a->dv_batch_stride, a->dv_row_stride, a->dv_head_stride, varlen)}) {
    if (s != IOATTN_OK) return s;
  }
  if (check_workspace) {
    if (a->workspace_bytes < plan->workspace_bytes) {
      return fail(IOATTN_ERR_INVALID, "workspace_bytes is " + str(a->workspace_bytes) +
                                          ", these arguments need " + str(plan->workspace_bytes) +
                                          " (ioattn_bwd_workspace_size)");
    }
    if (plan->workspace_bytes > 0 && (!a->workspace || !aligned16(a->workspace))) {
      return fail(IOATTN_ERR_INVALID, "workspace must be non-NULL and 16-byte aligned");
    }
  }
  if (ceil_div(a->seqlen_k, kernel->block) * a->num_heads_k * a->batch > INT_MAX ||
      ceil_div(a->seqlen_q, kernel->block_q) * a->num_heads * a->batch > INT_MAX ||
      ceil_div(rows_q, pre->num_threads / 8) * a->num_heads > INT_MAX) {
    return grid_too_large("batch * num_heads * seqlen");
  }

  fill_common(a, p);
  p.dout = a->dout;
  p.dq = a->dq;
  p.dk = a->dk;
  p.dv = a->dv;
  p.dq_accum = static_cast<float *>(a->workspace);
  p.dsum = reinterpret_cast<float *>(static_cast<char *>(a->workspace) + acc_bytes);
  p.do_batch_stride = a->dout_batch_stride;
  p.do_row_stride = a->dout_row_stride;
  p.do_head_stride = a->dout_head_stride;
  p.dq_batch_stride = a->dq_batch_stride;
  p.dq_row_stride = a->dq_row_stride;
  p.dq_head_stride = a->dq_head_stride;
  p.dk_batch_stride = a->dk_batch_stride;
  p.dk_row_stride = a->dk_row_stride;
  p.dk_head_stride = a->dk_head_stride;
  p.dv_batch_stride = a->dv_batch_stride;
  p.dv_row_stride = a->dv_row_stride;
  p.dv_head_stride = a->dv_head_stride;
  p.acc_head_stride = tile_elems;
  p.acc_tile_stride = a->num_heads * tile_elems;
  p.dsum_head_stride = varlen ? rows_q : a->seqlen_q;
  p.dsum_batch_stride = varlen ? 0 : a->num_heads * a->seqlen_q;
  p.dq_splits = dq_splits;
  p.acc_split_stride = slice_bytes / 4;
  p.rows_q = rows_q;
  p.grad_scale = a->softmax_scale;
  plan->kernel = kernel;
  plan->pre = pre;
  plan->post = post;
  return IOATTN_OK;
}

}  // namespace ioattn
