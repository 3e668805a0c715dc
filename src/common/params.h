// Kernel-side parameters of the forward pass: ioattn_fwd_args after validation, with the
// derived constants the kernels need. Shared by the SM80 and SM90 libraries.
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

}  // namespace ioattn
