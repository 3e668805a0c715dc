// SM80 backward mainloop (FlashAttention-2's algorithm): one CTA owns kBlockN keys of one K/V
// head, keeps K and V in shared memory, and walks every query block that sees those keys, for
// every query head of the GQA group. Per query block (Q, dO double-buffered with cp.async):
//
//   S^T  = K Q^T,  dP^T = V dO^T                 (keys x queries)
//   P^T  = exp2(S^T * c - LSE * log2 e)          (recomputed from the forward's LSE)
//   dV  += P^T dO
//   dS^T = P^T o (dP^T - D) [o (1 - tanh^2)]     (D = rowsum(dO o O), from the preprocess)
//   dK  += dS^T Q
//   dQ  += dS K                                  (fp32 atomics)
//
// Warps: kWarpsN key groups of kWarpKeys = 16 kMT keys, kWarpsD warps per group. Computing
// the transposed scores puts keys on the mma M dimension, so P^T and dS^T come out of their
// GEMMs in the A-operand layout of dV and dK. The kWarpsD warps of a group split the queries
// of S^T and dP^T and the head dim of dK and dV (2 head_dim fp32 accumulators per key would
// not fit one warp's registers): their P^T and dS^T slices meet in shared memory, where dQ
// reads dS^T as well. dK and dV stay in fp32 registers for the whole loop (the GQA reduction
// over query heads happens there, deterministically).
#pragma once

#include "common/mask.cuh"
#include "common/params.h"
#include "common/portable.h"
#include "common/score_mod.cuh"
#include "common/seqlen.cuh"
#include "common/softmax.cuh"
#include "sm80/dq_accum.cuh"
#include "sm80/ptx.cuh"
#include "sm80/smem_tile.cuh"
#include "sm80/tile_config.h"
#include "sm80/tile_copy.cuh"

namespace ioattn::sm80 {

// kSmallSmem: the tiles for GPUs with less shared memory (tile_config.h).
template <class Element_, int kHeadDim_, class Mask_, class ScoreMod_, bool kSmallSmem>
struct MainloopBwd {
  using Element = Element_;
  using Mask = Mask_;
  using ScoreMod = ScoreMod_;
  static constexpr bool kSoftcap = !is_same_v<ScoreMod, NoSoftcap>;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr BwdTileConfig kCfg = bwd_tile_config(kHeadDim, kSmallSmem);
  static constexpr int kBlockN = kCfg.block_n;
  static constexpr int kBlockM = kCfg.block_m;
  static constexpr int kWarpsN = kCfg.warps_n;
  static constexpr int kWarpsD = kCfg.warps_d;
  static constexpr int kMT = kCfg.key_tiles;  // m16 tiles of keys per key group
  static constexpr int kWarpKeys = 16 * kMT;
  static constexpr int kNWarps = kWarpsN * kWarpsD;
  static constexpr int kNThreads = 32 * kNWarps;
  static constexpr int kMinBlocksPerSM = kCfg.min_blocks_per_sm;
  static constexpr int kQueriesW = kBlockM / kWarpsD;  // queries of a warp's S^T and dP^T
  static constexpr int kNT = kQueriesW / 8;    // n8 tiles of a warp's S^T rows (query columns)
  static constexpr int kMKW = kQueriesW / 16;  // k16 steps of those queries
  static constexpr int kKT = kHeadDim / 16;    // k16 steps of S^T = K Q^T and dP^T = V dO^T
  static constexpr int kMK = kBlockM / 16;     // k16 steps of dV += P^T dO and dK += dS^T Q
  static constexpr int kNK = kBlockN / 16;     // k16 steps of dQ = dS K
  static_assert(kBlockN == kWarpKeys * kWarpsN, "kWarpsN key groups of 16 kMT keys");
  static_assert(kQueriesW % 16 == 0, "a warp's queries must make whole k16 steps");
  static_assert(kNThreads >= 2 * kBlockM, "LSE and D of a query block: one thread per value");

  using TileKV = SmemTile<kBlockN, kHeadDim>;
  using TileQ = SmemTile<kBlockM, kHeadDim>;
  using TileDS = SmemTile<kBlockN, kBlockM>;  // dS^T: keys x queries
  // dK/dV: the kWarpsD warps of a key group share its head dim (dealt chunk pairs).
  using DealtKV = typename TileQ::template Dealt<kWarpsD>;
  static constexpr int kPairs = DealtKV::kPairs;  // 16-column pairs of dK/dV per warp
  // dQ (kBlockM x kHeadDim): warp (row group, way) owns kDQMTiles m16 tiles of rows and a
  // 1/kWaysDQ deal of columns, and adds them into dq_accum in fragment order.
  using DqLayout = DqAccumLayout<kHeadDim, kSmallSmem>;
  static_assert(DqLayout::kBlockM == kBlockM && DqLayout::kNWarps == kNWarps);
  static constexpr int kDQMTiles = DqLayout::kMTiles;
  static constexpr int kWaysDQ = DqLayout::kWays;
  using DealtDQ = typename DqLayout::Dealt;
  static constexpr int kPairsDQ = DqLayout::kPairs;

  static constexpr int kDS = 0;  // dS^T
  static constexpr int kPT = 1;  // P^T
  struct SharedStorage {
    Element k[TileKV::kElems];  // also stages dK in the epilogue
    Element v[TileKV::kElems];  // also stages dV
    Element q[2][TileQ::kElems];
    Element dout[2][TileQ::kElems];
    Element kq[2][TileDS::kElems];  // keys x queries: [kDS], [kPT]
    float lse_log2[2][kBlockM];     // LSE * log2(e); +inf for rows that must get P = 0
    float dsum[2][kBlockM];         // D = rowsum(dO o O); 0 past the sequence
  };
  static_assert(sizeof(SharedStorage) == bwd_smem_bytes(kHeadDim, kSmallSmem));

  // (MMA_M = kMT key tiles, pairs, 2 n8 tiles, 4): this warp's keys x its dK columns
  float acc_dk[kMT][kPairs][2][4];
  float acc_dv[kMT][kPairs][2][4];

  // Per-lane ldmatrix offsets (SmemTile::LaneOffsets), one set per access pattern: the A
  // operand K/V and the B operand Q/dO of S^T and dP^T, the transposed B operand Q/dO of dK and
  // dV (dealt columns), the transposed B operand K of dQ (dealt columns), the transposed A
  // operand dS of dQ (at the warp's first m16 tile of query rows), and the A operand P^T / dS^T
  // of dV / dK. kLaneRegs registers per pattern at most (tile_config.h).
  static constexpr int kLaneRegs = bwd_lane_regs(kHeadDim, Mask::kIsWindow);
  IOATTN_HOST_DEVICE static constexpr int lane_regs(int most) {
    return kLaneRegs < most ? kLaneRegs : most;
  }
  using OffKV = typename TileKV::template LaneOffsets<lane_regs(TileKV::kPairsPerSubRow), 2>;
  using OffKQ = typename TileDS::template LaneOffsets<lane_regs(TileDS::kPairsPerSubRow), 2>;
  using OffQ = typename TileQ::template LaneOffsets<lane_regs(TileQ::kPairsPerSubRow), 2>;
  static constexpr int kRegsQT = lane_regs(DealtKV::kPairsPerSub);
  static constexpr int kRegsKT = lane_regs(DealtDQ::kPairsPerSub);
  using OffQT = typename TileQ::template LaneOffsets<kRegsQT, DealtKV::kStep>;
  using OffKT = typename TileKV::template LaneOffsets<kRegsKT, DealtDQ::kStep>;
  // dS^T rows are keys, its chunk pairs queries: the m16 tiles of the warp's dQ rows are chunk
  // pairs kDQMTiles dq_row_group + t, t < kDQMTiles, so one register, XORed with 2 t.
  using OffDS = typename TileDS::template LaneOffsets<1, 2>;
  struct LaneAddressing {
    OffKV kv_a;
    OffKQ kq_a;
    OffQ q_b;
    OffQT q_bt;
    OffKT k_bt;
    OffDS ds_at;
    __device__ LaneAddressing(int lane, int way_kv, int way_dq, int dq_row_group)
        : kv_a(TileKV::template lane_offsets<OffKV::kRegs, OffKV::kStep>(lane % 16, lane / 16)),
          kq_a(TileDS::template lane_offsets<OffKQ::kRegs, OffKQ::kStep>(lane % 16, lane / 16)),
          q_b(TileQ::template lane_offsets<OffQ::kRegs, OffQ::kStep>(lane % 8 + (lane / 16) * 8,
                                                                     (lane / 8) % 2)),
          q_bt(DealtKV::template lane_offsets<kRegsQT>(lane % 16, lane / 16, way_kv)),
          k_bt(DealtDQ::template lane_offsets<kRegsKT>(lane % 16, lane / 16, way_dq)),
          ds_at{{TileDS::offset(lane % 8 + (lane / 16) * 8,
                                2 * kDQMTiles * dq_row_group + (lane / 8) % 2)}} {}
  };
  static_assert(kDQMTiles == 1 || kDQMTiles == 2);

  // (MMA_M = kMT key tiles, MMA_N = kQueriesW/8, 4): a warp's keys x queries accumulator
  using KeyQueryAcc = float[kMT][kNT][4];

  // acc = A (this warp's kWarpKeys rows of K or V) . B^T (B = this warp's kQueriesW rows of a
  // Q or dO tile, x kHeadDim)
  __device__ __forceinline__ static void gemm_keys_queries(KeyQueryAcc &acc, const Element *sA,
                                                           const Element *sB,
                                                           const LaneAddressing &la) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;
    const OffKV a_lane = TileKV::lane_addrs(sA, la.kv_a);
    const OffQ b_lane = TileQ::lane_addrs(sB, la.q_b);
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        ldmatrix_x4(a[mt], TileKV::at(a_lane, 16 * mt, 2 * kk));
      }
#pragma unroll
      for (int nt2 = 0; nt2 < kNT / 2; ++nt2) {
        uint32_t b[4];  // (b0, b1) of query n-tiles 2*nt2 and 2*nt2+1
        ldmatrix_x4(b, TileQ::at(b_lane, nt2 * 16, 2 * kk));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<Element>(acc[mt][2 * nt2], a[mt], b[0], b[1]);
          mma_16816<Element>(acc[mt][2 * nt2 + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // A fragments (MMA_M = kMT key tiles, MMA_K = kQueriesW/16, 4) of a warp's keys x queries
  // accumulator: two adjacent n8 tiles are exactly one m16k16 A fragment.
  using WarpKeyFrag = uint32_t[kMT][kMKW][4];
  __device__ __forceinline__ static void pack_a(WarpKeyFrag &a, const KeyQueryAcc &x) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int j = 0; j < kMKW; ++j) {
        a[mt][j][0] = pack2<Element>(x[mt][2 * j][0], x[mt][2 * j][1]);
        a[mt][j][1] = pack2<Element>(x[mt][2 * j][2], x[mt][2 * j][3]);
        a[mt][j][2] = pack2<Element>(x[mt][2 * j + 1][0], x[mt][2 * j + 1][1]);
        a[mt][j][3] = pack2<Element>(x[mt][2 * j + 1][2], x[mt][2 * j + 1][3]);
      }
  }

  // This warp's query slices of P^T and dS^T (A fragments) to their keys x queries tiles
  // (kq: both, [kPT] and [kDS]): rows [kWarpKeys wn, +kWarpKeys), query chunks [chunk0, +2 kMKW)
  // with chunk0 = 2 kMKW wd. One address register serves all stores (SmemTile::at): rows 16 mt
  // + 8 h and the other tile are immediates, chunk 2 j + t an XOR (its bits are below chunk0's).
  __device__ __forceinline__ static void store_p_ds(Element *kq, const WarpKeyFrag &a_p,
                                                    const WarpKeyFrag &a_ds, int wn, int wd,
                                                    int lane) {
    static_assert((kMKW & (kMKW - 1)) == 0, "a warp's query chunks start at a multiple of 2 kMKW");
    using Off = typename TileDS::template LaneOffsets<1, 1>;
    // (and within the chunk, the lane's 2 elements)
    const Off o{{TileDS::offset(wn * kWarpKeys + lane / 4, 2 * kMKW * wd) + 2 * (lane % 4)}};
    const Off lane_addr = TileDS::lane_addrs(kq, o);
    constexpr uint32_t kTileBytes = 2 * TileDS::kElems;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int j = 0; j < kMKW; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            const uint32_t addr = TileDS::at(lane_addr, 16 * mt + 8 * h, 2 * j + t);
            st_shared_b32(addr + kPT * kTileBytes, a_p[mt][j][2 * t + h]);
            st_shared_b32(addr + kDS * kTileBytes, a_ds[mt][j][2 * t + h]);
          }
  }

  // acc (this warp's keys x its dealt columns) += A (kWarpKeys keys x kBlockM, the warp's rows
  // of a keys x queries tile; sA: the first of them) . B (a Q or dO tile, kBlockM x kHeadDim).
  // A is loaded one k16 step at a time, so that only kMT of its fragments are ever live.
  __device__ __forceinline__ static void gemm_keys_dims(float (&acc)[kMT][kPairs][2][4],
                                                        const Element *sA, const Element *sB,
                                                        const LaneAddressing &la) {
    const OffKQ a_lane = TileDS::lane_addrs(sA, la.kq_a);
    const OffQT b_lane = TileQ::lane_addrs(sB, la.q_bt);
#pragma unroll
    for (int j = 0; j < kMK; ++j) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        ldmatrix_x4(a[mt], TileDS::at(a_lane, 16 * mt, 2 * j));
      }
#pragma unroll
      for (int pr = 0; pr < kPairs; ++pr) {
        uint32_t b[4];  // transposed: (b0, b1) of the pair's two n8 column tiles
        ldmatrix_x4_trans(b, TileQ::at(b_lane, j * 16, DealtKV::chunk(pr)));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<Element>(acc[mt][pr][0], a[mt], b[0], b[1]);
          mma_16816<Element>(acc[mt][pr][1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // Scores of (key, query) pairs the mask hides become -inf. Boundary blocks only. Element
  // (mt, nt, i) of a lane is key n0 + lane/4 + 16 mt + 8 (i/2) and query m_begin + 2 (lane%4)
  // + j, j = 8 nt + i%2. A key sees a range of queries (Mask::distances), so the 2 kNT
  // elements of one key row get their visibility as one bit mask (bit 2 nt + i%2), and each
  // element costs a bit test and a select. (Per-element range checks cost ~5 instructions each:
  // ptxas computes all 64 predicates up front and parks them in register bits.)
  __device__ __forceinline__ static void apply_mask(KeyQueryAcc &s, const Mask &mask, int m_begin,
                                                    int n0, int lane) {
    using RowBits = conditional_t<(2 * kNT < 32), uint32_t, uint64_t>;  // a bit per element
    static_assert(2 * kNT < 64, "one bit per element of a key row");
    const int key0 = n0 + lane / 4;
    const DistanceRange band = mask.distances(int64_t(key0) - (m_begin + 2 * (lane % 4)));
    const int keys_left = mask.seqlen_k - key0;  // keys key0 + [0, keys_left) exist
    // Elements with j < x: 2 per full n8 tile below x, plus min(x % 8, 2) of the next one.
    auto elems_below = [](int x) {
      x = x < 0 ? 0 : (x > 8 * kNT ? 8 * kNT : x);
      return 2 * (x / 8) + min(x % 8, 2);
    };
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int key = 16 * mt + 8 * h;
        // Visible: lo <= key - j < hi, i.e. j in [key - hi + 1, key - lo + 1), an interval
        // whose elements are bits [first, last); none for a key past the sequence. (lo < hi:
        // every window holds its diagonal, so first <= last.)
        const int first = elems_below(key - band.hi + 1);
        const int last = key < keys_left ? elems_below(key - band.lo + 1) : first;
        const RowBits visible = (RowBits(1) << last) - (RowBits(1) << first);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (!(visible & (RowBits(1) << (2 * nt + e)))) s[mt][nt][2 * h + e] = neg_inf();
          }
      }
  }

  // Walks query blocks [m_blocks.begin, m_blocks.end) of every query head of the group of
  // K/V head `head_k`, accumulating this CTA's dK and dV (unscaled) and adding dQ into the
  // dq_accum slice (see BwdParams::dq_splits). k/v point at row 0 of this sequence and K/V head.
  __device__ __forceinline__ void run(const BwdParams &p, SharedStorage &smem,
                                      const SeqlenInfo &seq, int batch, int head_k,
                                      const Element *k, const Element *v, int n_begin,
                                      const Mask &mask, BlockRange m_blocks, float *dq_accum) {
    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int lane = tid % 32;
    const int wn = warp % kWarpsN;  // key group: keys [kWarpKeys wn, +kWarpKeys) of the tile
    const int wd = warp / kWarpsN;  // its share of the dK/dV columns
    const int dq_rows =
        DqLayout::row_group(warp);           // dQ: rows [16 kDQMTiles dq_rows, +16 kDQMTiles)
    const int dq_way = DqLayout::way(warp);  // dQ: its share of the columns
    const int chunks_valid = p.head_dim / 8;
    const ScoreMod score_mod(p);
    const LaneAddressing la(lane, wd, dq_way, dq_rows);
    const Element *sK_warp = smem.k + wn * kWarpKeys * TileKV::kSubCols;
    const Element *sV_warp = smem.v + wn * kWarpKeys * TileKV::kSubCols;

#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int pr = 0; pr < kPairs; ++pr)
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc_dk[mt][pr][t][i] = acc_dv[mt][pr][t][i] = 0.f;

    // The iterations visit query blocks m_blocks.begin .. end - 1 of query head head_k * group,
    // then the same blocks of the next query head of the group, and so on: the query heads of a
    // group share this CTA's K/V, so dK/dV sum over them here.
    const int n_iters = (m_blocks.end - m_blocks.begin) * p.group_size;
    struct Block {
      int head;
      int m_begin;
      float *dq;  // this thread's first float of the block's dq_accum tile
    };
    // dq_accum tiles are linear in the block and the head, so the block's tile pointer runs
    // along with it: from the last block of a head to the first of the next is head_wrap.
    const int64_t head_wrap =
        p.acc_head_stride - int64_t(m_blocks.end - m_blocks.begin - 1) * p.acc_tile_stride;
    auto next_block = [&](Block b) {  // the block after b (no division in the loop)
      b.m_begin += kBlockM;
      if (b.m_begin == m_blocks.end * kBlockM) {
        b.m_begin = m_blocks.begin * kBlockM;
        ++b.head;
        b.dq += head_wrap;
      } else {
        b.dq += p.acc_tile_stride;
      }
      return b;
    };
    auto load_q_do = [&](int stage, Block b) {
      const Element *q =
          static_cast<const Element *>(p.q) +
          seq.q_like_offset(batch, b.head, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
      const Element *dout =
          static_cast<const Element *>(p.dout) +
          seq.q_like_offset(batch, b.head, p.do_batch_stride, p.do_row_stride, p.do_head_stride);
      const int rows = seq.seqlen_q - b.m_begin;
      load_tile<TileQ, kNThreads>(smem.q[stage], q + int64_t(b.m_begin) * p.q_row_stride,
                                  p.q_row_stride, rows, chunks_valid, tid);
      load_tile<TileQ, kNThreads>(smem.dout[stage], dout + int64_t(b.m_begin) * p.do_row_stride,
                                  p.do_row_stride, rows, chunks_valid, tid);
    };
    // Thread t < kBlockM loads the LSE of row t of block b, thread kBlockM + t its D; rows past
    // the sequence load nothing (LSE +inf, D 0). Only the load happens here: the value is first
    // used by write_row_stat, a whole iteration's GEMMs later, which hides its latency.
    auto load_row_stat = [&](Block b) {
      const int row = b.m_begin + tid % kBlockM;
      const bool is_lse = tid < kBlockM;
      float value = is_lse ? -neg_inf() : 0.f;
      if (tid < 2 * kBlockM && row < seq.seqlen_q) {
        value = is_lse ? p.lse[seq.lse_offset(p, batch, b.head) + row]
                       : p.dsum[seq.row_stat_offset(batch, b.head, p.dsum_batch_stride,
                                                    p.dsum_head_stride) +
                                row];
      }
      return value;
    };
    // Stores what load_row_stat loaded, the LSE as LSE * log2(e). Rows that saw no key (LSE =
    // -inf) and rows past the sequence get +inf there, so that their P is exactly 0 (their dO
    // rows are zero-filled, so D = 0 there).
    auto write_row_stat = [&](int stage, float value) {
      if (tid < kBlockM) {
        smem.lse_log2[stage][tid] = value == neg_inf() ? -neg_inf() : value * kLog2e;
      } else if (tid < 2 * kBlockM) {
        smem.dsum[stage][tid - kBlockM] = value;
      }
    };

    // Prologue: K, V and the first Q/dO block in one cp.async group; the first LSE/D directly.
    const int rows_k = seq.seqlen_k - n_begin;
    load_tile<TileKV, kNThreads>(smem.k, k + int64_t(n_begin) * p.k_row_stride, p.k_row_stride,
                                 rows_k, chunks_valid, tid);
    load_tile<TileKV, kNThreads>(smem.v, v + int64_t(n_begin) * p.v_row_stride, p.v_row_stride,
                                 rows_k, chunks_valid, tid);
    Block blk{head_k * p.group_size, m_blocks.begin * kBlockM, nullptr};
    blk.dq = dq_accum + DqLayout::tile(seq, batch, p.seqlen_q, m_blocks.begin) * p.acc_tile_stride +
             int64_t(blk.head) * p.acc_head_stride + DqLayout::offset(0, warp, lane);
    load_q_do(0, blk);
    cp_async_commit();
    write_row_stat(0, load_row_stat(blk));

    for (int it = 0; it < n_iters; ++it) {
      const int stage = it % 2;
      const Block next = next_block(blk);
      // In flight: Q/dO(it) (with K and V on the first iteration).
      cp_async_wait<0>();
      // Barrier: (1) Q/dO(it) and LSE/D(it), written by all threads, are visible to all;
      // (2) every warp has finished iteration it-1 (its dQ GEMM read dS^T, and Q/dO of
      // the other stage), so dS^T and the other stage may be overwritten.
      __syncthreads();
      float next_stat = 0.f;
      if (it + 1 < n_iters) {
        load_q_do(1 - stage, next);  // lands under this iteration's five GEMMs
        cp_async_commit();
        next_stat = load_row_stat(next);  // its latency, too
      }

      const Element *sQ = smem.q[stage];
      const Element *sDO = smem.dout[stage];
      // This warp's queries of S^T and dP^T: [q0, q0 + kQueriesW) of the block.
      const int q0 = wd * kQueriesW;
      KeyQueryAcc acc_s;   // S^T, then P^T
      KeyQueryAcc acc_dp;  // dP^T, then dS^T
      gemm_keys_queries(acc_s, opaque(sK_warp), opaque(sQ + q0 * TileQ::kSubCols), la);
      gemm_keys_queries(acc_dp, opaque(sV_warp), opaque(sDO + q0 * TileQ::kSubCols), la);

      // Score mod, and dP^T - D with the softcap's chain rule folded in (dS^T = P^T o that),
      // so that no third (keys x queries) array is ever live.
      const float *s_lse = smem.lse_log2[stage] + q0;
      const float *s_dsum = smem.dsum[stage] + q0;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const float2 d = *reinterpret_cast<const float2 *>(s_dsum + nt * 8 + 2 * (lane % 4));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float t = score_mod(acc_s[mt][nt][i]);
            float dp = acc_dp[mt][nt][i] - (i % 2 == 0 ? d.x : d.y);
            if constexpr (kSoftcap) dp *= fmaf(-t, t, 1.f);  // d tanh = 1 - tanh^2
            acc_dp[mt][nt][i] = dp;
            acc_s[mt][nt][i] = t;
          }
      }
      const int n0 = n_begin + wn * kWarpKeys;
      if (mask.template block_needs_mask<kBlockN>(n_begin / kBlockN, blk.m_begin,
                                                  blk.m_begin + kBlockM)) {
        apply_mask(acc_s, mask, blk.m_begin + q0, n0, lane);
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const float2 lse = *reinterpret_cast<const float2 *>(s_lse + nt * 8 + 2 * (lane % 4));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float l = i % 2 == 0 ? lse.x : lse.y;
            const float p_t = exp2_approx(fmaf(acc_s[mt][nt][i], p.score_scale_log2, -l));  // P^T
            acc_s[mt][nt][i] = p_t;
            acc_dp[mt][nt][i] *= p_t;  // dS^T
          }
      }
      WarpKeyFrag a_p, a_ds;
      pack_a(a_p, acc_s);
      pack_a(a_ds, acc_dp);
      if (it + 1 < n_iters) write_row_stat(1 - stage, next_stat);
      store_p_ds(opaque(smem.kq[0]), a_p, a_ds, wn, wd, lane);
      // Barrier: P^T and dS^T, whose query slices come from different warps, are complete
      // for dV, dK and dQ alike.
      __syncthreads();
      const int key_rows = wn * kWarpKeys * TileDS::kSubCols;
      gemm_keys_dims(acc_dv, opaque(smem.kq[kPT] + key_rows), opaque(sDO), la);  // dV += P^T dO
      gemm_keys_dims(acc_dk, opaque(smem.kq[kDS] + key_rows), opaque(sQ), la);   // dK += dS^T Q
      gemm_dq(opaque(smem.kq[kDS]), opaque(smem.k), la, blk.dq);
      blk = next;
    }
  }

  // dQ (kBlockM x kHeadDim) += dS (kBlockM x kBlockN) . K (kBlockN x kHeadDim) for one query
  // block, added to its dq_accum tile with fp32 atomics (other CTAs add the other key blocks,
  // or, in deterministic mode, this same thread does, later). Warp (dq_rows, dq_way) computes
  // 16 kDQMTiles rows and its dealt column pairs, the same ones for every key block; each dS
  // fragment is loaded once for all its columns, each K fragment once for all its rows.
  __device__ __forceinline__ static void gemm_dq(const Element *sDS, const Element *sK,
                                                 const LaneAddressing &la, float *dq) {
    float acc[kDQMTiles][kPairsDQ][2][4];  // (m16 tiles, pairs, 2 n8 tiles, 4)
#pragma unroll
    for (int mt = 0; mt < kDQMTiles; ++mt)
#pragma unroll
      for (int pr = 0; pr < kPairsDQ; ++pr)
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][pr][t][e] = 0.f;
    const OffDS a_lane = TileDS::lane_addrs(sDS, la.ds_at);
    const OffKT b_lane = TileKV::lane_addrs(sK, la.k_bt);
#pragma unroll
    for (int kk = 0; kk < kNK; ++kk) {
      uint32_t a[kDQMTiles][4];  // dS (16 queries x 16 keys) per m16 tile, out of dS^T
#pragma unroll
      for (int mt = 0; mt < kDQMTiles; ++mt) {
        ldmatrix_x4_trans(a[mt], TileDS::at(a_lane, kk * 16, 2 * mt));
      }
#pragma unroll
      for (int pr = 0; pr < kPairsDQ; ++pr) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, TileKV::at(b_lane, kk * 16, DealtDQ::chunk(pr)));
#pragma unroll
        for (int mt = 0; mt < kDQMTiles; ++mt) {
          mma_16816<Element>(acc[mt][pr][0], a[mt], b[0], b[1]);
          mma_16816<Element>(acc[mt][pr][1], a[mt], b[2], b[3]);
        }
      }
    }
    // Into this query block's tile of dq_accum (dq: the lane's first float), in fragment order
    // (sm80/dq_accum.cuh): each fragment a fixed offset from the lane's first, and no bounds
    // checks (padding).
#pragma unroll
    for (int mt = 0; mt < kDQMTiles; ++mt)
#pragma unroll
      for (int pr = 0; pr < kPairsDQ; ++pr)
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          const int j = DqLayout::frag(mt, pr, t);
          if constexpr (DqLayout::kVec == 4) {
            atomic_add4(dq + DqLayout::offset(j, 0, 0), acc[mt][pr][t]);
          } else {
            atomic_add2(dq + DqLayout::offset(2 * j, 0, 0), acc[mt][pr][t][0], acc[mt][pr][t][1]);
            atomic_add2(dq + DqLayout::offset(2 * j + 1, 0, 0), acc[mt][pr][t][2],
                        acc[mt][pr][t][3]);
          }
        }
  }
};

}  // namespace ioattn::sm80
