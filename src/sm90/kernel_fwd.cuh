// SM90 forward kernel: Kernel<Mainloop, Epilogue, Scheduler>, persistent and warp-specialized.
// Warpgroup 0 gives up registers and one of its threads issues every TMA load; the consumer
// warpgroups (two, or three in hd64's 192-row kernels) take the registers and compute. All of them
// walk the same tile sequence, so the rings (and the ping-pong turns) stay in step without further
// coordination.
#pragma once

#include "common/mask.cuh"
#include "common/params.h"
#include "common/scheduler.cuh"
#include "common/seqlen.cuh"
#include "sm90/mainloop_fwd.cuh"
#include "sm90/params.h"
#include "sm90/ptx.cuh"
#include "sm90/tile_config.h"
#include "sm90/tile_rows.cuh"

namespace ioattn::sm90 {

template <class Mainloop_, class Epilogue_, class Scheduler_>
struct FwdKernel {
  using Mainloop = Mainloop_;
  using Epilogue = Epilogue_;
  using Scheduler = Scheduler_;
  using Element = typename Mainloop::Element;
  using Mask = typename Mainloop::Mask;
  using SharedStorage = typename Mainloop::SharedStorage;
  static constexpr int kBlockM = Mainloop::kBlockM;
  static constexpr int kBlockN = Mainloop::kBlockN;
  static constexpr int kConsumers = Mainloop::kConsumerWarpgroups;
  static constexpr int kNThreads = 128 * (1 + kConsumers);
  static constexpr int kMinBlocksPerSM = 1;
  // Named barriers: the ping-pong turns (1 .. kConsumers), the TMA-store epilogue's, then the
  // first-softmax stagger's (MainloopFwd::kStaggerBarrier).
  static_assert(Epilogue::kFirstBarrier + kConsumers <= Mainloop::kStaggerBarrier);
  // Registers per thread after setmaxnreg. They come from the pool the CTA was launched with,
  // kNThreads x the launch's count per thread (65536 / kNThreads, rounded down to a multiple
  // of 8), not from the SM's 64K: two consumers 128 x 24 + 256 x 240 = 64512 of 384 x 168,
  // three 128 x 32 + 384 x 160 = 65536 of 512 x 128.
  static constexpr int kProducerRegs = kConsumers == 2 ? 24 : 32;
  static constexpr int kConsumerRegs = kConsumers == 2 ? 240 : 160;
  static_assert(128 * kProducerRegs + 128 * kConsumers * kConsumerRegs <=
                65536 / kNThreads / 8 * 8 * kNThreads);

  // One tile's coordinates, sequence, mask and the key blocks its rows visit. The scheduler's
  // heads are groups of P.pack query heads (tile_rows.cuh), its blocks tile_positions query
  // positions each.
  struct Work {
    TileCoord c;
    SeqlenInfo seq;
    Mask mask;
    int head0;  // the query head of the tile's row 0
    int first;  // the query position of its row 0
    BlockRange blocks;
    bool in_sequence;  // false: varlen tile past the end of a shorter sequence

    __device__ Work(const FwdParamsSm90 &P, const Scheduler &sched, int t)
        : c(sched.tile(t)),
          seq(P.base, c.batch),
          mask(P.base, seq.seqlen_q, seq.seqlen_k),
          head0(c.head * P.pack),
          first(P.pack > 1 ? c.block * P.tile_positions : first_row(c.block, seq.seqlen_q)),
          blocks{0, 0},
          in_sequence(first < seq.seqlen_q) {
      if (in_sequence) {
        blocks = mask.template blocks_of_rows<kBlockN>(first, first + P.tile_positions);
      }
    }
    __device__ bool has_keys() const { return blocks.end > blocks.begin; }

    // The first row of query block `block` (unpacked tiles). Where warpgroups skip the key
    // blocks their rows do not see (MainloopFwd::kSkipUnseenBlocks), the tiles are aligned to
    // the end of the sequence: where kBlockM does not divide seqlen_q the ragged tile is the first
    // one, which starts before row 0 (those rows are neither counted nor stored: TMA fills them
    // with zeros, or with the previous sequence's rows for varlen, and the epilogue skips them). A
    // ragged tile is lighter than the cost model of PersistentTileScheduler assumes (its missing
    // rows' warpgroups skip), and as the last tile under a causal mask it walked every key on fewer
    // warpgroups, which left its pair lighter than the rest (ncu, hd64 causal 4k: the least busy SM
    // 22% below the mean). As the first it walks the fewest keys of its (head, batch) and pairs
    // with the heaviest tile. Measured on an H100 (bf16, causal, same run, five rounds): hd64 +1.9%
    // at seqlen 2k, +2.9% at 4k, +1.2% at 3000, within 0.3% at 8k and 16k; hd256 +6.2% at 777, -1%
    // at 1500. Where every warpgroup walks every block of its tile a ragged tile costs as much as a
    // full one, and shifting the tiles off the key blocks cost hd128 causal 3% at seqlen 1000.
    __device__ static int first_row(int block, int seqlen_q) {
      if constexpr (!Mainloop::kSkipUnseenBlocks) return block * kBlockM;
      const int blocks = (seqlen_q + kBlockM - 1) / kBlockM;  // of this sequence
      return seqlen_q - (blocks - block) * kBlockM;
    }
  };

  __device__ static void run(const FwdParamsSm90 &P, char *smem_raw) {
    // The swizzled tiles need 1024-byte alignment; the host adds 1 KB for it.
    char *base =
        reinterpret_cast<char *>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
    SharedStorage &smem = *reinterpret_cast<SharedStorage *>(base);
    const FwdParams &p = P.base;
    // Read through a shuffle so that ptxas knows it is warp-uniform: what derives from it (the
    // consumer's Q descriptor) can then live in uniform registers, which WGMMA reads directly.
    const int warpgroup = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0);

    if (threadIdx.x == 0) {
      Mainloop::init_barriers(smem);
      fence_barrier_init();
    }
    // Barrier: every mbarrier is initialized (and the initialization visible to the TMA unit)
    // before any thread waits on one or any load signals one.
    __syncthreads();

    const Scheduler sched(P.sched);
    uint32_t q_phase = 0;
    PipelineState<Mainloop::kStages> kv;

    if (warpgroup == 0) {
      setmaxnreg_dec<kProducerRegs>();
      if (threadIdx.x == 0) {
        tma_prefetch_descriptor(&P.tma_q);
        tma_prefetch_descriptor(&P.tma_k);
        tma_prefetch_descriptor(&P.tma_v);
        for (int t = sched.first(); sched.valid(t); t = sched.next(t)) {
          const Work w(P, sched, t);
          if (!w.in_sequence || !w.has_keys()) continue;
          Mainloop::load(P, smem, w.seq, w.c.batch, w.head0, w.first, w.blocks, w.c.reversed,
                         q_phase, kv);
        }
      }
      return;
    }

    setmaxnreg_inc<kConsumerRegs>();
    const int consumer = warpgroup - 1;
    const typename Mainloop::Turn turn(consumer);
    turn.start(consumer);
    Mainloop mainloop;
    for (int t = sched.first(); sched.valid(t); t = sched.next(t)) {
      const Work w(P, sched, t);
      if (!w.in_sequence) continue;
      const typename Epilogue::Dest dest{
          static_cast<Element *>(p.out) + w.seq.q_like_offset(w.c.batch, w.head0, p.o_batch_stride,
                                                              p.o_row_stride, p.o_head_stride),
          p.o_row_stride,
          p.o_head_stride,
          p.lse + w.seq.lse_offset(p, w.c.batch, w.head0),
          p.lse_head_stride,
          w.seq.seqlen_q,
          p.head_dim};
      const TileRows rows{w.first, P.pack, P.pack_magic, P.tile_positions};
      if (!w.has_keys()) {
        Epilogue::store_zero(dest, rows, consumer);
        continue;
      }
      float row_lse[2];
      mainloop.mma(p, smem, w.mask, rows, w.blocks, w.c.reversed, consumer, turn, q_phase, kv,
                   row_lse);
      if (Mainloop::kStageO && P.tma_store && rows.first + consumer * Mainloop::kWgRows >= 0) {
        Epilogue::store_tma(mainloop.acc_o, row_lse, dest, rows, consumer, smem.o, &P.tma_o,
                            w.head0, w.c.batch);
      } else {
        Epilogue::store(mainloop.acc_o, row_lse, dest, rows, Mainloop::thread_row0(consumer));
      }
    }
    turn.finish(consumer);
    // why: the CTA's shared memory must outlive the reads of its last TMA stores, and their
    // writes are complete before the kernel is.
    if (Mainloop::kStageO && P.tma_store && threadIdx.x % 128 == 0) bulk_wait();
  }
};

}  // namespace ioattn::sm90
