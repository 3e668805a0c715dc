// Per-sequence lengths and row offsets, dense or varlen. Read once per tile.
#pragma once

#include "common/params.h"
#include "common/portable.h"

namespace ioattn {

struct SeqlenInfo {
  int seqlen_q;
  int seqlen_k;
  int64_t q_row_offset;  // rows of q/out/lse before this sequence (varlen), else 0
  int64_t k_row_offset;  // rows of k/v before this sequence (varlen), else 0
  bool varlen;

  __device__ SeqlenInfo(const FwdParams &p, int batch) {
    varlen = p.cu_seqlens_q != nullptr;
    if (varlen) {
      const int q_begin = p.cu_seqlens_q[batch];
      const int k_begin = p.cu_seqlens_k[batch];
      seqlen_q = p.cu_seqlens_q[batch + 1] - q_begin;
      seqlen_k = p.cu_seqlens_k[batch + 1] - k_begin;
      q_row_offset = q_begin;
      k_row_offset = k_begin;
    } else {
      seqlen_q = p.seqlen_q;
      seqlen_k = p.seqlen_k;
      q_row_offset = 0;
      k_row_offset = 0;
    }
  }

  // Element offset of (row 0, head) of this sequence in a (batch, seqlen, heads, dim) tensor,
  // or in a (total, heads, dim) tensor for varlen. 64-bit throughout.
  __device__ int64_t q_like_offset(int batch, int head, int64_t batch_stride, int64_t row_stride,
                                   int64_t head_stride) const {
    const int64_t base = varlen ? q_row_offset * row_stride : int64_t(batch) * batch_stride;
    return base + int64_t(head) * head_stride;
  }
  __device__ int64_t k_like_offset(int batch, int head, int64_t batch_stride, int64_t row_stride,
                                   int64_t head_stride) const {
    const int64_t base = varlen ? k_row_offset * row_stride : int64_t(batch) * batch_stride;
    return base + int64_t(head) * head_stride;
  }
  // Offset of this sequence's first entry for `head` in a per-row fp32 array laid out like
  // lse: (batch, heads, seqlen_q), or (heads, total_q) for varlen.
  __device__ int64_t row_stat_offset(int batch, int head, int64_t batch_stride,
                                     int64_t head_stride) const {
    const int64_t base = varlen ? q_row_offset : int64_t(batch) * batch_stride;
    return base + int64_t(head) * head_stride;
  }
  __device__ int64_t lse_offset(const FwdParams &p, int batch, int head) const {
    return row_stat_offset(batch, head, p.lse_batch_stride, p.lse_head_stride);
  }
};

}  // namespace ioattn
