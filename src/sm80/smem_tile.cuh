// Swizzled shared-memory layout of a (kRows, kCols) tile of 16-bit elements.
//
// The tile is stored as kCols/kSubCols column blocks, each (kRows, kSubCols) row-major with
// kSubCols = 64 elements (128-byte rows) when kCols % 64 == 0, else 32 (64-byte rows, e.g.
// head dim 96). Within a row, 16-byte chunks are XOR-swizzled by the row index so that
//   - a warp's cp.async writes of consecutive chunks, and
//   - an ldmatrix read of 8 consecutive rows at one chunk column
// both touch 32 distinct banks:
//   128-byte rows: chunk ^= row % 8          (8 rows -> 8 distinct 16-byte bank groups)
//   64-byte rows:  chunk ^= (row / 2) % 4    (even rows use banks 0-15, odd rows 16-31)
#pragma once

#include "sm80/ptx.cuh"

namespace ioattn::sm80 {

template <int kRows_, int kCols_>
struct SmemTile {
  static constexpr int kRows = kRows_;
  static constexpr int kCols = kCols_;
  static constexpr int kSubCols = kCols % 64 == 0 ? 64 : 32;
  static constexpr int kChunksPerSubRow = kSubCols / 8;
  static constexpr int kSubTiles = kCols / kSubCols;
  static constexpr int kChunksPerRow = kCols / 8;
  static constexpr int kElems = kRows * kCols;
  static_assert(kCols % 32 == 0, "tile columns must be a multiple of 32 elements");
  static_assert(kRows % 8 == 0, "tile rows must be a multiple of 8");

  __device__ __forceinline__ static int swizzle(int row) {
    return kChunksPerSubRow == 8 ? (row % 8) : ((row / 2) % 4);
  }

  // Element offset of 16-byte chunk `chunk` (0 .. kCols/8-1) of row `row`.
  __device__ __forceinline__ static int offset(int row, int chunk) {
    const int sub = chunk / kChunksPerSubRow;
    const int c = chunk % kChunksPerSubRow;
    return (sub * kRows + row) * kSubCols + (c ^ swizzle(row)) * 8;
  }

  // Fast addressing for the unrolled fragment loops, where each lane touches row (row0 +
  // lane_row) and chunk (chunk0 + lane_chunk), row0 and chunk0 known at compile time and row0 %
  // 8 == 0 (so the swizzle is the lane row's). An access pattern keeps kRegs registers per lane
  // (LaneOffsets): register r holds the lane's offset at chunk0 = kStep r. Every other chunk0 =
  // kStep r + x, x a multiple of kStep kRegs, is one XOR away from register r:
  //   (lane_chunk + kStep r + x) ^ swizzle = ((lane_chunk + kStep r) ^ swizzle) ^ x
  // as long as lane_chunk, kStep r and x share no set bit within the sub-row (kStep and kRegs
  // powers of two, lane_chunk % kChunksPerSubRow below kStep or, with kRegs = 1, any chunk whose
  // bits lie above chunk0's). So an address is an XOR and an immediate, and kRegs trades
  // loop-invariant registers for nothing in the instruction count: the register allocation
  // differs, and each kernel takes the kRegs measured fastest (tile_config.h). The XOR acts on
  // the address itself, so a tile must start at a multiple of its row size in shared memory:
  // the tiles are 512-byte multiples, and the kernels' shared memory is __align__(128).
  static constexpr int kRowBytes = 2 * kSubCols;
  static_assert(kElems * 2 % 128 == 0, "tiles keep their successors 128-byte aligned");

  template <int kRegs_, int kStep_>
  struct LaneOffsets {
    static constexpr int kRegs = kRegs_;
    static constexpr int kStep = kStep_;
    static_assert(kRegs > 0 && (kRegs & (kRegs - 1)) == 0 && kStep > 0 &&
                      (kStep & (kStep - 1)) == 0 && kRegs * kStep <= kChunksPerSubRow,
                  "registers of an access pattern: powers of two within a sub-row");
    int v[kRegs];  // element offsets in the tile (lane_offsets) or addresses (lane_addrs)
  };
  // The pattern's registers: element offsets in the tile of (lane_row, lane_chunk + kStep r),
  // lane_chunk < kStep. (A one-register pattern whose lane chunk lies elsewhere takes
  // {offset(lane_row, lane_chunk)}.)
  template <int kRegs, int kStep>
  __device__ __forceinline__ static LaneOffsets<kRegs, kStep> lane_offsets(int lane_row,
                                                                           int lane_chunk) {
    LaneOffsets<kRegs, kStep> o;
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      o.v[r] = lane_row * kSubCols + ((kStep * r + lane_chunk) ^ swizzle(lane_row)) * 8;
    }
    return o;
  }
  // The same as shared-memory addresses in the tile at `tile`: one add per register.
  template <int kRegs, int kStep>
  __device__ __forceinline__ static LaneOffsets<kRegs, kStep> lane_addrs(
      const void *tile, const LaneOffsets<kRegs, kStep> &o) {
    LaneOffsets<kRegs, kStep> a;
#pragma unroll
    for (int r = 0; r < kRegs; ++r) a.v[r] = smem_addr(tile) + 2 * o.v[r];
    return a;
  }
  // Address of the lane's (row0 + lane_row, chunk0 + lane_chunk), from lane_addrs.
  template <int kRegs, int kStep>
  __device__ __forceinline__ static uint32_t at(const LaneOffsets<kRegs, kStep> &a, int row0,
                                                int chunk0) {
    const int c = chunk0 % kChunksPerSubRow;
    const int r = (c / kStep) % kRegs;
    return (a.v[r] ^ uint32_t(16 * (c - kStep * r))) +
           uint32_t(((chunk0 / kChunksPerSubRow) * kRows + row0) * kRowBytes);
  }

  // The same where the pattern keeps a register for every chunk pair (no XOR), as an offset
  // from the tile's generic pointer: the forward kernels' form. ptxas allocates their loops
  // better this way (the SASS is the one they had before LaneOffsets took kRegs); the
  // shared-memory addresses of lane_addrs measured slower there on an H100 (head dim 128
  // without a mask: -6..-7% with 4 registers, -9..-16% with 1 or 2).
  template <int kRegs, int kStep>
  __device__ __forceinline__ static uint32_t at(const void *tile,
                                                const LaneOffsets<kRegs, kStep> &o, int row0,
                                                int chunk0) {
    static_assert(kRegs * kStep == kChunksPerSubRow, "a register for every chunk pair");
    const int c = chunk0 % kChunksPerSubRow;
    return smem_addr(static_cast<const uint16_t *>(tile) +
                     (o.v[c / kStep] + ((chunk0 / kChunksPerSubRow) * kRows + row0) * kSubCols));
  }

  // The same for a warp that owns only some columns: the chunk pairs of every sub-tile are
  // dealt round-robin to kWays warps, and way `way` owns pairs way, way + kWays, ... of each
  // sub-tile (so a head dim split never needs a sub-tile boundary to fall between two warps).
  // Dealt pair (sub, i) is chunk pair sub * kChunksPerSubRow / 2 + i * kWays + way of the row:
  // the way's part, 2 way + lane_chunk, is the pattern's lane chunk, and its pairs are kStep =
  // 2 kWays chunks apart.
  static constexpr int kPairsPerSubRow = kChunksPerSubRow / 2;
  template <int kWays>
  struct Dealt {
    static_assert(kPairsPerSubRow % kWays == 0 && (kWays & (kWays - 1)) == 0,
                  "chunk pairs must deal evenly to a power-of-two number of ways");
    static constexpr int kPairsPerSub = kPairsPerSubRow / kWays;
    static constexpr int kPairs = kSubTiles * kPairsPerSub;  // dealt pairs per warp
    static constexpr int kStep = 2 * kWays;
    // First chunk of dealt pair `pair` (0 .. kPairs-1, sub-tile major), the way's part left out.
    __device__ __forceinline__ static constexpr int chunk(int pair) {
      return (pair / kPairsPerSub) * kChunksPerSubRow + kStep * (pair % kPairsPerSub);
    }
    template <int kRegs>
    __device__ __forceinline__ static LaneOffsets<kRegs, kStep> lane_offsets(int lane_row,
                                                                             int lane_chunk,
                                                                             int way) {
      return SmemTile::lane_offsets<kRegs, kStep>(lane_row, 2 * way + lane_chunk);
    }
    // First column (element) of dealt pair `pair` of way `way`.
    __device__ __forceinline__ static constexpr int col(int pair, int way) {
      return 8 * chunk(pair) + 16 * way;
    }
  };
};

// Hides a value's origin from the optimizer, so that addresses derived from it are computed
// where they are used instead of being hoisted out of the key loop into extra registers.
template <class T>
__device__ __forceinline__ T *opaque(T *p) {
  asm volatile("" : "+l"(p));
  return p;
}

}  // namespace ioattn::sm80
