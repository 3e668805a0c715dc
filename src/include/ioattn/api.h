/*
 * ioattn C ABI: the only contract between the kernel libraries and Python.
 *
 * Every kernel library (libioattn_sm80.so, libioattn_sm90.so) exports exactly the functions
 * declared here and nothing else. The libraries do not link PyTorch: tensors cross this
 * boundary as raw device pointers plus int64 shapes and strides (in elements).
 *
 * Versioning: every argument struct starts with `struct_size`, which the caller sets to
 * sizeof(struct) as it knows it; the library rejects a size it does not know
 * (IOATTN_ERR_ABI). `ioattn_struct_layout` reports each field's offset and size so a
 * test can prove that the Python binding matches this header byte for byte.
 *
 * Memory: the library never allocates device memory and never synchronizes the host.
 * Every launch goes to `stream` on `device`.
 */
#ifndef IOATTN_API_H_
#define IOATTN_API_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IOATTN_API __attribute__((visibility("default")))

/* Bumped whenever a struct or a function signature changes incompatibly, or functions are
 * added (version 2: the backward pass; version 3: total_q and total_k of the forward). */
#define IOATTN_ABI_VERSION 3

/* Element types of q, k, v and out (lse is always fp32). */
enum ioattn_dtype {
  IOATTN_DTYPE_FP16 = 0,
  IOATTN_DTYPE_BF16 = 1,
};

/* Return codes of every function that returns int32_t status. */
enum ioattn_status {
  IOATTN_OK = 0,
  IOATTN_ERR_UNSUPPORTED = 1, /* valid arguments this library has no kernel for */
  IOATTN_ERR_INVALID = 2,     /* arguments that break the contract below */
  IOATTN_ERR_CUDA = 3,        /* a CUDA runtime call or a launch failed */
  IOATTN_ERR_ABI = 4,         /* struct_size does not match this library's struct */
};

/*
 * Forward attention: out = softmax(mask(score(q k^T))) v, plus the log-sum-exp per row.
 *
 * Dense layout: q (batch, seqlen_q, num_heads, head_dim), k/v (batch, seqlen_k, num_heads_k,
 * head_dim), out like q, lse (batch, num_heads, seqlen_q).
 * Varlen layout (cu_seqlens_q and cu_seqlens_k both set): q (total_q, num_heads, head_dim),
 * k/v (total_k, num_heads_k, head_dim), out like q, lse (num_heads, total_q); sequence b
 * holds rows [cu_seqlens[b], cu_seqlens[b+1]); batch strides are ignored; seqlen_q and
 * seqlen_k are the maxima over the batch (upper bounds used to size the grid). total_q and
 * total_k are the row counts of q and k/v (total rows for varlen, batch * seqlen otherwise):
 * the extents of the tensors, which TMA-based kernels must not read past.
 *
 * Strides are in elements; the last dimension of q, k, v, out is contiguous (stride 1); lse
 * rows are contiguous. Pointers of q, k, v, out and every row/head/batch stride must be
 * 16-byte aligned (strides a multiple of 8 elements).
 *
 * score = q.k * softmax_scale, or softcap * tanh(q.k * softmax_scale / softcap) when
 * softcap > 0. Mask: key j is visible from query i (0-based, within its sequence) iff
 * j < seqlen_k, and with sk - sq = seqlen_k - seqlen_q (bottom-right alignment):
 *   window_left  >= 0: j >= i + (sk - sq) - window_left
 *   window_right >= 0: j <= i + (sk - sq) + window_right
 * (-1 means unbounded; causal is window_left = -1, window_right = 0.)
 * A query row that sees no key gets out = 0 and lse = -inf.
 */
typedef struct ioattn_fwd_args {
  int64_t struct_size;

  const void *q;
  const void *k;
  const void *v;
  void *out;
  float *lse;
  const int32_t *cu_seqlens_q; /* device int32 (batch + 1), or NULL */
  const int32_t *cu_seqlens_k; /* device int32 (batch + 1), or NULL */

  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  int64_t lse_batch_stride, lse_head_stride;

  int64_t batch;
  int64_t seqlen_q;
  int64_t seqlen_k;
  int64_t total_q;
  int64_t total_k;
  int64_t num_heads;
  int64_t num_heads_k;
  int64_t head_dim;
  int64_t window_left;
  int64_t window_right;

  float softmax_scale;
  float softcap;
  int32_t dtype;  /* enum ioattn_dtype */
  int32_t device; /* CUDA device ordinal that owns every pointer */
  void *stream;   /* cudaStream_t to launch on (NULL = legacy default stream) */
} ioattn_fwd_args;

/*
 * Backward attention: dq, dk, dv of the forward above, given its out and lse and the gradient
 * dout of out. Layouts, strides, masks and the score are those of ioattn_fwd_args (dout, dq
 * like q; dk, dv like k); total_q is the number of rows of q for varlen (ignored otherwise).
 *
 * The library never allocates: the caller passes `workspace` (16-byte aligned, contents
 * irrelevant, overwritten) of at least ioattn_bwd_workspace_size() bytes; it holds the fp32
 * dQ accumulator and rowsum(dout * out). dq, dk, dv are fully overwritten (zeros for rows no
 * query / key sees). deterministic = 1 asks for bitwise reproducible results on a given
 * device and arguments; it sums dQ over slices of the workspace instead of with atomics, so
 * the workspace grows (up to one slice per SM) and the call is somewhat slower.
 */
typedef struct ioattn_bwd_args {
  int64_t struct_size;

  const void *q;
  const void *k;
  const void *v;
  const void *out;
  const float *lse;
  const void *dout;
  void *dq;
  void *dk;
  void *dv;
  const int32_t *cu_seqlens_q; /* device int32 (batch + 1), or NULL */
  const int32_t *cu_seqlens_k; /* device int32 (batch + 1), or NULL */
  void *workspace;
  int64_t workspace_bytes;

  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  int64_t dout_batch_stride, dout_row_stride, dout_head_stride;
  int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
  int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
  int64_t dv_batch_stride, dv_row_stride, dv_head_stride;
  int64_t lse_batch_stride, lse_head_stride;

  int64_t batch;
  int64_t seqlen_q;
  int64_t seqlen_k;
  int64_t total_q;
  int64_t num_heads;
  int64_t num_heads_k;
  int64_t head_dim;
  int64_t window_left;
  int64_t window_right;

  float softmax_scale;
  float softcap;
  int32_t dtype;         /* enum ioattn_dtype */
  int32_t device;        /* CUDA device ordinal that owns every pointer */
  int32_t deterministic; /* 0 or 1 */
  int32_t reserved;      /* must be 0 */
  void *stream;          /* cudaStream_t to launch on (NULL = legacy default stream) */
} ioattn_bwd_args;

/* One field of an ABI struct, as reported by ioattn_struct_layout. */
typedef struct ioattn_field {
  const char *name;
  int64_t offset;
  int64_t size;
} ioattn_field;

/* IOATTN_ABI_VERSION of the library. */
IOATTN_API int32_t ioattn_abi_version(void);

/*
 * Layout of the struct called `name` ("ioattn_fwd_args", "ioattn_bwd_args", "ioattn_field"): writes
 * up to `capacity` fields in declaration order into `fields` (which may be NULL when capacity is
 * 0), stores sizeof(struct) in *struct_size, and returns the number of fields, or -1 for an
 * unknown name.
 */
IOATTN_API int32_t ioattn_struct_layout(const char *name, ioattn_field *fields, int32_t capacity,
                                        int64_t *struct_size);

/*
 * A JSON object describing the build: {"library": "sm80", "abi": 1, "cuda": "13.0",
 * "sass": [80, 90], "ptx": [80], "kernels": [{"op": "fwd", "dtype": "bf16", "head_dim": 128,
 * "mask": "window", "softcap": true}, ...]}. Static storage; never freed.
 */
IOATTN_API const char *ioattn_build_info(void);

/* Human-readable name of a status code. */
IOATTN_API const char *ioattn_status_string(int32_t status);

/* Message of the last non-OK status returned on this thread ("" if none). */
IOATTN_API const char *ioattn_last_error(void);

/*
 * IOATTN_OK when ioattn_fwd would run these arguments on `args->device`, else
 * IOATTN_ERR_UNSUPPORTED / IOATTN_ERR_INVALID / IOATTN_ERR_ABI with ioattn_last_error()
 * saying why. Reads only the struct (never the pointed-to memory); never launches.
 */
IOATTN_API int32_t ioattn_fwd_supported(const ioattn_fwd_args *args);

/* Runs the forward pass asynchronously on args->stream. Same checks as ioattn_fwd_supported. */
IOATTN_API int32_t ioattn_fwd(const ioattn_fwd_args *args);

/*
 * Bytes of workspace ioattn_bwd needs for these arguments (the workspace fields are not
 * read), stored in *bytes. Same checks and statuses as ioattn_bwd_supported otherwise.
 */
IOATTN_API int32_t ioattn_bwd_workspace_size(const ioattn_bwd_args *args, int64_t *bytes);

/* As ioattn_fwd_supported, for ioattn_bwd (including the workspace size). */
IOATTN_API int32_t ioattn_bwd_supported(const ioattn_bwd_args *args);

/* Runs the backward pass asynchronously on args->stream. Same checks as ioattn_bwd_supported. */
IOATTN_API int32_t ioattn_bwd(const ioattn_bwd_args *args);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* IOATTN_API_H_ */
