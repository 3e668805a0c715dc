// SM80 forward mainloop (FlashAttention-2): one CTA owns a tile of kBlockM query rows, each
// warp 16*kMT of them. Key/value blocks of kBlockN rows stream through shared memory with
// cp.async, one or two stages deep (tile_config.h); S = Q.K^T and O += P.V run on mma.sync
// m16n8k16 with ldmatrix operand loads; the online softmax runs in registers and P never leaves
// them (the S accumulator fragments are repacked in place as the A operand of P.V).
#pragma once

#include "common/mask.cuh"
#include "common/params.h"
#include "common/portable.h"
#include "common/softmax.cuh"
#include "sm80/ptx.cuh"
#include "sm80/smem_tile.cuh"
#include "sm80/tile_config.h"
#include "sm80/tile_copy.cuh"

namespace ioattn::sm80 {

template <class Element_, int kHeadDim_, class Mask_, class ScoreMod_>
struct MainloopFwd {
  using Element = Element_;
  using Mask = Mask_;
  using ScoreMod = ScoreMod_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr FwdTileConfig kCfg = fwd_tile_config(kHeadDim, Mask::kIsWindow);
  static constexpr int kStages = kCfg.stages;
  static constexpr bool kEarlyK = kCfg.early_k;
  static_assert(!kEarlyK || kStages == 1, "early_k orders the loads of the one-stage loop");
  static constexpr int kBlockM = kCfg.block_m;
  static constexpr int kBlockN = kCfg.block_n;
  static constexpr int kNWarps = kCfg.num_warps;
  static constexpr int kNThreads = 32 * kNWarps;
  static constexpr bool kQInRegs = kCfg.q_in_regs;
  static constexpr int kMinBlocksPerSM = kCfg.min_blocks_per_sm;
  static constexpr int kWarpRows = kBlockM / kNWarps;  // query rows per warp
  static constexpr int kMT = kWarpRows / 16;           // m16 tiles per warp
  static constexpr int kNT = kBlockN / 8;              // n8 tiles of S
  static constexpr int kDT = kHeadDim / 8;             // n8 tiles of O
  static constexpr int kKT = kHeadDim / 16;            // k16 steps of Q.K^T
  static_assert(kWarpRows % 16 == 0 && kBlockN % 16 == 0 && kHeadDim % 16 == 0);
  static_assert(kStages == 1 || kStages == 2);

  using TileQ = SmemTile<kBlockM, kHeadDim>;
  using TileKV = SmemTile<kBlockN, kHeadDim>;

  struct SharedStorage {
    Element q[TileQ::kElems];  // also stages O in the epilogue
    Element k[kStages][TileKV::kElems];
    Element v[kStages][TileKV::kElems];
  };
  static_assert(sizeof(SharedStorage) == fwd_smem_bytes(kHeadDim, Mask::kIsWindow));

  float acc_o[kMT][kDT][4];  // (MMA_M, MMA_N = head_dim/8, 4): this warp's rows of O, fp32
  uint32_t q_frag[kQInRegs ? kMT : 1][kQInRegs ? kKT : 1][4];  // (MMA_M, MMA_K, 4) when kQInRegs

  // Per-lane ldmatrix offsets. Q (A operand) and V (transposed B operand): matrices
  // (rows 0-7, chunk 0), (rows 8-15, chunk 0), (rows 0-7, chunk 1), (rows 8-15, chunk 1).
  // K (B operand): (rows 0-7, chunk 0), (rows 0-7, chunk 1), (rows 8-15, chunk 0), (rows 8-15,
  // chunk 1), i.e. the (b0, b1) registers of two adjacent n8 tiles.
  using OffQ = typename TileQ::template LaneOffsets<TileQ::kPairsPerSubRow, 2>;
  using OffKV = typename TileKV::template LaneOffsets<TileKV::kPairsPerSubRow, 2>;
  struct LaneAddressing {
    OffQ q;
    OffKV k, v;
    __device__ explicit LaneAddressing(int lane)
        : q(TileQ::template lane_offsets<OffQ::kRegs, 2>(lane % 16, lane / 16)),
          k(TileKV::template lane_offsets<OffKV::kRegs, 2>(lane % 8 + (lane / 16) * 8,
                                                           (lane / 8) % 2)),
          v(TileKV::template lane_offsets<OffKV::kRegs, 2>(lane % 16, lane / 16)) {}
  };

  // A fragment (16 rows x 16 k) of Q for m-tile mt, k-step kk; sQ already offset to this warp.
  __device__ __forceinline__ static void load_q_frag(uint32_t (&a)[4], const Element *sQ,
                                                     const LaneAddressing &la, int mt, int kk) {
    ldmatrix_x4(a, TileQ::at(sQ, la.q, mt * 16, 2 * kk));
  }

  // acc_s (MMA_M, MMA_N = kBlockN/8, 4) = Q (this warp's rows, kHeadDim) . K^T (kHeadDim, kBlockN)
  __device__ __forceinline__ void gemm_qk(float (&acc_s)[kMT][kNT][4], const Element *sQ,
                                          const Element *sK, const LaneAddressing &la) const {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc_s[mt][nt][i] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        if constexpr (kQInRegs) {
#pragma unroll
          for (int i = 0; i < 4; ++i) a[mt][i] = q_frag[mt][kk][i];
        } else {
          load_q_frag(a[mt], sQ, la, mt, kk);
        }
      }
#pragma unroll
      for (int nt2 = 0; nt2 < kNT / 2; ++nt2) {
        uint32_t b[4];  // (b0, b1) of n-tiles 2*nt2 and 2*nt2+1
        ldmatrix_x4(b, TileKV::at(sK, la.k, nt2 * 16, 2 * kk));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<Element>(acc_s[mt][2 * nt2], a[mt], b[0], b[1]);
          mma_16816<Element>(acc_s[mt][2 * nt2 + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // P (this warp's rows, kBlockN) as mma A fragments: (MMA_M, MMA_K = kBlockN/16, 4). Two
  // adjacent n8 accumulator tiles of S are exactly the register layout of one m16k16 A
  // fragment, so P never leaves registers; packing it to 16 bits right after the softmax halves
  // its registers while the V tile is awaited.
  using PFrag = uint32_t[kMT][kBlockN / 16][4];
  __device__ __forceinline__ static void pack_p(PFrag &a, const float (&p)[kMT][kNT][4]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int j = 0; j < kBlockN / 16; ++j) {
        a[mt][j][0] = pack2<Element>(p[mt][2 * j][0], p[mt][2 * j][1]);
        a[mt][j][1] = pack2<Element>(p[mt][2 * j][2], p[mt][2 * j][3]);
        a[mt][j][2] = pack2<Element>(p[mt][2 * j + 1][0], p[mt][2 * j + 1][1]);
        a[mt][j][3] = pack2<Element>(p[mt][2 * j + 1][2], p[mt][2 * j + 1][3]);
      }
  }

  // acc_o (MMA_M, MMA_N = kHeadDim/8, 4) += P (this warp's rows, kBlockN) . V (kBlockN, kHeadDim)
  __device__ __forceinline__ void gemm_pv(const PFrag &a, const Element *sV,
                                          const LaneAddressing &la) {
#pragma unroll
    for (int j = 0; j < kBlockN / 16; ++j) {
#pragma unroll
      for (int dt2 = 0; dt2 < kDT / 2; ++dt2) {
        // Transposed: (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15,
        // d 8-15) = the (b0, b1) registers of d-tiles 2*dt2 and 2*dt2+1.
        uint32_t b[4];
        ldmatrix_x4_trans(b, TileKV::at(sV, la.v, j * 16, 2 * dt2));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<Element>(acc_o[mt][2 * dt2], a[mt][j], b[0], b[1]);
          mma_16816<Element>(acc_o[mt][2 * dt2 + 1], a[mt][j], b[2], b[3]);
        }
      }
    }
  }

  // The whole key loop of one query tile. q/k/v point at row 0 of this sequence and head; on
  // return acc_o holds this warp's normalized O rows and lse their log-sum-exp.
  __device__ __forceinline__ void run(const FwdParams &p, SharedStorage &smem, const Element *q,
                                      const Element *k, const Element *v, int m_begin, int seqlen_q,
                                      int seqlen_k, const Mask &mask, BlockRange blocks,
                                      float (&lse)[2 * kMT]) {
    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int chunks_valid = p.head_dim / 8;
    const ScoreMod score_mod(p);
    const LaneAddressing la(lane);
    // This warp's rows of the Q tile (the warp offset is a multiple of 16 rows).
    const Element *sQ_warp = smem.q + warp * kWarpRows * TileQ::kSubCols;
    OnlineSoftmax<kMT> softmax(p.score_scale_log2);

#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc_o[mt][dt][i] = 0.f;

    auto load_kv = [&](Element *dst, const Element *src, int64_t row_stride, int n_block) {
      load_tile<TileKV, kNThreads>(dst, src + int64_t(n_block) * kBlockN * row_stride, row_stride,
                                   seqlen_k - n_block * kBlockN, chunks_valid, tid);
    };

    const int n_last = blocks.end - 1;  // blocks run from the right edge leftwards
    const int n_iters = blocks.end - blocks.begin;
    load_tile<TileQ, kNThreads>(smem.q, q + int64_t(m_begin) * p.q_row_stride, p.q_row_stride,
                                seqlen_q - m_begin, chunks_valid, tid);
    load_kv(smem.k[0], k, p.k_row_stride, n_last);
    cp_async_commit();  // group: Q + K(first)
    if constexpr (kStages == 2) {
      load_kv(smem.v[0], v, p.v_row_stride, n_last);
      cp_async_commit();  // group: V(first)
    }

    using AccS = float[kMT][kNT][4];  // (MMA_M, MMA_N = kBlockN/8, 4)
    // S = Q.K^T of one block.
    auto qk = [&](AccS &acc_s, const Element *sK) {
      gemm_qk(acc_s, opaque(sQ_warp), opaque(sK), la);
    };
    // Score mod, boundary mask, online softmax: S becomes P, packed.
    auto softmax_step = [&](PFrag &p_frag, AccS &acc_s, int n_block) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc_s[mt][nt][i] = score_mod(acc_s[mt][nt][i]);
      if (mask.template block_needs_mask<kBlockN>(n_block, m_begin, m_begin + kBlockM)) {
        mask_fragment(acc_s, mask, m_begin + warp * kWarpRows + lane / 4,
                      n_block * kBlockN + 2 * (lane % 4));
      }
      softmax.update(acc_s, acc_o);
      pack_p(p_frag, acc_s);
    };
    auto load_q_regs = [&] {
      if constexpr (kQInRegs) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int kk = 0; kk < kKT; ++kk) load_q_frag(q_frag[mt][kk], sQ_warp, la, mt, kk);
      }
    };

    for (int it = 0; it < n_iters; ++it) {
      const int n_block = n_last - it;
      PFrag p_frag;
      if constexpr (kStages == 2) {
        const int stage = it % 2;
        // Groups in flight (oldest first): K(it), V(it). Wait for K(it) (and Q).
        cp_async_wait<1>();
        // Barrier: (1) K(it) and Q, copied by all threads, are visible to all; (2) every warp
        // has finished iteration it-1, so the other stage (its K and V) may be refilled.
        __syncthreads();
        if (it == 0) load_q_regs();
        // Prefetch the next block into the free stage; commit even when there is none so that
        // every iteration adds exactly two groups.
        if (it + 1 < n_iters) load_kv(smem.k[1 - stage], k, p.k_row_stride, n_block - 1);
        cp_async_commit();
        if (it + 1 < n_iters) load_kv(smem.v[1 - stage], v, p.v_row_stride, n_block - 1);
        cp_async_commit();
        {
          AccS acc_s;
          qk(acc_s, smem.k[stage]);
          softmax_step(p_frag, acc_s, n_block);
        }
        // In flight: V(it), K(it+1), V(it+1). Wait for V(it).
        cp_async_wait<2>();
        // Barrier: V(it), copied by all threads, is visible to all.
        __syncthreads();
        gemm_pv(p_frag, opaque(smem.v[stage]), la);
      } else {
        // In flight: K(it) (with Q on the first iteration).
        cp_async_wait<0>();
        // Barrier: (1) K(it) is visible to all; (2) every warp has finished P.V of iteration
        // it-1, so the single V buffer may be refilled.
        __syncthreads();
        if (it == 0) load_q_regs();
        load_kv(smem.v[0], v, p.v_row_stride, n_block);  // lands under Q.K^T (and the softmax)
        cp_async_commit();
        AccS acc_s;
        qk(acc_s, smem.k[0]);
        if constexpr (!kEarlyK) softmax_step(p_frag, acc_s, n_block);
        cp_async_wait<0>();
        // Barrier: (1) V(it) is visible to all; (2) every warp has finished Q.K^T of this
        // iteration, so the single K buffer may be refilled.
        __syncthreads();
        if (it + 1 < n_iters) {
          load_kv(smem.k[0], k, p.k_row_stride, n_block - 1);  // lands under (the softmax and) P.V
          cp_async_commit();
        }
        if constexpr (kEarlyK) softmax_step(p_frag, acc_s, n_block);
        gemm_pv(p_frag, opaque(smem.v[0]), la);
      }
    }
    softmax.finalize(acc_o, lse);
  }
};

}  // namespace ioattn::sm80
