// SM90 forward tile sizes, shared by the kernels and the host (launch shape, TMA boxes,
// kernel table). A CTA is one producer warpgroup (TMA) and two consumer warpgroups, each
// owning 64 query rows of the block_m = 128 tile.
#pragma once

#include "common/portable.h"

namespace ioattn::sm90 {

inline constexpr int kConsumerWarpgroups = 2;
inline constexpr int kFwdThreads = 128 * (1 + kConsumerWarpgroups);

struct FwdTileConfig {
  int block_m;  // query rows per CTA tile (64 per consumer warpgroup)
  int block_n;  // keys per K/V block (the N of S = Q.K^T)
  int stages;   // K/V pipeline depth
};

// head_dim is the compiled head dim; every config fits the 227 KB of shared memory per block.
// Without a window mask every key block is full, so hd128 takes a longer one (fewer softmax
// passes per key); with one (causal), the diagonal blocks are masked and 128 wastes less.
IOATTN_HOST_DEVICE constexpr FwdTileConfig fwd_tile_config(int head_dim, bool window) {
  return head_dim <= 96    ? FwdTileConfig{128, 128, 2}
         : head_dim <= 128 ? FwdTileConfig{128, window ? 128 : 176, 2}
         : head_dim <= 192 ? FwdTileConfig{128, 112, 2}
                           : FwdTileConfig{128, 80, 2};
}

IOATTN_HOST_DEVICE constexpr int panels_of(int head_dim) { return (head_dim + 63) / 64; }

// Q tile + stages x (K, V) tiles in 128-byte swizzled panels, 1 KB for the pipeline barriers
// (the storage is a multiple of its 1024-byte alignment), and 1 KB to align the tiles to the
// 1024-byte swizzle atom (the dynamic shared memory base is only guaranteed 16-byte aligned).
IOATTN_HOST_DEVICE constexpr int fwd_smem_bytes(int head_dim, bool window) {
  const FwdTileConfig c = fwd_tile_config(head_dim, window);
  const int panel_line = 128 * panels_of(head_dim);
  return c.block_m * panel_line + 2 * c.stages * c.block_n * panel_line + 2048;
}

}  // namespace ioattn::sm90
