// SM90 forward tile sizes, shared by the kernels and the host (launch shape, TMA boxes,
// kernel table). A CTA is one producer warpgroup (TMA) and two or three consumer warpgroups,
// each owning 64 query rows of the block_m = 64 x consumers tile.
#pragma once

#include "common/portable.h"

namespace ioattn::sm90 {

struct FwdTileConfig {
  int block_m;    // query rows per CTA tile (64 per consumer warpgroup)
  int block_n;    // keys per K/V block (the N of S = Q.K^T)
  int stages;     // K/V pipeline depth
  int consumers;  // consumer warpgroups (block_m / 64)
};

// head_dim is the compiled head dim; every config fits the 227 KB of shared memory per block.
// hd64 runs three consumers where it can: its GEMMs are short, so a third warpgroup's softmax
// is needed to keep the tensor cores busy, and its registers fit the 160 per thread that three
// leave. With a window mask (causal) only for long query sequences (long_q, below): the 192-row
// tile has more masked diagonal blocks and a partly empty last tile, which cost more than the
// third warpgroup gains while seqlen_q is short. Without a mask wherever the 192-row tiles do
// not pad many more query rows than 128-row ones would (fwd_default_tiles_pay).
// hd64's short-query tiles keep three K/V stages (112 KB): +1.2% at causal 384-600 (bf16, same
// run, four rounds) over two; hd128's with three (226 KB) measured no change. (64-key blocks at
// hd64 were 7-11% slower there.)
// hd128 and hd256 have one config each, with 128- and 64-key blocks: short enough for the stale
// max (fwd_stale_max), which longer blocks have no registers for. Measured on an H100 (bf16,
// same run, four rounds, each with the stale max where it fits): hd128 without a mask against
// 176-key blocks (its long-query config until then) +7.2% at seqlen 2k, +7.8% at 4k, +6.1% at
// 8k, +6.8% at 16k; hd256 against 80-key blocks, without a mask +3.1% at 512 and +0.3-1.6% at
// 1k-16k, causal +1.4% at 2k, +1.5% at 4k, +1% at 8k, +0.6% at 16k. (With the exact max on every
// block, 176 keys had paid from 8k on, and 80 keys at hd256 from 2k on under a causal mask.)
IOATTN_HOST_DEVICE constexpr FwdTileConfig fwd_tile_config(int head_dim, bool window, bool long_q) {
  return head_dim <= 64 ? (!long_q ? FwdTileConfig{128, 128, 3, 2} : FwdTileConfig{192, 128, 2, 3})
         : head_dim <= 96  ? FwdTileConfig{128, 128, 2, 2}
         : head_dim <= 128 ? FwdTileConfig{128, 128, 2, 2}
         : head_dim <= 192 ? FwdTileConfig{128, 112, 2, 2}
                           : FwdTileConfig{128, 64, 2, 2};
}

// The kernel table has a second, long_q kernel where its config differs (the list in
// cmake/gen_kernels.py; the generated table checks it against this), and the host runs it
// from this seqlen_q on (the maximum seqlen_q for varlen). hd64 with a window mask: the 192-row
// tile from 640 on. Measured on an H100 (bf16, causal, same run, against the 128-row tile): 7%
// slower at 512, 4% faster at 640, 18% at 704, 7% at 1k, 15% at 1536 (an earlier measurement,
// before end-aligned tiles and the device-time timer, had it 11-13% slower at 1k). With the
// stale max in the 128-row kernel only (before the 192-row one took it too, row by row, which
// measured +2-6% there): even at 640, 4% faster at 768 and 2.7% at 1k, 8.6% at 2k.
//
// hd64 without a mask: from 1, i.e. always, unless fwd_default_tiles_pay picks the 128-row tiles.
// Other head dims have no long_q kernel.
IOATTN_HOST_DEVICE constexpr int fwd_long_min_seqlen_q(int head_dim, bool window) {
  return head_dim > 64 ? 0 : window ? 640 : 1;
}

// Whether hd64 without a mask takes the default 128-row tiles (two consumers) over the long
// variant's 192-row ones (three): where the 192-row tiles would pad more than 15% more query
// rows. rows_default, rows_long: the rows (padding included) that one (K/V head, batch) takes
// under each, GQA packing included. The row count is not monotone in seqlen_q (ceil(s / 128)
// x 128 against ceil(s / 192) x 192), so a min_seqlen_q cannot express it. 15%: what the
// 192-row kernel is faster at equal rows, measured 1.13x at seqlen 384, 1.16x at 768, 1.19x at
// 1536. Measured on an H100 (bf16, no mask, two runs, 128-row tiles against 192-row ones):
// +19% at seqlen 64, +1-2% at 128, +21-22% at 200, +16-17% at 256 (0.82x -> 0.95-0.96x cuDNN),
// +0.5-1% at 640, +27% for one query per sequence (8 query heads per K/V head, 8k keys); -32% at
// 160, -27% at 192, -11% at 384, -2.6% at 512, -14% at 768, -29% for 96 queries with 4 query heads
// per K/V head (packed: 3 tiles of 128 rows against 2 of 192), which the rule leaves to the 192-row
// tiles.
IOATTN_HOST_DEVICE constexpr bool fwd_default_tiles_pay(int head_dim, bool window,
                                                        int64_t rows_default, int64_t rows_long) {
  return head_dim <= 64 && !window && rows_default * 115 < rows_long * 100;
}

IOATTN_HOST_DEVICE constexpr bool fwd_has_long_variant(int head_dim, bool window) {
  const FwdTileConfig a = fwd_tile_config(head_dim, window, false);
  const FwdTileConfig b = fwd_tile_config(head_dim, window, true);
  return a.block_m != b.block_m || a.block_n != b.block_n || a.stages != b.stages ||
         a.consumers != b.consumers;
}

// Kernels that can walk a tile's key blocks last to first, for mirrored pairs: hd128-256 with a
// window mask, below long_q. hd64's cannot: its K/V blocks (16 KB) stay in L2 without them, and
// mirrored pairs were 3.5-4.5% slower there at seqlen 512 and 1k.
IOATTN_HOST_DEVICE constexpr bool fwd_mirrors_pairs(int head_dim, bool window, bool long_q) {
  return window && !long_q && head_dim >= 128;
}

// Paired causal/local tiles come in mirrored pairs (PersistentTileScheduler) where a sequence
// has few query blocks, unless their last round of units leaves more CTAs idle than the pairs'
// last round would (*_fill: the share of CTAs a last round keeps busy, 1 for none). Measured on
// an H100 (bf16, causal, same run, four rounds, against pairs of one (head, batch), the heavier
// or, at hd192 and hd256, the lighter tile first): hd256 +9% at seqlen 512, +10% at 777, +1.6%
// at 1k, +4.5% at 1280, +2.6% at 1536 (12 blocks), -5% at 1800 (15); hd192 +5% at 512, +2% at
// 1k, -0.6% at 1536 (9-11 blocks not measured); hd128 +0.6-1% at 512, +16% at 777 (whose pairs had
// ended in a tail of single tiles), +2% at 1k, +10% at 1100 and 1152 (9 blocks), +0.4% at 1200,
// +10% at 1300 (11 blocks), -1.4% at 1400 (11 blocks, a last mirrored round 33% busy against none),
// -5.6% at 1536 (12 blocks, where the tail of single tiles pays, fwd_tail_split).
// hd64 (short-query kernel) takes them for any odd number of query blocks (walking both tiles
// first to last), whatever the fills (the pairs' units there are not all alike): a unit's two
// middle tiles then come from neighbouring (head, batch) pairs and run beside their pairs, where
// plain pairs leave every middle tile to the tail, long after its (head, batch)'s K/V left L2
// (ncu, hd64 causal 384: 286 MB of DRAM reads for 198 MB of Q, K and V, DRAM at 79% of peak).
// Measured on an H100 (bf16, causal, same run, five rounds): +5.4% at seqlen 384 (0.97x ->
// 1.03x FA3), +8.2% at 333, +0.4% at 600 (5 blocks); even block counts unchanged (512: -0.2%,
// 448: -1.1%). A first version that compiled the mirrored decode into hd64's scheduler as a
// branch of its own cost 1.2-1.6% at 448-600, so pairs and mirrored pairs share one branch-free
// decode (PersistentTileScheduler::tile).
IOATTN_HOST_DEVICE constexpr bool fwd_mirrored_pairs(int head_dim, bool window, bool long_q,
                                                     int num_blocks, double mirrored_fill,
                                                     double pairs_fill) {
  if (head_dim <= 64) return window && !long_q && num_blocks % 2 == 1;
  return fwd_mirrors_pairs(head_dim, window, long_q) &&
         num_blocks <= (head_dim > 192   ? 12
                        : head_dim > 128 ? 8
                                         : 11) &&
         mirrored_fill >= pairs_fill;
}

// Paired causal/local schedules end in a tail of single tiles, heaviest first
// (PersistentTileScheduler). Measured on an H100 (bf16, causal, two same-run A/Bs): hd64 +2-5.3%
// at seqlen 4k-16k and +0.5-0.7% at 2k (192-row tiles), no change at 512 and 1k; hd128 +0.1-1.2%
// at 2k-16k but -3-4% at 512 and 1k; hd256 -16% at 512 down to -2% at 8k. The tail runs the
// same query block of many (head, batch) pairs together, where a pair shares its K/V blocks in
// L2: that pays where K/V blocks are small and sequences long. Shorter hd128 sequences take it
// where the pairs' last round would keep less than half the CTAs busy (last_round_fill: the
// share it keeps busy): on an H100 (bf16, causal, same run, four rounds) +5.9% at seqlen 1280
// (0.94x -> 0.99x FA3), +6.7% at 1536 (0.94x -> 1.00x), -1% at 777, within 0.5% at 512 and
// 1000-3000. hd96 takes hd128's rule (not measured). (Up to 11 query blocks, hd128 launches
// mostly run mirrored pairs instead, which have no tail: fwd_mirrored_pairs.)
IOATTN_HOST_DEVICE constexpr bool fwd_tail_split(int head_dim, int num_blocks,
                                                 double last_round_fill) {
  return head_dim <= 64 ||
         (head_dim <= 128 && (num_blocks >= 16 || (num_blocks >= 4 && last_round_fill < 0.5)));
}

// How the consumers exponentiate a tile's key blocks after its first: against the running max
// as it stands (OnlineSoftmax::exponentiate_stale), taking the exact path only where a row's max
// moved (accept_stale). The scores stay live beside their exponentials until the vote:
//   kPairs  both of a thread's rows, row 0 under the previous P.V, one vote: kNT x 4 more
//           registers per thread, where S twice, O and the packed P fit in 224 of the 240;
//   kRows   one row at a time after the P.V wait, a vote each: half as many. The 160-register
//           hd64 three-consumer kernels and hd192, where kPairs spilled (56-216 bytes; hd256
//           with 80-key blocks and hd128 with 176 did too, and ran up to 2.5x slower).
// Measured on an H100 (bf16, same run, four or five rounds, against the exact max on every
// block). kPairs: hd64 causal +2.1% at seqlen 512, +1.5% at 384, no mask +0.5% at 512; hd96
// causal +1.5% at 1k; hd128 causal within 0.3% at 512, +3.8% at 1k, +4.2% at 1536, +6% at 4k,
// +7% at 16k, no mask +2.3% at 512; hd256 (64-key blocks) causal within 0.5% at 512-2k. kRows
// (hd64, 192-row tiles): no mask +2% at 384, +5.7% at 2k, +6.7% at 8k, +6.5% at 16k; causal
// +3.1% at 1k, +4.3% at 2k, +5.1% at 8k, +4.2% at 16k.
enum class FwdStaleMax { kPairs, kRows };
IOATTN_HOST_DEVICE constexpr FwdStaleMax fwd_stale_max(int head_dim, bool window, bool long_q) {
  const FwdTileConfig c = fwd_tile_config(head_dim, window, long_q);
  const int s = c.block_n / 2;  // S per thread (64 rows x block_n over 128 threads)
  const int o = head_dim / 2;   // O per thread
  const int p = c.block_n / 4;  // P packed two to a register
  return c.consumers == 2 && 2 * s + o + p <= 224 ? FwdStaleMax::kPairs : FwdStaleMax::kRows;
}

// One producer warpgroup and the consumers.
IOATTN_HOST_DEVICE constexpr int fwd_num_threads(int head_dim, bool window, bool long_q) {
  return 128 * (1 + fwd_tile_config(head_dim, window, long_q).consumers);
}

IOATTN_HOST_DEVICE constexpr int panels_of(int head_dim) { return (head_dim + 63) / 64; }

// Whether the kernel stages O in shared memory for TMA stores (EpilogueFwd::store_tma): hd128
// with a window mask (its one kernel; 32 KB beside 160). Measured on an H100 (bf16, causal, same
// run, three or four rounds, against stores from registers): +1.6% at seqlen 512, +1.4% at 777,
// +1.3% at 1k, +1% at 2k, +1.6% at 4k, +0.4% at 8k, -0.4% at 16k. hd64's short-query window
// kernel measured -0.4% at 512 (its O rows are half as long, and its stores already few).
IOATTN_HOST_DEVICE constexpr bool fwd_stage_o(int head_dim, bool window, bool long_q) {
  return head_dim == 128 && window && !long_q;
}

// Q tile, the O tile (fwd_stage_o; else 1 KB) + stages x (K, V) tiles in 128-byte swizzled
// panels, 1 KB for the pipeline barriers (the storage is a multiple of its 1024-byte
// alignment), and 1 KB to align the tiles to the 1024-byte swizzle atom (the dynamic shared
// memory base is only guaranteed 16-byte aligned).
IOATTN_HOST_DEVICE constexpr int fwd_smem_bytes(int head_dim, bool window, bool long_q) {
  const FwdTileConfig c = fwd_tile_config(head_dim, window, long_q);
  const int panel_line = 128 * panels_of(head_dim);
  const int o_bytes = fwd_stage_o(head_dim, window, long_q) ? c.block_m * panel_line : 1024;
  return c.block_m * panel_line + o_bytes + 2 * c.stages * c.block_n * panel_line + 2048;
}

}  // namespace ioattn::sm90
