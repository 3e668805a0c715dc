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

  // Fast addressing for access patterns where each lane touches row (row0 + lane_row) and chunk
  // (chunk0 + lane_chunk), with row0 % 8 == 0 and chunk0 even known at compile time: the
  // swizzle then depends only on the lane and on (chunk0 % kChunksPerSubRow) / 2, so a lane
  // needs kChunksPerSubRow / 2 registers and every address is one of them plus an immediate.
  // (Recomputing the XOR per access lets the compiler hoist one register per access out of
  // the key loop, which is what made the first version spill.)
  struct LaneOffsets {
    int v[kChunksPerSubRow / 2];
  };
  __device__ __forceinline__ static LaneOffsets lane_offsets(int lane_row, int lane_chunk) {
    LaneOffsets o;
#pragma unroll
    for (int i = 0; i < kChunksPerSubRow / 2; ++i) {
      o.v[i] = lane_row * kSubCols + ((2 * i + lane_chunk) ^ swizzle(lane_row)) * 8;
    }
    return o;
  }
  __device__ __forceinline__ static int offset(const LaneOffsets &o, int row0, int chunk0) {
    return o.v[(chunk0 % kChunksPerSubRow) / 2] +
           ((chunk0 / kChunksPerSubRow) * kRows + row0) * kSubCols;
  }

  // The same for a warp that owns only some columns: the chunk pairs of every sub-tile are
  // dealt round-robin to kWays warps, and way `way` owns pairs way, way + kWays, ... of each
  // sub-tile (so a head dim split never needs a sub-tile boundary to fall between two warps,
  // and the per-lane registers still cover every access of the warp). Dealt pair (sub, i) is
  // chunk pair sub * kChunksPerSubRow / 2 + i * kWays + way of the row.
  static constexpr int kPairsPerSubRow = kChunksPerSubRow / 2;
  template <int kWays>
  struct DealtOffsets {
    static_assert(kPairsPerSubRow % kWays == 0, "chunk pairs do not deal evenly");
    static constexpr int kPairsPerSub = kPairsPerSubRow / kWays;
    static constexpr int kPairs = kSubTiles * kPairsPerSub;  // dealt pairs per warp
    int v[kPairsPerSub];
  };
  template <int kWays>
  __device__ __forceinline__ static DealtOffsets<kWays> dealt_offsets(int lane_row, int lane_chunk,
                                                                      int way) {
    DealtOffsets<kWays> o;
#pragma unroll
    for (int i = 0; i < DealtOffsets<kWays>::kPairsPerSub; ++i) {
      o.v[i] = lane_row * kSubCols + ((2 * (i * kWays + way) + lane_chunk) ^ swizzle(lane_row)) * 8;
    }
    return o;
  }
  // Offset of dealt pair `pair` (0 .. kPairs-1, sub-tile major) at rows row0 + lane_row.
  template <int kWays>
  __device__ __forceinline__ static int offset(const DealtOffsets<kWays> &o, int row0, int pair) {
    constexpr int kPerSub = DealtOffsets<kWays>::kPairsPerSub;
    return o.v[pair % kPerSub] + ((pair / kPerSub) * kRows + row0) * kSubCols;
  }
  // First column (element) of dealt pair `pair` of way `way`.
  template <int kWays>
  __device__ __forceinline__ static int dealt_col(int pair, int way) {
    constexpr int kPerSub = DealtOffsets<kWays>::kPairsPerSub;
    return (pair / kPerSub) * kSubCols + 16 * ((pair % kPerSub) * kWays + way);
  }
};

// Hides a value's origin from the optimizer, so that addresses derived from it are computed
// where they are used instead of being hoisted out of the key loop into extra registers.
template <class T>
__device__ __forceinline__ T *opaque(T *p) {
  asm volatile("" : "+l"(p));
  return p;
}

}  // namespace ioattn::sm80
