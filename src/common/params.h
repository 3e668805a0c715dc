// Kernel-side parameters of the forward and backward passes: ioattn_fwd_args /
// ioattn_bwd_args after validation, with the derived constants the kernels need. Shared by the
// SM80 and SM90 libraries.
#pragma once

#include "common/portable.h"

namespace ioattn {

struct FwdParams {
  const void *q;
  const void *k;
  const void *v;
  void *out;
  float *lse;
  const int32_t *cu_seqlens_q;  // nullptr unless varlen
  const int32_t *cu_seqlens_k;

  // Strides in elements. For varlen, batch strides are unused (rows are offset by cu_seqlens).
  int64_t q_batch_stride, q_row_stride, q_head_stride;
  int64_t k_batch_stride, k_row_stride, k_head_stride;
  int64_t v_batch_stride, v_row_stride, v_head_stride;
  int64_t o_batch_stride, o_row_stride, o_head_stride;
  int64_t lse_batch_stride, lse_head_stride;

  int batch;
  int seqlen_q;  // dense: the sequence length; varlen: the maximum over the batch
  int seqlen_k;
  int64_t total_q;  // rows of q (varlen: the total; dense: batch * seqlen_q)
  int64_t total_k;  // rows of k and v
  int num_heads;
  int num_heads_k;
  int group_size;  // num_heads / num_heads_k (query heads sharing one K/V head)
  int head_dim;    // actual head dim (a multiple of 8, <= the kernel's compiled kHeadDim)

  // Window bounds, -1 = unbounded. Causal is (-1, 0). int64 so that i + (sk - sq) + w never
  // overflows.
  int64_t window_left;
  int64_t window_right;

  // score = qk * softmax_scale, or softcap * tanh(qk * softcap_pre) with
  // softcap_pre = softmax_scale / softcap. The softmax then runs in base 2 on the (capped) score
  // s: p = exp2(s * score_scale_log2 - max), so score_scale is softmax_scale, or softcap.
  float softcap_pre;
  float score_scale;       // natural-log units: lse = max * score_scale + log(sum)
  float score_scale_log2;  // score_scale * log2(e)
};

// The backward pass reads everything the forward did (q, k, v, out, lse, masks, score mod)
// plus dout, and writes dq, dk, dv. Two fp32 workspaces that the caller allocates:
//   dq_accum (slices, query-block tiles, num_heads, tile): dQ summed over key blocks (atomics),
//            then summed over slices, scaled and converted into dq by the postprocess kernel.
//            One slice, or dq_splits of them in deterministic mode (see below). A tile holds
//            one query block of one head in the order of the kernel's mma fragments (the
//            library's layout; sm80/dq_accum.cuh).
//   dsum     rowsum(dout * out), laid out like lse but packed: (batch, num_heads, seqlen_q), or
//            (num_heads, total_q) for varlen.
struct BwdParams : FwdParams {
  const void *dout;
  void *dq;
  void *dk;
  void *dv;
  float *dq_accum;
  float *dsum;

  int64_t do_batch_stride, do_row_stride, do_head_stride;
  int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
  int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
  int64_t dv_batch_stride, dv_row_stride, dv_head_stride;
  // Strides of dq_accum (elements: query-block tiles, heads) and of dsum (batch, head).
  int64_t acc_tile_stride, acc_head_stride;
  int64_t dsum_batch_stride, dsum_head_stride;

  // Deterministic mode (dq_splits > 0): grid.x = dq_splits * num_heads_k * batch, and CTA
  // (slot, head, batch) walks key blocks slot, slot + dq_splits, ... in order, adding its dQ
  // into its own slice slot of dq_accum (slices acc_split_stride elements apart). Each slice
  // then has a single writer thread per element, whose adds land in program order, and the
  // postprocess sums the slices in slice order: bitwise reproducible. With dq_splits = 0 every
  // key block is its own CTA and all of them add into slice 0 with atomics in any order.
  int dq_splits;
  int64_t acc_split_stride;

  int64_t rows_q;    // batch * seqlen_q, or total_q for varlen
  float grad_scale;  // softmax_scale: d(score)/d(q.k) outside the softcap derivative
};

}  // namespace ioattn
