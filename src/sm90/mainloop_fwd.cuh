// SM90 forward mainloop (FlashAttention-3). Warp-specialized: one producer thread streams Q
// and the K/V blocks of each tile into shared memory with TMA; two or three consumer
// warpgroups, each owning 64 query rows, run S = Q.K^T (WGMMA, both operands in shared memory) and
// O += P.V (WGMMA, P from registers), with the online softmax in registers.
//
// Overlap, the two FA3 schedules:
//   intra-warpgroup  a consumer issues S(j+1) = Q.K(j+1)^T and O += P(j).V(j), then runs the
//                    softmax of S(j+1) while P(j).V(j) is still on the tensor cores;
//   ping-pong        the consumers take turns issuing their GEMMs (named barriers), so one
//                    warpgroup's softmax runs under the others' GEMMs.
// Both can be switched off at compile time for ablations (IOATTN_SM90_NO_OVERLAP,
// IOATTN_SM90_NO_PINGPONG).
//
// Lazy rescaling: a row's running max only moves when it grows by more than 2^8 in p (see
// OnlineSoftmax::new_row_max), and a warp none of whose rows moved skips the rescale of O.
// After the first key blocks that is nearly every block, which takes kDT x 4 multiplies per
// thread out of each iteration's issue slots; the issue slots are what the two (three)
// consumers' softmaxes contend for when they overlap. Measured on an H100 against rescaling
// every block (IOATTN_SM90_EAGER_RESCALE), bf16, seqlen 1k-16k: +2-7% at hd64, +1-4% at hd128,
// +3-5% at hd256.
//
// Stale max (kStaleMax, fwd_stale_max): after a tile's first key block a consumer exponentiates
// against the running max as it stands, without the block's max, and keeps the result where
// every row's sum shows that no p outgrew its range (OnlineSoftmax::accept_stale); the exact
// update runs only where one did. The block max is about a fifth of the softmax's instructions at
// hd64, and issue slots are what the consumers' softmaxes contend for. IOATTN_SM90_EXACT_MAX
// switches it off for ablations.
#pragma once

#include "common/mask.cuh"
#include "common/pack.cuh"
#include "common/params.h"
#include "common/portable.h"
#include "common/seqlen.cuh"
#include "common/softmax.cuh"
#include "sm90/params.h"
#include "sm90/pipeline.cuh"
#include "sm90/ptx.cuh"
#include "sm90/smem_layout.cuh"
#include "sm90/tile_config.h"
#include "sm90/tile_rows.cuh"
#include "sm90/wgmma_ops.cuh"

namespace ioattn::sm90 {

#ifdef IOATTN_SM90_NO_PINGPONG
inline constexpr bool kPingPong = false;
#else
inline constexpr bool kPingPong = true;
#endif
#ifdef IOATTN_SM90_NO_OVERLAP
inline constexpr bool kIntraWarpgroupOverlap = false;
#else
inline constexpr bool kIntraWarpgroupOverlap = true;
#endif
#ifdef IOATTN_SM90_EAGER_RESCALE
inline constexpr bool kLazyRescale = false;
#else
inline constexpr bool kLazyRescale = true;
#endif
#ifdef IOATTN_SM90_EXACT_MAX
inline constexpr bool kStaleMaxEnabled = false;
#else
inline constexpr bool kStaleMaxEnabled = true;
#endif

// Named barriers 1 .. kConsumers (0 is __syncthreads): warpgroup c may issue GEMMs once
// barrier 1 + c completes, i.e. once consumer c - 1 (cyclically) has passed it the turn.
template <int kConsumers>
struct PingPong {
  static constexpr int kFirstBarrier = 1;
  static constexpr int kThreads = 2 * 128;  // 128 waiting + 128 arriving
  int mine;
  int next;

  __device__ explicit PingPong(int consumer)
      : mine(kFirstBarrier + consumer), next(kFirstBarrier + (consumer + 1) % kConsumers) {}

  // Consumer 0 takes the first turn: the last consumer passes it one before its own first
  // GEMMs.
  __device__ void start(int consumer) const {
    if (kPingPong && consumer == kConsumers - 1) bar_arrive(next, kThreads);
  }
  __device__ __forceinline__ void wait_turn() const {
    if constexpr (kPingPong) bar_sync(mine, kThreads);
  }
  __device__ __forceinline__ void pass_turn() const {
    if constexpr (kPingPong) bar_arrive(next, kThreads);
  }
  // The last consumer passes one turn more than consumer 0 takes (the one in start); consume
  // it so that no barrier is left half-arrived when the CTA exits.
  __device__ void finish(int consumer) const {
    if (kPingPong && consumer == 0) bar_sync(mine, kThreads);
  }
};

// kLongQ: the tile config for long query sequences (fwd_tile_config).
template <class Element_, int kHeadDim_, class Mask_, class ScoreMod_, bool kLongQ>
struct MainloopFwd {
  using Element = Element_;
  using Mask = Mask_;
  using ScoreMod = ScoreMod_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr FwdTileConfig kCfg = fwd_tile_config(kHeadDim, Mask::kIsWindow, kLongQ);
  static constexpr int kBlockM = kCfg.block_m;
  static constexpr int kBlockN = kCfg.block_n;
  static constexpr int kStages = kCfg.stages;
  static constexpr int kConsumerWarpgroups = kCfg.consumers;
  // Tiles may walk their key blocks last to first (mirrored pairs, PersistentTileScheduler).
  static constexpr bool kReversible = fwd_mirrors_pairs(kHeadDim, Mask::kIsWindow, kLongQ);
  static constexpr int kConsumerThreads = 128 * kConsumerWarpgroups;
  static constexpr int kWgRows = 64;         // query rows per consumer warpgroup
  static constexpr int kNT = kBlockN / 8;    // n8 tiles of S
  static constexpr int kDT = kHeadDim / 8;   // n8 tiles of O
  static constexpr int kKT = kHeadDim / 16;  // k16 steps of Q.K^T
  static constexpr int kPT = kBlockN / 16;   // k16 steps of P.V
  static_assert(kBlockM == kWgRows * kConsumerWarpgroups);
  using Turn = PingPong<kConsumerWarpgroups>;
  static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0);

  using TileQ = SwizzledTile<kBlockM, kHeadDim>;
  using TileKV = SwizzledTile<kBlockN, kHeadDim>;

  // Whether O leaves through shared memory and TMA stores (fwd_stage_o, the epilogue's
  // store_tma), in a buffer of the Q tile's shape.
  static constexpr bool kStageO = fwd_stage_o(kHeadDim, Mask::kIsWindow, kLongQ);
  // Whether a tile's key blocks after its first are exponentiated against the running max as it
  // stands (OnlineSoftmax::exponentiate_stale), and how (fwd_stale_max). Only in the overlapped
  // loop (the IOATTN_SM90_NO_OVERLAP ablation runs the exact update), and with lazy rescaling
  // only (the eager ablation moves O every block, which the stale path's correction of 1 would
  // skip).
  static constexpr bool kStaleMax = kStaleMaxEnabled && kLazyRescale;
  static constexpr bool kStalePairs =
      fwd_stale_max(kHeadDim, Mask::kIsWindow, kLongQ) == FwdStaleMax::kPairs;

  struct SharedStorage {
    alignas(1024) char q[TileQ::kBytes];
    alignas(1024) char o[kStageO ? TileQ::kBytes : 1024];
    alignas(1024) char k[kStages][TileKV::kBytes];
    alignas(1024) char v[kStages][TileKV::kBytes];
    uint64_t q_full;   // the tile's Q has landed
    uint64_t q_empty;  // every consumer has issued (and retired) its last Q.K^T of the tile
    Ring<kStages> k_ring;
    Ring<kStages> v_ring;
    float wait_anchor[kConsumerWarpgroups * 4][2];  // per warp: a sink and a 0 (see mma)
  };
  static_assert(TileKV::kBytes % 1024 == 0, "K/V stages stay 1024-byte aligned");
  static_assert(sizeof(SharedStorage) + 1024 <= fwd_smem_bytes(kHeadDim, Mask::kIsWindow, kLongQ));

  __device__ static void init_barriers(SharedStorage &smem) {
    mbar_init(&smem.q_full, 1);
    mbar_init(&smem.q_empty, kConsumerThreads);
    smem.k_ring.init(kConsumerThreads);
    smem.v_ring.init(kConsumerThreads);
  }

  // ---- Producer (one thread) ----

  // Issues the TMA loads of one tile: Q once, then K and V of key blocks begin to end - 1.
  // Ascending, so that the tiles of a head running together (all of whose key ranges start at
  // block 0 under a causal mask) read the same K/V blocks at about the same time and share
  // them in L2 (measured +2-5% at hd256 causal over the descending order of FA2/FA3); reversed
  // (the second tile of a mirrored pair, PersistentTileScheduler) from end - 1 down, so that
  // the tiles of a head that end together read the same blocks together.
  // q_phase and kv carry the ring positions from tile to tile. head0: the query head of the
  // tile's row 0; first: its query position (tile_rows.cuh).
  __device__ static void load(const FwdParamsSm90 &P, SharedStorage &smem, const SeqlenInfo &seq,
                              int batch, int head0, int first, BlockRange blocks, bool reversed,
                              uint32_t &q_phase, PipelineState<kStages> &kv) {
    const int b = seq.varlen ? 0 : batch;
    const int head_k = head0 / P.base.group_size;
    const int q_row = int(seq.q_row_offset) + first;
    // The single Q buffer is refilled once both consumers are done with the previous tile's.
    mbar_wait(&smem.q_empty, q_phase ^ 1);
    // GQA-packed: pack x tile_positions rows (of 128 bytes per panel); the rest of the buffer
    // keeps stale rows, which no output row reads.
    mbar_arrive_expect_tx(&smem.q_full, TileQ::kPanels * 128 * P.pack * P.tile_positions);
#pragma unroll
    for (int panel = 0; panel < TileQ::kPanels; ++panel) {
      char *dst = smem.q + panel * TileQ::kPanelBytes;
      if (P.pack > 1) {
        tma_load_5d(dst, &P.tma_q, &smem.q_full, panel * 64, 0, q_row, head_k, b);
      } else {
        tma_load_4d(dst, &P.tma_q, &smem.q_full, panel * 64, q_row, head0, b);
      }
    }
    q_phase ^= 1;
    for (int i = 0; i < blocks.end - blocks.begin; ++i) {
      const int n_block = kReversible && reversed ? blocks.end - 1 - i : blocks.begin + i;
      const int kv_row = int(seq.k_row_offset) + n_block * kBlockN;
      uint64_t *k_full = smem.k_ring.producer_acquire(kv, TileKV::kBytes);
#pragma unroll
      for (int panel = 0; panel < TileKV::kPanels; ++panel) {
        tma_load_4d(smem.k[kv.stage] + panel * TileKV::kPanelBytes, &P.tma_k, k_full, panel * 64,
                    kv_row, head_k, b);
      }
      uint64_t *v_full = smem.v_ring.producer_acquire(kv, TileKV::kBytes);
#pragma unroll
      for (int panel = 0; panel < TileKV::kPanels; ++panel) {
        tma_load_4d(smem.v[kv.stage] + panel * TileKV::kPanelBytes, &P.tma_v, v_full, panel * 64,
                    kv_row, head_k, b);
      }
      kv.advance();
    }
  }

  // ---- Consumers ----

  using Acc = float[1][kNT][4];    // (MMA_M = 1 per warp, MMA_N = kBlockN / 8, 4): S or P
  using PFrag = uint32_t[kPT][4];  // P as WGMMA A fragments, one per k16 step of P.V

  float acc_o[1][kDT][4];  // (MMA_M = 1 per warp, MMA_N = kHeadDim / 8, 4): this warp's O rows

  template <int N>
  __device__ __forceinline__ static float (&flat(float (&acc)[1][N][4]))
      [N * 4] { return *reinterpret_cast<float (*)[N * 4]>(&acc[0][0][0]); }

  // S (this warpgroup's 64 rows, kBlockN) = Q . K^T, issued and committed (not waited on).
  // desc_q: this warpgroup's rows of the Q tile (desc_k_major).
  __device__ __forceinline__ static void gemm_qk(Acc &s, uint64_t desc_q, uint32_t k_addr) {
    const uint64_t desc_k = desc_k_major(k_addr, 0);
    wgmma_fence();  // why: s was last read by the softmax; the wgmma overwrites it
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk) {
      wgmma_ss<Element, kBlockN, 0>(flat(s), desc_advance(desc_q, k_major_step<TileQ>(kk)),
                                    desc_advance(desc_k, k_major_step<TileKV>(kk)), kk > 0);
    }
    wgmma_commit();
  }

  // O (this warpgroup's rows, kHeadDim) += P . V, issued and committed (not waited on). The
  // tile's first P.V overwrites O (accumulate = false): O is never zeroed, nor rescaled before
  // it (2 x kDT x 4 instructions per thread and tile).
  __device__ __forceinline__ void gemm_pv(const PFrag &p, uint32_t v_addr, bool accumulate) {
    const uint64_t desc_v = desc_mn_major<TileKV>(v_addr);
    wgmma_fence();  // why: O was rescaled and P packed by ordinary instructions just before
#pragma unroll
    for (int kk = 0; kk < kPT; ++kk) {
      wgmma_rs<Element, kHeadDim, 1>(flat(acc_o), p[kk], desc_advance(desc_v, mn_major_step(kk)),
                                     kk > 0 || accumulate);
    }
    wgmma_commit();
  }

  // pack_p for row h (of this thread's two) only.
  __device__ __forceinline__ static void pack_p_row(PFrag &a, const Acc &p, int h) {
#pragma unroll
    for (int j = 0; j < kPT; ++j) {
      a[j][h] = pack2<Element>(p[0][2 * j][2 * h], p[0][2 * j][2 * h + 1]);
      a[j][2 + h] = pack2<Element>(p[0][2 * j + 1][2 * h], p[0][2 * j + 1][2 * h + 1]);
    }
  }

  // The S accumulator tiles of two adjacent n8 blocks are exactly one A fragment of P.V.
  __device__ __forceinline__ static void pack_p(PFrag &a, const Acc &p) {
#pragma unroll
    for (int j = 0; j < kPT; ++j) {
      a[j][0] = pack2<Element>(p[0][2 * j][0], p[0][2 * j][1]);
      a[j][1] = pack2<Element>(p[0][2 * j][2], p[0][2 * j][3]);
      a[j][2] = pack2<Element>(p[0][2 * j + 1][0], p[0][2 * j + 1][1]);
      a[j][3] = pack2<Element>(p[0][2 * j + 1][2], p[0][2 * j + 1][3]);
    }
  }

  // What the boundary mask of a tile needs, computed once per tile: the key blocks that every
  // row of the tile sees whole, and the visible keys of this thread's two rows. Derived per block
  // (the int64 window edges of both), the mask cost hd64 causal 512 246 instructions per warp and
  // boundary block beside 424 for the rest of an iteration. The three-consumer kernels (160
  // registers, where boundary blocks are 1-2 of a tile's 6-40) keep only the block range and
  // derive the rows' keys per boundary block: holding them cost 1.5-2% at hd64 causal 4k-16k.
  struct TileMask {
    static constexpr bool kKeepKeys = kConsumerWarpgroups < 3;
    const Mask &mask;      // what the keys derive from: the mask, the tile's rows and this
    const TileRows &rows;  // thread's first row
    int row0;
    KeyRange kept[1][2];  // (MMA_M = 1 per warp, rows h = 0, 1): the keys, where kKeepKeys
    BlockRange whole;     // key blocks that need no mask
    bool stored[2];       // whether this thread's rows are stored (kStaleMax's vote)

    __device__ __forceinline__ TileMask(const Mask &mask_, const TileRows &rows_, int row0_)
        : mask(mask_),
          rows(rows_),
          row0(row0_),
          whole(
              mask_.template unmasked_blocks<kBlockN>(rows_.first, rows_.first + rows_.positions)) {
      if constexpr (kKeepKeys) keys(kept);
      if constexpr (kStaleMax) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = row0_ + 8 * h;
          const int position = rows_.position(row);
          stored[h] = rows_.live(row) && position >= 0 && position < mask_.seqlen_q;
        }
      }
    }
    // The visible keys of this thread's two rows.
    __device__ __forceinline__ void keys(KeyRange (&k)[1][2]) const {
#pragma unroll
      for (int h = 0; h < 2; ++h) k[0][h] = mask.keys_of_row(rows.position(row0 + 8 * h));
    }
  };

  // Score mod and boundary mask (-inf where a row must not see a key) of key block n_block.
  __device__ __forceinline__ static void prepare_scores(Acc &s, const ScoreMod &mod,
                                                        const TileMask &tm, int n_block) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) s[0][nt][i] = mod(s[0][nt][i]);
    if (n_block < tm.whole.begin || n_block >= tm.whole.end) {
      auto mask = [&](const KeyRange(&keys)[1][2]) {
        // Blocks from whole.begin on lie right of every row's left edge (causal, or no window:
        // every block).
        const int first_key = n_block * kBlockN + 2 * (threadIdx.x % 4);
        if (!Mask::kIsWindow || n_block >= tm.whole.begin) {
          mask_fragment_keys<true>(s, keys, first_key);
        } else {
          mask_fragment_keys(s, keys, first_key);
        }
      };
      if constexpr (TileMask::kKeepKeys) {
        mask(tm.kept);
      } else {
        KeyRange keys[1][2];
        tm.keys(keys);
        mask(keys);
      }
    }
  }

  // prepare_scores, then the online softmax: S becomes P, and `correction` the factor O must
  // be rescaled by before P.V adds to it.
  __device__ __forceinline__ static void softmax_step(Acc &s, OnlineSoftmax<1> &softmax,
                                                      float (&correction)[2], const ScoreMod &mod,
                                                      const TileMask &tm, int n_block) {
    prepare_scores(s, mod, tm, n_block);
    softmax.update_scores(s, correction);
  }

  // A consumer skips the key blocks of its tile that its own 64 rows do not see (see
  // warpgroup_blocks), where the key blocks do not line up with the tile: under a causal mask
  // the last block of a tile then lies wholly above the diagonal for the first warpgroups' rows
  // (a 192 x 128 tile at hd64: one or two of its 6-18 warpgroup-blocks, a 128 x 64 tile at
  // hd256: 1 of 2-13 below seqlen_q 2048, when measured). With block_n a multiple of
  // block_m that never happens when seqlen_q = seqlen_k, and the check would cost every tile ~40
  // instructions per thread (2% at hd64 causal 512-1k). Measured on an H100 (bf16): hd64 causal
  // +2-3% at 2k-8k, hd256 causal +1% at 1k-8k.
  static constexpr bool kSkipUnseenBlocks = Mask::kIsWindow && kBlockN % kBlockM != 0;

  // The tile's key blocks that this warpgroup's 64 rows (from wg_begin) see; rows past the
  // sequence see none. At least one block, so that rows that see no key at all still come out
  // as O = 0, LSE = -inf. Rows before 0 (the first of end-aligned tiles, FwdKernel::Work) are
  // not tested for: they see no key but where seqlen_k > seqlen_q, and then walk a few blocks
  // of the lightest tile for nothing.
  // wg_begin, wg_end: the positions of the warpgroup's live rows (none, wg_end <= wg_begin,
  // where a GQA-packed tile's live rows end before the warpgroup's).
  __device__ __forceinline__ static BlockRange warpgroup_blocks(const Mask &mask, int wg_begin,
                                                                int wg_end, BlockRange tile) {
    BlockRange mine = tile;
    if (wg_begin >= mask.seqlen_q || wg_end <= wg_begin) {
      mine.end = tile.begin + 1;
    } else {
      const BlockRange rows = mask.template blocks_of_rows<kBlockN>(wg_begin, wg_end);
      if (rows.begin > mine.begin) mine.begin = rows.begin;
      if (rows.end < mine.end) mine.end = rows.end;
      if (mine.end <= mine.begin) mine = {tile.begin, tile.begin + 1};
    }
    return mine;
  }

  // Passes over `count` key blocks that this warpgroup does not see, keeping in step with the
  // other consumers: it takes (and passes on) the GEMM turn it would have had for each, and
  // releases each block's K and V buffers once they have landed (a release before the load
  // would count towards the buffer's previous use, which other consumers may still be reading).
  __device__ __forceinline__ static void skip_blocks(SharedStorage &smem, const Turn &turn,
                                                     PipelineState<kStages> &kv, int count) {
    for (int i = 0; i < count; ++i) {
      turn.wait_turn();
      turn.pass_turn();
      smem.k_ring.consumer_wait(kv);
      smem.k_ring.consumer_release(kv);
      smem.v_ring.consumer_wait(kv);
      smem.v_ring.consumer_release(kv);
      kv.advance();
    }
  }

  // At a tile's first key block every consumer has issued its Q.K^T within a few cycles of the
  // others', and their first softmaxes (not overlapped with a GEMM of their own) would share the
  // MUFU pipe while the tensor cores idle. Where the GEMMs are short and the tiles few (hd64's
  // 128-row kernels) consumer c waits for consumer c - 1's first softmax instead: c - 1 then
  // issues its next GEMMs (or its tile's only P.V) under c's exponentials, and the consumers
  // leave the tile start half a softmax apart. Named barriers kStaggerBarrier + c - 1 (after the
  // ping-pong's and the TMA-store epilogue's). Measured on an H100 (bf16, same runs, 5-7 rounds,
  // twice): causal +0.8-1.2% at seqlen 512, +0-1% at 384, +0.9% at 600; no mask +1% at 256.
  // Not in the 192-row (long_q) kernels: causal -0.5% at 2k and -0.7% at 8k; without a mask
  // +1-1.7% at 512-2k but 16k -2.4% and +0.2% in two runs and 0.99x FA3 in a grid run. hd128:
  // within 0.3%.
  // The barrier has one phase in flight at a time, which the ping-pong turns guarantee:
  // consumer c - 1 reaches its next tile's arrival only through turns that c passes after its
  // wait here. Without them (IOATTN_SM90_NO_PINGPONG) c - 1 could arrive twice first.
  static constexpr bool kStaggerFirstSoftmax = kHeadDim <= 64 && !kLongQ && kPingPong;
  static constexpr int kStaggerBarrier = 1 + 2 * kConsumerWarpgroups;
  static_assert(kStaggerBarrier + kConsumerWarpgroups - 2 < 16, "16 named barriers per CTA");

  // This thread's first row of a tile (its second is row0 + 8).
  __device__ __forceinline__ static int thread_row0(int consumer) {
    return consumer * kWgRows + (threadIdx.x / 32) % 4 * 16 + (threadIdx.x % 32) / 4;
  }

  // One tile for consumer warpgroup `consumer`: on return acc_o holds its normalized O rows
  // and lse their log-sum-exp (this thread's rows, thread_row0 and + 8). reversed: the key
  // blocks come last to first (load).
  __device__ __forceinline__ void mma(const FwdParams &p, SharedStorage &smem, const Mask &mask,
                                      const TileRows &rows, BlockRange blocks, bool reversed,
                                      int consumer, const Turn &turn, uint32_t &q_phase,
                                      PipelineState<kStages> &kv, float (&lse)[2]) {
    const int row0 = thread_row0(consumer);
    const ScoreMod mod(p);
    const TileMask tm(mask, rows, row0);
    OnlineSoftmax<1> softmax(p.score_scale_log2);
    const uint64_t desc_q = desc_k_major(smem_addr(smem.q), consumer * kWgRows);

    const BlockRange mine =
        kSkipUnseenBlocks ? warpgroup_blocks(mask, rows.position(consumer * kWgRows),
                                             rows.end_of(consumer * kWgRows + kWgRows), blocks)
                          : blocks;
    // The blocks before this warpgroup's, in the order they come, and those after them.
    const bool down = kReversible && reversed;
    const int skip_before = down ? blocks.end - mine.end : mine.begin - blocks.begin;
    const int skip_after = down ? mine.begin - blocks.begin : blocks.end - mine.end;
    skip_blocks(smem, turn, kv, skip_before);
    const int n_iters = mine.end - mine.begin;
    const int step = down ? -1 : 1;
    int n_block = down ? mine.end - 1 : mine.begin;
    Acc s;
    PFrag pf;
    float correction[2];
    // Some row of this warp moved its max (new_row_max's kLazy); not before the first P.V, which
    // writes O.
    bool rescale_o = false;

    mbar_wait(&smem.q_full, q_phase);
    q_phase ^= 1;
    smem.k_ring.consumer_wait(kv);
    turn.wait_turn();
    gemm_qk(s, desc_q, smem_addr(smem.k[kv.stage]));
    turn.pass_turn();
    wgmma_wait<0>();
    fence_operand(flat(s));
    smem.k_ring.consumer_release(kv);
    // why: the Q buffer is refilled for the next tile only after every consumer thread's last
    // Q.K^T has retired.
    if (n_iters == 1) mbar_arrive(&smem.q_empty);
    // why: the first softmaxes run one consumer after the other (kStaggerFirstSoftmax). Every
    // consumer reaches this point exactly once per tile, and the turns keep consumer c - 1 from
    // arriving again before c has waited, so the arrivals and waits pair up.
    if constexpr (kStaggerFirstSoftmax) {
      if (consumer > 0) bar_sync(kStaggerBarrier + consumer - 1, 2 * 128);
    }
    softmax_step(s, softmax, correction, mod, tm, n_block);
    if constexpr (kStaggerFirstSoftmax) {
      if (consumer < kConsumerWarpgroups - 1) bar_arrive(kStaggerBarrier + consumer, 2 * 128);
    }
    pack_p(pf, s);

    for (int it = 1; it < n_iters; ++it) {
      const PipelineState<kStages> prev = kv;  // the block whose P is in pf
      kv.advance();
      n_block += step;
      smem.k_ring.consumer_wait(kv);
      if constexpr (kIntraWarpgroupOverlap) {
        turn.wait_turn();
        gemm_qk(s, desc_q, smem_addr(smem.k[kv.stage]));
        // O moves to the running max P(prev) was computed with while S runs, off the path
        // from S to the next GEMMs.
        if (rescale_o) OnlineSoftmax<1>::rescale(acc_o, correction);
        smem.v_ring.consumer_wait(prev);
        gemm_pv(pf, smem_addr(smem.v[prev.stage]), it > 1);
        turn.pass_turn();
        wgmma_wait<1>();  // S of this block is done; P.V of the previous one may still run
        fence_operand(flat(s));
        smem.k_ring.consumer_release(kv);
        if (it == n_iters - 1) mbar_arrive(&smem.q_empty);
        prepare_scores(s, mod, tm, n_block);
        // The softmax of row 0 (of this thread's two) runs under P(prev).V, that of row 1
        // after its wait (both after it in the row-by-row stale path, kRows, which has no
        // registers for row 0's p across the wait), beside the packing of P (which overwrites
        // P.V's operand): the
        // conversions then fill the gaps between row 1's exponentials (8 cycles apart on the
        // MUFU pipe) instead of queueing behind them. Measured on an H100, bf16, seqlen
        // 2k-16k, against the whole softmax above the wait: +2-4% at hd128 (causal or not),
        // no change at hd64 and hd256.
        float (&anchor)[2] = smem.wait_anchor[threadIdx.x / 32 - 4];
        // Waits for P(prev).V and frees its V buffer; returns a 0 loaded after the wait, which
        // the exponent offsets of the rows that must stay below it add (see load_after_wait).
        auto finish_pv = [&]() {
          order_before_wait(smem_addr(&anchor[1]), 0.f);
          wgmma_wait<0>();
          fence_operand(flat(acc_o));
          smem.v_ring.consumer_release(prev);
          return load_after_wait(smem_addr(&anchor[1]));
        };
        if constexpr (kStaleMax && !kStalePairs) {
          // One row at a time after the P.V wait (fwd_stale_max's kRows): the exact path, where
          // a row's vote fails, from its scores, which stay in s; p holds the result either way.
          Acc p;
          bool moved[2];
          auto row = [&](int r, float zero) {
            const float sum = softmax.exponentiate_stale(s, p, r, zero);
            moved[r] = !softmax.accept_stale_row(sum, tm.stored[r], r);
            correction[r] = 1.f;
            if (moved[r]) {
              const float m = softmax.template new_row_max<kLazyRescale>(s, r, correction[r]);
              softmax.exponentiate_row(s, r, m, correction[r]);
#pragma unroll
              for (int nt = 0; nt < kNT; ++nt) {
                p[0][nt][2 * r] = s[0][nt][2 * r];
                p[0][nt][2 * r + 1] = s[0][nt][2 * r + 1];
              }
            }
          };
          // why: the 0 loaded after the wait, which both rows' exponent offsets add, keeps their
          // exponentials below it (their p live across it would not fit in registers).
          const float zero = finish_pv();
          row(0, zero);
          pack_p_row(pf, p, 0);
          row(1, zero);
          pack_p_row(pf, p, 1);
          rescale_o = moved[0] || moved[1];
        } else if constexpr (kStaleMax) {
          // Both rows, row 0 under the P.V (kPairs); the exact path only where accept_stale
          // declines, from the scores, which stay in s until then.
          Acc p;
          float sums[2];
          sums[0] = softmax.exponentiate_stale(s, p, 0, 0.f);
          // why: as below, the store keeps row 0 above the wait and the load row 1 below it.
          order_before_wait(smem_addr(&anchor[0]), sums[0]);
          sums[1] = softmax.exponentiate_stale(s, p, 1, finish_pv());
          // Packed before the vote, so that the conversions fill the exponentials' gaps.
          pack_p(pf, p);
          rescale_o = !softmax.accept_stale(sums, tm.stored);
          if (rescale_o) {
            softmax.template update_scores<kLazyRescale>(s, correction);
            pack_p(pf, s);
          } else {
            correction[0] = correction[1] = 1.f;
          }
        } else {
          const float m_scaled0 = softmax.template new_row_max<kLazyRescale>(s, 0, correction[0]);
          softmax.exponentiate_row(s, 0, m_scaled0, correction[0]);
          const float m_scaled1 = softmax.template new_row_max<kLazyRescale>(s, 1, correction[1]);
          rescale_o = !kLazyRescale || OnlineSoftmax<1>::any_moved(correction);
          // why: the store keeps row 0 above the wait, the load of the stored 0 (which row 1's
          // exponent offset adds) keeps row 1 below it (see order_before_wait, load_after_wait).
          order_before_wait(smem_addr(&anchor[0]), softmax.row_sum[0]);
          softmax.exponentiate_row(s, 1, m_scaled1 + finish_pv(), correction[1]);
          pack_p(pf, s);
        }
      } else {
        smem.v_ring.consumer_wait(prev);
        turn.wait_turn();
        if (rescale_o) OnlineSoftmax<1>::rescale(acc_o, correction);
        gemm_pv(pf, smem_addr(smem.v[prev.stage]), it > 1);
        gemm_qk(s, desc_q, smem_addr(smem.k[kv.stage]));
        turn.pass_turn();
        wgmma_wait<0>();
        fence_operand(flat(s));
        fence_operand(flat(acc_o));
        smem.k_ring.consumer_release(kv);
        smem.v_ring.consumer_release(prev);
        if (it == n_iters - 1) mbar_arrive(&smem.q_empty);
        softmax_step(s, softmax, correction, mod, tm, n_block);
        rescale_o = true;  // eager: every block moves O to the new max
        pack_p(pf, s);
      }
    }

    smem.v_ring.consumer_wait(kv);
    turn.wait_turn();
    if (rescale_o) OnlineSoftmax<1>::rescale(acc_o, correction);
    gemm_pv(pf, smem_addr(smem.v[kv.stage]), n_iters > 1);
    turn.pass_turn();
    wgmma_wait<0>();
    fence_operand(flat(acc_o));
    smem.v_ring.consumer_release(kv);
    kv.advance();
    skip_blocks(smem, turn, kv, skip_after);
    softmax.finalize(acc_o, lse);
  }
};

}  // namespace ioattn::sm90
