// SM80 forward kernel: Kernel<Mainloop, Epilogue, Scheduler>. The kernel resolves one tile's
// coordinates, sequence bounds and key-block range; the mainloop computes; the epilogue stores.
#pragma once

#include "common/mask.cuh"
#include "common/params.h"
#include "common/scheduler.cuh"
#include "common/seqlen.cuh"

namespace ioattn::sm80 {

template <class Mainloop_, class Epilogue_, class Scheduler_>
struct FwdKernel {
  using Mainloop = Mainloop_;
  using Epilogue = Epilogue_;
  using Scheduler = Scheduler_;
  using Element = typename Mainloop::Element;
  using Mask = typename Mainloop::Mask;
  static constexpr int kBlockM = Mainloop::kBlockM;
  static constexpr int kBlockN = Mainloop::kBlockN;
  static constexpr int kNThreads = Mainloop::kNThreads;
  static constexpr int kMinBlocksPerSM = Mainloop::kMinBlocksPerSM;
  static constexpr int kSmemBytes = sizeof(typename Mainloop::SharedStorage);

  __device__ static void run(const FwdParams &p, char *smem_raw) {
    auto &smem = *reinterpret_cast<typename Mainloop::SharedStorage *>(smem_raw);
    const int num_m = (p.seqlen_q + kBlockM - 1) / kBlockM;
    const TileCoord tile = Scheduler::tile(num_m, p.num_heads);
    const SeqlenInfo seq(p, tile.batch);
    const int m_begin = tile.block * kBlockM;
    if (m_begin >= seq.seqlen_q) return;  // varlen: this sequence is shorter than the maximum

    const int head_k = tile.head / p.group_size;
    const Element *q =
        static_cast<const Element *>(p.q) +
        seq.q_like_offset(tile.batch, tile.head, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
    const Element *k =
        static_cast<const Element *>(p.k) +
        seq.k_like_offset(tile.batch, head_k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
    const Element *v =
        static_cast<const Element *>(p.v) +
        seq.k_like_offset(tile.batch, head_k, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
    Element *out =
        static_cast<Element *>(p.out) +
        seq.q_like_offset(tile.batch, tile.head, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
    float *lse = p.lse + seq.lse_offset(p, tile.batch, tile.head);

    const Mask mask(p, seq.seqlen_q, seq.seqlen_k);
    const BlockRange blocks = mask.template blocks_of_rows<kBlockN>(m_begin, m_begin + kBlockM);
    if (blocks.end <= blocks.begin) {
      Epilogue::store_zero(out, p.o_row_stride, lse, m_begin, seq.seqlen_q, p.head_dim);
      return;
    }

    Mainloop mainloop;
    float row_lse[2 * Mainloop::kMT];
    mainloop.run(p, smem, q, k, v, m_begin, seq.seqlen_q, seq.seqlen_k, mask, blocks, row_lse);
    Epilogue::store(mainloop.acc_o, row_lse, smem.q, out, p.o_row_stride, lse, m_begin,
                    seq.seqlen_q, p.head_dim);
  }
};

}  // namespace ioattn::sm80
