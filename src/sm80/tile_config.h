// Forward tile sizes per head dim and mask: the SM80 tuning table, in one place.
//
// kBlockM query rows per CTA, split over kNWarps warps (16 * kMT rows each); kBlockN keys per
// pipeline stage; `stages` K/V buffers (2: the next block is prefetched a whole iteration
// ahead; 1: V loads under Q.K^T and the next K under P.V, for half the shared memory). With one
// stage, `early_k` issues the next K load right after Q.K^T, before the softmax (FA2's order: K
// then lands under the softmax and P.V, V under Q.K^T alone); without it the load waits until
// the softmax is done (V lands under Q.K^T and the softmax, K under P.V). kQInRegs keeps the Q
// fragments in registers for the whole tile (saves the A-operand shared-memory reads of every
// Q.K^T) where registers allow. kMinBlocksPerSM is the occupancy the register budget is tuned
// for. Chosen on an H100 with ci/tune_sm80.py (ratios to SDPA's FLASH_ATTENTION backend in the
// same run); where a tile is short (causal, or a large head dim) a second CTA per SM, bought
// with single-buffered K/V, hides each tile's prologue.
//
//  hdim  mask     M    N  warps stages early_k  Q in regs  smem (KB)  CTAs/SM (H100)
//    64  any     128   64   4     2       -        yes         48          2
//    96  any     128   64   4     2       -        no          72          2
//   128  full    128   64   4     2       -        no          96          2
//   128  window  128   64   4     1       no       no          64          2
//   192  any      64   64   4     1       yes      yes         72          2
//   256  any      64   64   4     1       yes      no          96          2
//
// These tiles serve every GPU from sm_80 on: the largest take 96 KB (sm_86 and sm_89 allow 99 KB
// per block). hd128 without a mask has every key block full, so the prefetch a whole iteration
// ahead pays: +3-6% at seqlen 512-2k, same at 8k; under a causal mask (short tiles, two CTAs per
// SM hide the prologue either way) it lost 1-8%.
//
// early_k measured on an H100 (bf16, same-run ratio to SDPA flash, seqlen 512-16k): hd256
// causal +4-7%, hd192 without a mask +2-7% (4k: +3-9%), causal unchanged: with 16-row warps
// the softmax is short and K is the load that lacked time; hd128 -2..-8% (its 32-row warps'
// longer softmax is what V needs to land under). With it, hd256's 96 KB tile (two CTAs per SM)
// beats the 192 KB one it replaced without a mask (128 x 64, 8 warps, two stages): +3-9% at
// 512-8k, -1..-3% at 16k.
#pragma once

#include "common/portable.h"

namespace ioattn::sm80 {

struct FwdTileConfig {
  int block_m;
  int block_n;
  int num_warps;
  bool q_in_regs;
  int min_blocks_per_sm;
  int stages;
  bool early_k;  // one stage: the next K load is issued before the softmax (above)
};

IOATTN_HOST_DEVICE constexpr FwdTileConfig fwd_tile_config(int head_dim, bool window) {
#ifdef IOATTN_TILE_HEAD_DIM
  // Tuning builds only (CMake IOATTN_SM80_FWD_TILE_OVERRIDE, see ci/tune_sm80.py).
  if (head_dim == IOATTN_TILE_HEAD_DIM) {
    return {IOATTN_TILE_BLOCK_M,        IOATTN_TILE_BLOCK_N,    IOATTN_TILE_WARPS,
            IOATTN_TILE_Q_IN_REGS != 0, IOATTN_TILE_MIN_BLOCKS, IOATTN_TILE_STAGES,
            IOATTN_TILE_EARLY_K != 0};
  }
#endif
  switch (head_dim) {
    case 64:
      return {128, 64, 4, true, 2, 2, false};
    case 96:
      return {128, 64, 4, false, 2, 2, false};
    case 128:
      return {128, 64, 4, false, 2, window ? 1 : 2, false};
    case 192:
      return {64, 64, 4, true, 2, 1, true};
    default:  // 256
      return {64, 64, 4, false, 2, 1, true};
  }
}

// Dynamic shared memory of the forward kernel: the Q tile (reused to stage O) and `stages`
// K and V tiles, 2 bytes per element.
IOATTN_HOST_DEVICE constexpr int fwd_smem_bytes(int head_dim, bool window) {
  const FwdTileConfig c = fwd_tile_config(head_dim, window);
  return (c.block_m + 2 * c.stages * c.block_n) * head_dim * 2;
}

// Backward tile sizes. One CTA owns block_n keys of one K/V head and walks the query blocks
// (block_m rows each, Q/dO double-buffered) of every query head of its group. Its warps_n key
// groups own 16 * key_tiles keys each; the warps_d warps of a key group split the head dim of
// dK and dV (2 * head_dim fp32 accumulators per key would not fit one warp's registers) and
// the queries of S^T and dP^T, and swap their slices of P^T and dS^T through shared memory
// (with warps_d = 1 one warp computes all of them). Two m16 key tiles per warp make every B
// fragment of S^T, dP^T, dV and dK feed two mma: fewer shared-memory reads per mma, which is what
// bounds this kernel on an H100 (ncu: LDSM wavefronts track the time; measured +4-7% over one
// tile).
//
//  hdim    N    M  warps (n x d)  key tiles  smem (KB)   small_smem: N    M  warps  tiles  KB
//    64  128  128     4 x 2           2          162               128   64  4 x 2    2    97
//    96  128   64     4 x 2           2          129                64   64  4 x 2    1    89
//   128  128   64     4 x 2           2          161                64   32  4 x 2    1    73
//   192   64   64     2 x 4           2          161                32   32  2 x 2    1    77
//   256   64   64     2 x 4           2          209                64   32  4 x 2    1   137
struct BwdTileConfig {
  int block_n;
  int block_m;
  int warps_n;
  int warps_d;
  int min_blocks_per_sm;
  int key_tiles;  // m16 tiles of keys per key group: block_n = 16 * key_tiles * warps_n
};

// small_smem: the tiles for GPUs with less shared memory per block, which the host runs where
// the default ones do not fit the device: at most 97 KB for head dims 64-192 (sm_86/89 allow
// 99 KB), 137 KB for 256 (an A100 allows 163 KB; sm_86/89 have none for it). Their speed on
// an H100 does not matter; the default tiles run there.
IOATTN_HOST_DEVICE constexpr BwdTileConfig bwd_tile_config(int head_dim, bool small_smem) {
#ifdef IOATTN_BWD_TILE_HEAD_DIM
  // Tuning builds only (CMake IOATTN_SM80_BWD_TILE_OVERRIDE).
  if (head_dim == IOATTN_BWD_TILE_HEAD_DIM) {
    return {IOATTN_BWD_TILE_BLOCK_N, IOATTN_BWD_TILE_BLOCK_M,    IOATTN_BWD_TILE_WARPS_N,
            IOATTN_BWD_TILE_WARPS_D, IOATTN_BWD_TILE_MIN_BLOCKS, IOATTN_BWD_TILE_KEY_TILES};
  }
#endif
  if (small_smem) {
    switch (head_dim) {
      case 64:  // 10% slower than the default on an H100
        return {128, 64, 4, 2, 1, 2};
      case 96:
        return {64, 64, 4, 2, 1, 1};
      case 128:
        return {64, 32, 4, 2, 1, 1};
      case 192:
        return {32, 32, 2, 2, 1, 1};
      default:  // 256
        return {64, 32, 4, 2, 1, 1};
    }
  }
  switch (head_dim) {
    case 64:
      return {128, 128, 4, 2, 1, 2};
    case 96:
    case 128:
      return {128, 64, 4, 2, 1, 2};
    default:  // 192, 256
      return {64, 64, 2, 4, 1, 2};
  }
}

// Registers per ldmatrix access pattern of the backward (SmemTile::LaneOffsets, capped at a
// pattern's chunk pairs): 1 keeps the fewest loop invariants (every other chunk pair is an
// XOR away); more give ptxas a different allocation of the 255 registers these kernels use,
// for the same instructions. Measured on an H100 (bf16, one run of two rounds, ratio to SDPA
// flash at seqlen 512 / 2k / 8k; "before": one register per chunk pair and one offset
// register per P^T/dS^T store, the form this replaced; 1 / 2 / 4 registers):
//   hdim  mask    before      1           2           4          chosen
//     64  none    0.97-0.99   1.00-1.02   1.01-1.02   1.01-1.02  1
//     64  causal  0.97-1.01   1.00-1.03   1.00-1.01   1.00-1.03  1
//     96  none    0.91-0.92   0.94-0.97   0.95-0.97   0.93-0.97  1
//     96  causal  1.01-1.03   1.03-1.05   1.03-1.04   1.02-1.04  1
//    128  none    1.07-1.09   1.04-1.06   1.08-1.09   1.09-1.11  4
//    128  causal  0.99-1.03   0.99-1.00   1.01-1.06   0.99-1.02  2
//    192  none    0.97-1.02   0.98-1.01   0.97-1.01   1.00-1.02  4
//    192  causal  0.93-0.95   0.94-0.97   0.92-0.95   0.92-0.95  1
//    256  none    1.01-1.02   1.04-1.05   1.03-1.04   1.02-1.04  1
//    256  causal  0.98-1.01   0.98-0.99   0.88-0.98   1.03-1.05  4
IOATTN_HOST_DEVICE constexpr int bwd_lane_regs(int head_dim, bool window) {
#ifdef IOATTN_BWD_LANE_REGS
  // Tuning builds only (IOATTN_DEVICE_DEFINES=IOATTN_BWD_LANE_REGS=n).
  return (void)head_dim, (void)window, IOATTN_BWD_LANE_REGS;
#else
  switch (head_dim) {
    case 128:
      return window ? 2 : 4;
    case 192:
      return window ? 1 : 4;
    case 256:
      return window ? 4 : 1;
    default:  // 64, 96
      return 1;
  }
#endif
}

// Floats per dQ atomic (sm80/dq_accum.cuh): 16-byte reductions, half the instructions of the
// 8-byte ones (also supported). On an H100, same-run A/B: +1-3% at head dim 64 and +3-5% at
// 128, causal or not (+2-3% at 192/256 in an earlier run).
IOATTN_HOST_DEVICE constexpr int bwd_dq_atomic_width(int /*head_dim*/) { return 4; }

IOATTN_HOST_DEVICE constexpr bool bwd_has_small_smem_variant(int /*head_dim*/) { return true; }

IOATTN_HOST_DEVICE constexpr int bwd_num_threads(int head_dim, bool small_smem) {
  const BwdTileConfig c = bwd_tile_config(head_dim, small_smem);
  return 32 * c.warps_n * c.warps_d;
}

// Dynamic shared memory of the backward kernel: K and V (block_n rows), two stages of Q and dO
// (block_m rows), P^T and dS^T (block_n x block_m, 16-bit) and two stages of the fp32 LSE and
// rowsum(dO * O) of a query block.
IOATTN_HOST_DEVICE constexpr int bwd_smem_bytes(int head_dim, bool small_smem) {
  const BwdTileConfig c = bwd_tile_config(head_dim, small_smem);
  return (2 * c.block_n + 4 * c.block_m) * head_dim * 2 + 2 * c.block_n * c.block_m * 2 +
         4 * c.block_m * 4;
}

// Block size of the backward's preprocess and postprocess kernels (sm80/bwd_aux.cuh).
inline constexpr int kBwdHelperThreads = 256;

}  // namespace ioattn::sm80
