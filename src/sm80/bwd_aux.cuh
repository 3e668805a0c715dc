// The backward's memory-bound helpers:
//   BwdPreprocess   dsum = rowsum(dO o O) in fp32, per query row and head (per element type;
//                   it walks the rows of q: row r of rows_q is (b, s) = (r / seqlen_q,
//                   r % seqlen_q) for a dense batch and the packed row r for varlen), and
//                   zeroes dq_accum for the main kernel's atomics;
//   BwdPostprocess  dq = (sum of the dq_accum slices) * softmax_scale, converted to the
//                   element type (per element type and backward tile config, head dim and
//                   small_smem: it reads the kernel's fragment-ordered dq_accum tiles,
//                   sm80/dq_accum.cuh).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/params.h"
#include "common/portable.h"
#include "common/seqlen.cuh"
#include "sm80/dq_accum.cuh"
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

  // The main kernel adds dQ into dq_accum, so it starts at zero: its max(1, dq_splits) slices
  // of acc_split_stride floats (a multiple of 64: plan_bwd pads a slice to 256 bytes) are
  // cleared here in 16-byte stores strided over the whole grid, in place of a memset launch.
  __device__ static void clear_dq_accum(const BwdParams &p) {
    const int64_t n4 = (p.dq_splits > 0 ? p.dq_splits : 1) * p.acc_split_stride / 4;
    float4 *acc = reinterpret_cast<float4 *>(p.dq_accum);
    const int64_t stride = int64_t(gridDim.x) * kNThreads;
    for (int64_t i = int64_t(blockIdx.x) * kNThreads + threadIdx.x; i < n4; i += stride) {
      acc[i] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }

  // grid.x = ceil(rows_q / kRowsPerCta) * num_heads, the head fastest.
  __device__ static void run(const BwdParams &p) {
    clear_dq_accum(p);
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

template <class Element, int kHeadDim, bool kSmallSmem>
struct BwdPostprocess {
  static constexpr int kNThreads = kBwdHelperThreads;
  using Layout = DqAccumLayout<kHeadDim, kSmallSmem>;
  static constexpr int kBlockM = Layout::kBlockM;

  // v = the kVec floats at acc, summed over the slices (deterministic mode: always in slice
  // order).
  __device__ __forceinline__ static void load(float (&v)[2], const float *src) {
    const float2 w = *reinterpret_cast<const float2 *>(src);
    v[0] = w.x;
    v[1] = w.y;
  }
  __device__ __forceinline__ static void load(float (&v)[4], const float *src) {
    const float4 w = *reinterpret_cast<const float4 *>(src);
    v[0] = w.x;
    v[1] = w.y;
    v[2] = w.z;
    v[3] = w.w;
  }
  template <int kVec>
  __device__ __forceinline__ static void load_sum(float (&v)[kVec], const float *acc,
                                                  const BwdParams &p) {
    load(v, acc);
    for (int split = 1; split < p.dq_splits; ++split) {
      float w[kVec];
      load(w, acc + split * p.acc_split_stride);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] += w[i];
    }
  }

  // The block's rows of dq, converted, in static shared memory; rows padded by 16 bytes so
  // that the 8 rows x 4 lanes of a fragment write hit 32 distinct banks.
  static constexpr int kRowElems = kHeadDim + 8;

  // One CTA per (query block, head, batch): grid.x = ceil(seqlen_q / kBlockM) * num_heads *
  // batch, blocks fastest. Thread t reads fragments t, t + kNThreads, ... of the tile (in
  // storage order, so the reads are coalesced) and puts each at its rows and columns of a
  // shared tile, which then goes to dq as whole 16-byte row chunks.
  __device__ static void run(const BwdParams &p) {
    __shared__ __align__(16) Element tile[kBlockM * kRowElems];
    const int num_m = (p.seqlen_q + kBlockM - 1) / kBlockM;
    const int m_block = int(blockIdx.x % num_m);
    const int head = int(blockIdx.x / num_m % p.num_heads);
    const int batch = int(blockIdx.x / num_m / p.num_heads);
    const SeqlenInfo seq(p, batch);
    const int rows = min(seq.seqlen_q - m_block * kBlockM, kBlockM);  // of this block
    if (rows <= 0) return;  // varlen: this sequence is shorter than the longest
    const float *acc = p.dq_accum +
                       Layout::tile(seq, batch, p.seqlen_q, m_block) * p.acc_tile_stride +
                       head * p.acc_head_stride;
    const float s = p.grad_scale;
    constexpr int kVec = Layout::kVec;
    for (int u = threadIdx.x; u < Layout::kTileElems / kVec; u += kNThreads) {
      int row, col;
      Layout::coords(u / (Layout::kNWarps * 32), u / 32 % Layout::kNWarps, u % 32, row, col);
      float v[kVec];
      load_sum(v, acc + kVec * u, p);
#pragma unroll
      for (int h = 0; h < kVec / 2; ++h) {  // rows row, row + 8
        *reinterpret_cast<uint32_t *>(tile + (row + 8 * h) * kRowElems + col) =
            pack2<Element>(v[2 * h] * s, v[2 * h + 1] * s);
      }
    }
    // Barrier: every row of the shared tile is complete (its columns came from many threads).
    __syncthreads();
    Element *dq =
        static_cast<Element *>(p.dq) +
        seq.q_like_offset(batch, head, p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride) +
        int64_t(m_block) * kBlockM * p.dq_row_stride;
    const int chunks = p.head_dim / 8;  // padding columns stay behind
    for (int idx = threadIdx.x; idx < rows * chunks; idx += kNThreads) {
      const int row = idx / chunks;
      const int chunk = idx % chunks;
      *reinterpret_cast<uint4 *>(dq + int64_t(row) * p.dq_row_stride + chunk * 8) =
          *reinterpret_cast<const uint4 *>(tile + row * kRowElems + chunk * 8);
    }
  }
};

}  // namespace ioattn::sm80
