// The backward's fp32 dQ accumulator (BwdParams::dq_accum) in fragment order.
//
// Every (query block, query head) owns one tile of kBlockM x kHeadDim floats. The dQ GEMM's
// warps hold their results in mma C fragments (each lane: 2 adjacent columns of rows lane/4
// and lane/4 + 8 of every m16n8 tile), and every key block of the backward adds into the same
// tile. Instead of row-major order, where one warp-wide 8-byte atomic would touch 8 rows (8
// cache lines, 32 bytes each), the tile is stored in the order of the fragments, in units of
// kVec floats (bwd_dq_atomic_width: a row pair, or a whole fragment, both rows): unit u of lane
// l of warp w lives at ((u * kNWarps + w) * 32 + l) * kVec, so each warp-wide atomic covers
// 32 kVec contiguous floats. The postprocess (sm80/bwd_aux.cuh) maps the units back to (row,
// column) with the same function.
//
// Tiles past a sequence's last query rows (and columns past the caller's head dim) are padding
// that the postprocess never reads; so the kernel's atomics need no bounds checks. Tile index of
// query block m of sequence b (BwdParams::acc_tile_stride apart, heads acc_head_stride apart
// within one):
//   dense:  b * ceil(seqlen_q / kBlockM) + m
//   varlen: floor(cu_seqlens_q[b] / kBlockM) + b + m   (disjoint: each sequence gets at most
//           one tile more than its rows fill, and floor(total_q / kBlockM) + batch tiles in all)
#pragma once

#include "common/portable.h"
#include "common/seqlen.cuh"
#include "sm80/smem_tile.cuh"
#include "sm80/tile_config.h"

namespace ioattn::sm80 {

template <int kHeadDim, bool kSmallSmem>
struct DqAccumLayout {
  static constexpr BwdTileConfig kCfg = bwd_tile_config(kHeadDim, kSmallSmem);
  static constexpr int kBlockM = kCfg.block_m;
  static constexpr int kBlockN = kCfg.block_n;
  static constexpr int kNWarps = kCfg.warps_n * kCfg.warps_d;
  static constexpr int kTileElems = kBlockM * kHeadDim;
  using TileKV = SmemTile<kBlockN, kHeadDim>;  // K, the B operand of dQ = dS K

  // Warp (row group, way) of the dQ GEMM owns kMTiles m16 tiles of rows and a 1/kWays deal of
  // column pairs (TileKV::Dealt). Two m16 tiles where the columns deal evenly that way
  // and each warp still gets P >= 2 column pairs: a k16 step then loads 2 dS + P K fragments
  // for 4P mma instead of 1 + 2P (fewer loads once P >= 2; measured +1-2% at head dim 128).
  static constexpr int kWaysTwoTiles = kBlockM % 32 == 0 ? kNWarps / (kBlockM / 32) : 0;
  static constexpr bool kTwoTiles = kWaysTwoTiles > 0 && kNWarps % (kBlockM / 32) == 0 &&
                                    TileKV::kPairsPerSubRow % kWaysTwoTiles == 0 &&
                                    kHeadDim / 16 / kWaysTwoTiles >= 2;
  static constexpr int kMTiles = kTwoTiles ? 2 : 1;
  static constexpr int kRowGroups = kBlockM / (16 * kMTiles);
  static constexpr int kWays = kNWarps / kRowGroups;
  static_assert(kNWarps % kRowGroups == 0);
  using Dealt = typename TileKV::template Dealt<kWays>;
  static constexpr int kPairs = Dealt::kPairs;  // dealt 16-column pairs per warp
  // m16n8 C fragments (4 floats) per lane: (m16 tiles, column pairs, 2 n8 tiles), stored in
  // units of kVec floats.
  static constexpr int kFrags = kMTiles * kPairs * 2;
  static constexpr int kVec = bwd_dq_atomic_width(kHeadDim);
  static constexpr int kUnits = kFrags * 4 / kVec;  // per lane
  static_assert(kVec == 2 || kVec == 4);
  static_assert(kUnits * kNWarps * 32 * kVec == kTileElems, "the fragments cover the tile");

  __device__ __forceinline__ static int row_group(int warp) { return warp % kRowGroups; }
  __device__ __forceinline__ static int way(int warp) { return warp / kRowGroups; }

  // Fragment index of (m16 tile, column pair, n8 tile).
  __device__ __forceinline__ static constexpr int frag(int mt, int pr, int t) {
    return (mt * kPairs + pr) * 2 + t;
  }
  // Float offset, within a tile, of unit u of lane `lane` of warp `warp`. Fragment j is unit
  // j (kVec = 4), or units 2j (its row lane/4) and 2j + 1 (row lane/4 + 8).
  __device__ __forceinline__ static int offset(int u, int warp, int lane) {
    return ((u * kNWarps + warp) * 32 + lane) * kVec;
  }
  // The (row, column) of the tile where unit u of lane `lane` of warp `warp` starts: its
  // floats are columns col, col + 1 of row row (and, with kVec = 4, of row row + 8).
  __device__ __forceinline__ static void coords(int u, int warp, int lane, int &row, int &col) {
    const int j = kVec == 4 ? u : u / 2;
    const int h = kVec == 4 ? 0 : u % 2;
    const int t = j % 2;
    const int pr = (j / 2) % kPairs;
    const int mt = j / (2 * kPairs);
    row = (kMTiles * row_group(warp) + mt) * 16 + lane / 4 + 8 * h;
    col = Dealt::col(pr, way(warp)) + 8 * t + 2 * (lane % 4);
  }

  // Index of the tile of query block m_block of sequence `batch` (see the top of this file;
  // seqlen_q: the dense sequence length).
  __device__ __forceinline__ static int64_t tile(const SeqlenInfo &seq, int batch, int seqlen_q,
                                                 int m_block) {
    return seq.varlen ? seq.q_row_offset / kBlockM + batch + m_block
                      : int64_t(batch) * ((seqlen_q + kBlockM - 1) / kBlockM) + m_block;
  }
};

}  // namespace ioattn::sm80
