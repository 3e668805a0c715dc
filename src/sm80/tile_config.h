// Forward tile sizes per head dim: the SM80 tuning table, in one place.
//
// kBlockM query rows per CTA, split over kNWarps warps (16 * kMT rows each); kBlockN keys per
// pipeline stage; K and V are double-buffered. kQInRegs keeps the Q fragments in registers for
// the whole tile (saves the A-operand shared-memory reads of every Q.K^T) where registers allow.
// kMinBlocksPerSM is the occupancy the register budget is tuned for.
//
//  hdim  M    N   warps  rows/warp  Q in regs  smem (KB)  CTAs/SM on H100 (smem, regs)
//    64  128  128   4       32        yes        80          2
//    96  128   64   4       32        no         72          2
//   128  128   64   4       32        no         96          2
//   192  128   64   8       16        yes       144          1
//   256  128   64   8       16        no        192          1
#pragma once

namespace ioattn::sm80 {

struct FwdTileConfig {
  int block_m;
  int block_n;
  int num_warps;
  bool q_in_regs;
  int min_blocks_per_sm;
};

constexpr FwdTileConfig fwd_tile_config(int head_dim) {
  switch (head_dim) {
    case 64:
      return {128, 128, 4, true, 2};
    case 96:
      return {128, 64, 4, false, 2};
    case 128:
      return {128, 64, 4, false, 2};
    case 192:
      return {128, 64, 8, true, 1};
    default:  // 256
      return {128, 64, 8, false, 1};
  }
}

}  // namespace ioattn::sm80

namespace ioattn::sm80 {

// Dynamic shared memory of the forward kernel: the Q tile (reused to stage O) and two stages
// of K and V tiles, 2 bytes per element.
constexpr int fwd_smem_bytes(int head_dim) {
  const FwdTileConfig c = fwd_tile_config(head_dim);
  return (c.block_m + 4 * c.block_n) * head_dim * 2;
}

}  // namespace ioattn::sm80
