// The backward's memory-bound helpers, one pair per element type (any head dim):
//   BwdPreprocess   dsum = rowsum(dO o O) in fp32, per query row and head;
//   BwdPostprocess  dq = (sum of the dq_accum slices) * softmax_scale, converted to the
//                   element type.
// Both walk the rows of q in the same (batch, row, head) roles: row r of rows_q is
// (b, s) = (r / seqlen_q, r % seqlen_q) for a dense batch and the packed row r for varlen.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/params.h"
#include "common/portable.h"
#include "sm80/ptx.cuh"
#include "sm80/tile_config.h"

namespace ioattn::sm80 {

// Element offset of (row r, head) in a q-like tensor.
__device__ __forceinline__ int64_t q_like_row_offset(const BwdParams &p, int64_t r, int head,
                                                     int64_t batch_stride, int64_t row_stride,
                                                     int64_t head_stride) {
  int64_t base;
  if (p.cu_seqlens_q != nullptr) {
    base = r * row_stride;
  } else {
    const int64_t b = r / p.seqlen_q;
    base = b * batch_stride + (r - b * p.seqlen_q) * row_stride;
  }
  return base + int64_t(head) * head_stride;
}

template <class Element>
__device__ __forceinline__ float2 unpack2(uint32_t x) {
  if constexpr (is_same_v<Element, __half>) {
    return __half22float2(*reinterpret_cast<const __half2 *>(&x));
  } else {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&x));
  }
}

template <class Element>
struct BwdPreprocess {
  static constexpr int kNThreads = kBwdHelperThreads;
  static constexpr int kLanesPerRow = 8;  // one 16-byte chunk each, strided over the row
  static constexpr int kRowsPerCta = kNThreads / kLanesPerRow;

  // grid.x = ceil(rows_q / kRowsPerCta) * num_heads, the head fastest.
  __device__ static void run(const BwdParams &p) {
    const int64_t idx = blockIdx.x;
    const int head = int(idx % p.num_heads);
    const int64_t r = (idx / p.num_heads) * kRowsPerCta + threadIdx.x / kLanesPerRow;
    const int sub = threadIdx.x % kLanesPerRow;
    float sum = 0.f;
    if (r < p.rows_q) {
      const Element *o =
          static_cast<const Element *>(p.out) +
          q_like_row_offset(p, r, head, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
      const Element *dout =
          static_cast<const Element *>(p.dout) +
          q_like_row_offset(p, r, head, p.do_batch_stride, p.do_row_stride, p.do_head_stride);
      for (int c = sub; c < p.head_dim / 8; c += kLanesPerRow) {
        const uint4 a = *reinterpret_cast<const uint4 *>(o + c * 8);
        const uint4 b = *reinterpret_cast<const uint4 *>(dout + c * 8);
        const uint32_t av[4] = {a.x, a.y, a.z, a.w};
        const uint32_t bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 x = unpack2<Element>(av[i]);
          const float2 y = unpack2<Element>(bv[i]);
          sum = fmaf(x.x, y.x, fmaf(x.y, y.y, sum));
        }
      }
    }
    // The kLanesPerRow lanes of a row are adjacent: reduce them with xor-shuffles.
#pragma unroll
    for (int offset = kLanesPerRow / 2; offset > 0; offset /= 2) {
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    }
    if (r < p.rows_q && sub == 0) {
      int64_t at;
      if (p.cu_seqlens_q != nullptr) {
        at = r;
      } else {
        const int64_t b = r / p.seqlen_q;
        at = b * p.dsum_batch_stride + (r - b * p.seqlen_q);
      }
      p.dsum[at + int64_t(head) * p.dsum_head_stride] = sum;
    }
  }
};

template <class Element>
struct BwdPostprocess {
  static constexpr int kNThreads = kBwdHelperThreads;

  // One thread per 8 elements (a 16-byte chunk of dq): grid.x = ceil(rows_q * num_heads *
  // head_dim / 8 / kNThreads), chunks fastest, then heads.
  __device__ static void run(const BwdParams &p) {
    const int chunks = p.head_dim / 8;
    const int64_t idx = int64_t(blockIdx.x) * kNThreads + threadIdx.x;
    const int chunk = int(idx % chunks);
    const int64_t rh = idx / chunks;
    const int head = int(rh % p.num_heads);
    const int64_t r = rh / p.num_heads;
    if (r >= p.rows_q) return;
    const float *acc =
        p.dq_accum +
        q_like_row_offset(p, r, head, p.acc_batch_stride, p.acc_row_stride, p.acc_head_stride) +
        chunk * 8;
    Element *dq =
        static_cast<Element *>(p.dq) +
        q_like_row_offset(p, r, head, p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride) +
        chunk * 8;
    float4 lo = *reinterpret_cast<const float4 *>(acc);
    float4 hi = *reinterpret_cast<const float4 *>(acc + 4);
    // Deterministic mode: the slices, always summed in slice order.
    for (int split = 1; split < p.dq_splits; ++split) {
      const float *slice = acc + split * p.acc_split_stride;
      const float4 l = *reinterpret_cast<const float4 *>(slice);
      const float4 h = *reinterpret_cast<const float4 *>(slice + 4);
      lo = make_float4(lo.x + l.x, lo.y + l.y, lo.z + l.z, lo.w + l.w);
      hi = make_float4(hi.x + h.x, hi.y + h.y, hi.z + h.z, hi.w + h.w);
    }
    const float s = p.grad_scale;
    uint4 out;
    out.x = pack2<Element>(lo.x * s, lo.y * s);
    out.y = pack2<Element>(lo.z * s, lo.w * s);
    out.z = pack2<Element>(hi.x * s, hi.y * s);
    out.w = pack2<Element>(hi.z * s, hi.w * s);
    *reinterpret_cast<uint4 *>(dq) = out;
  }
};

}  // namespace ioattn::sm80
