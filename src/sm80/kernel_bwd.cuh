// SM80 backward kernel: Kernel<Mainloop, Epilogue, Scheduler>. The kernel resolves its key
// blocks' coordinates (one, or a strided run of them in deterministic mode), sequence bounds
// and the range of query blocks that see each; the mainloop accumulates dK/dV (and adds dQ
// into the fp32 accumulator); the epilogue stores dK/dV.
#pragma once

#include "common/mask.cuh"
#include "common/params.h"
#include "common/scheduler.cuh"
#include "common/seqlen.cuh"

namespace ioattn::sm80 {

template <class Mainloop_, class Epilogue_, class Scheduler_>
struct BwdKernel {
  using Mainloop = Mainloop_;
  using Epilogue = Epilogue_;
  using Scheduler = Scheduler_;
  using Element = typename Mainloop::Element;
  using Mask = typename Mainloop::Mask;
  static constexpr int kBlockN = Mainloop::kBlockN;
  static constexpr int kBlockM = Mainloop::kBlockM;
  static constexpr int kNThreads = Mainloop::kNThreads;
  static constexpr int kMinBlocksPerSM = Mainloop::kMinBlocksPerSM;

  __device__ static void run(const BwdParams &p, char *smem_raw) {
    auto &smem = *reinterpret_cast<typename Mainloop::SharedStorage *>(smem_raw);
    if constexpr (Scheduler::kWalksBlocks) {
      // Deterministic: dq_splits CTAs per (K/V head, batch), each with its own dq_accum slice,
      // walking every dq_splits-th key block in order (BwdParams::dq_splits).
      const TileCoord tile = Scheduler::tile(p.dq_splits, p.num_heads_k);
      const SeqlenInfo seq(p, tile.batch);
      float *dq_accum = p.dq_accum + tile.block * p.acc_split_stride;
      for (int n_block = tile.block; n_block * kBlockN < seq.seqlen_k; n_block += p.dq_splits) {
        if (n_block != tile.block) {
          // Barrier: the previous key block's epilogue has copied dK/dV out of the K/V tiles
          // that this block's mainloop is about to refill.
          __syncthreads();
        }
        run_key_block(p, smem, seq, tile.batch, tile.head, n_block * kBlockN, dq_accum);
      }
    } else {
      const int num_n = (p.seqlen_k + kBlockN - 1) / kBlockN;
      const TileCoord tile = Scheduler::tile(num_n, p.num_heads_k);  // head = the K/V head
      const SeqlenInfo seq(p, tile.batch);
      const int n_begin = tile.block * kBlockN;
      if (n_begin >= seq.seqlen_k) return;  // varlen: this sequence is shorter than the maximum
      run_key_block(p, smem, seq, tile.batch, tile.head, n_begin, p.dq_accum);
    }
  }

  // One key block [n_begin, n_begin + kBlockN) of K/V head head_k: dK/dV to global memory, its
  // dQ added into the dq_accum slice.
  __device__ static void run_key_block(const BwdParams &p, typename Mainloop::SharedStorage &smem,
                                       const SeqlenInfo &seq, int batch, int head_k, int n_begin,
                                       float *dq_accum) {
    const Element *k =
        static_cast<const Element *>(p.k) +
        seq.k_like_offset(batch, head_k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    const Element *v =
        static_cast<const Element *>(p.v) +
        seq.k_like_offset(batch, head_k, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
    Element *dk =
        static_cast<Element *>(p.dk) +
        seq.k_like_offset(batch, head_k, p.dk_batch_stride, p.dk_row_stride, p.dk_head_stride) +
        int64_t(n_begin) * p.dk_row_stride;
    Element *dv =
        static_cast<Element *>(p.dv) +
        seq.k_like_offset(batch, head_k, p.dv_batch_stride, p.dv_row_stride, p.dv_head_stride) +
        int64_t(n_begin) * p.dv_row_stride;
    const int rows_valid = seq.seqlen_k - n_begin;

    const Mask mask(p, seq.seqlen_q, seq.seqlen_k);
    const BlockRange m_blocks =
        mask.template query_blocks_of_keys<kBlockM>(n_begin, n_begin + kBlockN);
    if (m_blocks.end <= m_blocks.begin) {
      Epilogue::store_zero(dk, p.dk_row_stride, dv, p.dv_row_stride, rows_valid, p.head_dim);
      return;
    }

    Mainloop mainloop;
    mainloop.run(p, smem, seq, batch, head_k, k, v, n_begin, mask, m_blocks, dq_accum);
    Epilogue::store(mainloop, smem, dk, p.dk_row_stride, dv, p.dv_row_stride, p.grad_scale,
                    rows_valid, p.head_dim);
  }
};

}  // namespace ioattn::sm80
