// Online softmax over register fragments in the m16n8 accumulator layout of mma.sync
// (also the per-warp layout of SM90 WGMMA accumulators):
//   acc[mt][nt][i], i in 0..3: row = 16*mt + lane/4 + 8*(i/2), col = 8*nt + 2*(lane%4) + i%2.
// Each thread owns two rows per m-tile; the four threads of a quad (lane/4 equal) share them,
// so row reductions are two xor-shuffles.
//
// Numerics: scores are kept in their own units s; probabilities are exp2(s*c - m*c) with
// c = score_scale*log2(e) folded into one FFMA. A row whose running max is -inf (nothing
// visible yet) uses 0 as its offset so that -inf - -inf never appears: its p are exp2(-inf) = 0.
// A row that ends with sum 0 gets O = 0 and LSE = -inf.
#pragma once

#include "common/portable.h"

namespace ioattn {

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 1 / x and log2(x) for the row sums of finalize, which are 0 or about 1 and more (a row's
// largest p is, see new_row_max; so never denormal): one MUFU instruction each, where the IEEE
// division and the denormal-safe __log2f add a Newton step, a range check with its slow path
// and a rescale (~20 instructions per row in the epilogue).
__device__ __forceinline__ float rcp_approx(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float log2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int kMT>
struct OnlineSoftmax {
  static constexpr int kRows = 2 * kMT;  // rows owned by one thread
  float row_max[kRows];                  // running max of s, -inf while nothing is visible
  float row_sum[kRows];                  // this thread's partial sum of p (quad-reduced at the end)
  float scale_log2;
  static constexpr float kLazyMaxLog2 = 8.f;  // see new_row_max

  __device__ explicit OnlineSoftmax(float scale_log2_) : scale_log2(scale_log2_) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = neg_inf();
      row_sum[r] = 0.f;
    }
  }

  // s (kMT, kNT, 4) holds one key block of scores (masked entries -inf); on return it holds
  // p = exp2(s*c - m*c), and o (kMT, kDT, 4) has been rescaled to the new running max.
  template <int kNT, int kDT>
  __device__ __forceinline__ void update(float (&s)[kMT][kNT][4], float (&o)[kMT][kDT][4]) {
    float correction[kRows];
    update_scores(s, correction);
    rescale(o, correction);
  }

  // Whether a row of this warp moved its max (a lazy new_row_max left correction 1 if not).
  __device__ __forceinline__ static bool any_moved(const float (&correction)[kRows]) {
    bool moved = false;
#pragma unroll
    for (int r = 0; r < kRows; ++r) moved |= correction[r] != 1.f;
    return __any_sync(0xffffffffu, moved);
  }

  // The first half of update: s becomes p and the running max and sums move on; o must still
  // be multiplied by `correction` (rescale) before the next P.V adds to it. Split so that an
  // SM90 consumer can run it while the previous block's P.V is still in flight.
  template <bool kLazy = false, int kNT>
  __device__ __forceinline__ void update_scores(float (&s)[kMT][kNT][4],
                                                float (&correction)[kRows]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float m_scaled = new_row_max<kLazy>(s, r, correction[r]);
      exponentiate_row(s, r, m_scaled, correction[r]);
    }
  }

  // update_scores for one row r (mt = r / 2, h = r % 2) in two steps, which an SM90 consumer
  // places on either side of a wgmma wait: new_row_max moves the running max on, sets
  // `correction` and returns the row's offset in the exp2 argument; exponentiate_row turns the
  // row's scores into p and moves its sum on.
  //
  // kLazy: the running max stays where it is unless the row's new max exceeds it by more than
  // kLazyMaxLog2 in the exp2 domain, so p <= 2^kLazyMaxLog2 (exact: o and row_sum keep the
  // same reference point, and p's relative rounding does not depend on its size). correction
  // is then exactly 1, and a warp none of whose rows moved can skip the rescale of o.
  template <bool kLazy = false, int kNT>
  __device__ __forceinline__ float new_row_max(const float (&s)[kMT][kNT][4], int r,
                                               float &correction) {
    const int mt = r / 2, h = r % 2;
    const float m_old = row_max[r];
    float m = m_old;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      m = fmaxf(m, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
    }
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    // -inf - -inf is NaN: a row that still sees nothing keeps its -inf (its o and row_sum are
    // 0, so correction 1 is as good as 0).
    const bool keep = kLazy && !((m - m_old) * scale_log2 > kLazyMaxLog2);
    if (keep) m = m_old;
    const float m_scaled = m == neg_inf() ? 0.f : m * scale_log2;
    // exp2(-inf) = 0 when the old max was -inf: o and row_sum are 0 then anyway.
    correction = keep ? 1.f : exp2_approx(m_old * scale_log2 - m_scaled);
    row_max[r] = m;
    return m_scaled;
  }

  template <int kNT>
  __device__ __forceinline__ void exponentiate_row(float (&s)[kMT][kNT][4], int r, float m_scaled,
                                                   float correction) {
    const int mt = r / 2, h = r % 2;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float p = exp2_approx(fmaf(s[mt][nt][2 * h + e], scale_log2, -m_scaled));
        s[mt][nt][2 * h + e] = p;
        sum += p;
      }
    }
    row_sum[r] = fmaf(row_sum[r], correction, sum);
  }

  // A cheaper update for key blocks after a row's first (the SM90 forward's kStaleMax): row r of
  // s exponentiated into p against the running max as it stands, without looking for the
  // block's max first. That saves the max (kNT x 2 FMNMX and two shuffles per row) and the wait
  // for it before the first exponential. Returns the thread's partial sum of the row's p, added
  // as a tree so that accept_stale waits on a few adds rather than on a chain of kNT x 2. s is
  // left as it is, for the exact path where accept_stale declines. `zero`: a 0 that the caller
  // may derive from a load, to order the exponentials after it.
  template <int kNT>
  __device__ __forceinline__ float exponentiate_stale(const float (&s)[kMT][kNT][4],
                                                      float (&p)[kMT][kNT][4], int r,
                                                      float zero) const {
    const int mt = r / 2, h = r % 2;
    // A row that has seen no key yet takes -FLT_MAX as its offset: any key it sees now then
    // overflows (p = +inf), so that accept_stale sends it to the exact path, where an offset of 0
    // would let keys scoring below -126 (log2 units) underflow to 0 and pass for unseen.
    constexpr float kUnseenOffset = -3.402823466e38f;  // -FLT_MAX
    const float m_scaled =
        (row_max[r] == neg_inf() ? kUnseenOffset : row_max[r] * scale_log2) + zero;
    float pair[kNT];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        p[mt][nt][2 * h + e] = exp2_approx(fmaf(s[mt][nt][2 * h + e], scale_log2, -m_scaled));
      }
      pair[nt] = p[mt][nt][2 * h] + p[mt][nt][2 * h + 1];
    }
#pragma unroll
    for (int w = 1; w < kNT; w *= 2) {
#pragma unroll
      for (int i = 0; i + w < kNT; i += 2 * w) pair[i] += pair[i + w];
    }
    return pair[0];
  }

  // Whether the p of exponentiate_stale stand (then the row sums move on by `sum`, and the
  // correction is 1): where every thread's partial sum of each of its rows is at most
  // kStaleSumMax. A p is at most its row's sum, so no p exceeds it (the running max only
  // matters as a reference point that keeps p in range: O and the sums are both relative to
  // it); an overflowed exponential (+inf) or a NaN fails. A row whose max is still -inf
  // passes only if it sees no key here either (sum 0: exponentiate_stale makes any visible
  // key's p +inf), since its first visible keys must set the max. The vote is warp-wide, so
  // the four threads of a row, which
  // must agree on its max, take the same path. counted[r]: whether row r takes part; rows whose
  // output is never stored do not (their scores may come from stale shared memory, and would
  // make the path, and so the rounding, of the rows beside them vary from run to run).
  __device__ __forceinline__ bool accept_stale(const float (&sum)[kRows],
                                               const bool (&counted)[kRows]) {
    bool fits = true;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      fits &= !counted[r] || (row_max[r] == neg_inf() ? !(sum[r] > 0.f) : sum[r] <= kStaleSumMax);
    }
    if (!__all_sync(0xffffffffu, fits)) return false;
#pragma unroll
    for (int r = 0; r < kRows; ++r) row_sum[r] += sum[r];
    return true;
  }
  // accept_stale for row r alone (where the scores of only one row at a time fit beside their
  // exponentials).
  __device__ __forceinline__ bool accept_stale_row(float sum, bool counted, int r) {
    const bool fits = !counted || (row_max[r] == neg_inf() ? !(sum > 0.f) : sum <= kStaleSumMax);
    if (!__all_sync(0xffffffffu, fits)) return false;
    row_sum[r] += sum;
    return true;
  }
  // Looser than the lazy max's 2^8: a tile walked last to first (mirrored pairs) takes its
  // first max from the diagonal block, where some rows see a few keys only, and at 2^8 the next
  // blocks then missed often enough to cost hd128 causal 4% at seqlen 1k. p <= 2^14 still fits
  // fp16's P (65504), and O's fp32 sums stay far from overflow.
  static constexpr float kStaleSumMax = 16384.f;

  template <int kDT>
  __device__ __forceinline__ static void rescale(float (&o)[kMT][kDT][4],
                                                 const float (&correction)[kRows]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
          o[mt][dt][2 * h] *= correction[2 * mt + h];
          o[mt][dt][2 * h + 1] *= correction[2 * mt + h];
        }
  }

  // Normalizes o by the row sums and returns the natural-log LSE of each owned row:
  // lse = max * score_scale + log(sum), or -inf (and o = 0) for a row that saw no key.
  template <int kDT>
  __device__ __forceinline__ void finalize(float (&o)[kMT][kDT][4], float (&lse)[kRows]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = 2 * mt + h;
        float sum = row_sum[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const bool empty = !(sum > 0.f);  // also catches NaN
        const float inv = empty ? 0.f : rcp_approx(sum);
        const float m_scaled = row_max[r] == neg_inf() ? 0.f : row_max[r] * scale_log2;
        lse[r] = empty ? neg_inf() : (m_scaled + log2_approx(sum)) * kLn2;
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
          o[mt][dt][2 * h] *= inv;
          o[mt][dt][2 * h + 1] *= inv;
        }
      }
    }
  }
};

}  // namespace ioattn
