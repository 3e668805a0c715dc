// libioattn_sm90's forward launch: encodes the TMA descriptors of q, k and v (cuda.h's
// cuTensorMapEncodeTiled, reached through the runtime's driver entry point so that nothing
// links libcuda) and launches a persistent grid of one CTA per SM, at most one per unit of work.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>

#include "common/host/error.h"
#include "common/host/launch.h"
#include "common/host/launch_kernel.h"
#include "common/host/plan.h"
#include "common/persistent_schedule.h"
#include "ioattn/api.h"
#include "sm90/params.h"
#include "sm90/tile_config.h"
#include "sm90/tile_rows.cuh"

namespace ioattn {
namespace {

// cuda.h's values (CUtensorMapDataType, ..._Swizzle, ..._L2promotion, ...); declared here so
// that the host code needs only the runtime headers.
constexpr int kTmaFloat16 = 6;
constexpr int kTmaBFloat16 = 9;
constexpr int kTmaInterleaveNone = 0;
constexpr int kTmaSwizzle128B = 3;
constexpr int kTmaL2Promote256B = 3;
constexpr int kTmaOobFillZeros = 0;
constexpr int64_t kTmaMaxStride = int64_t(1) << 40;  // bytes

using EncodeTiled = int (*)(sm90::TmaDescriptor *, int, uint32_t, void *, const uint64_t *,
                            const uint64_t *, const uint32_t *, const uint32_t *, int, int, int,
                            int);

EncodeTiled encode_tiled() {
  static EncodeTiled fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void *ptr = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                         &found) == cudaSuccess &&
        found == cudaDriverEntryPointSuccess) {
      fn = reinterpret_cast<EncodeTiled>(ptr);
    } else {
      cudaGetLastError();  // not sticky; leave no error behind for the caller
    }
  });
  return fn;
}

struct TensorLayout {
  const void *ptr;
  int64_t rows;  // seqlen (dense) or total rows (varlen)
  int64_t heads;
  int64_t batch;                                  // 1 for varlen
  int64_t row_stride, head_stride, batch_stride;  // elements
};

// A dimension of extent 1 is never stepped over; give it a legal stride (bytes).
uint64_t tma_stride(int64_t elements, int64_t extent) {
  return uint64_t(extent > 1 ? elements * 2 : int64_t(16));
}

// A 128-byte-swizzled tiled map of `rank` dimensions (innermost first, 2-byte elements) whose
// box starts with 64 columns: one panel of a tile (sm90/smem_layout.cuh). Elements outside the
// tensor read as zeros.
template <int kRank>
cudaError_t encode_map(sm90::TmaDescriptor *desc, const void *ptr, int dtype,
                       const uint64_t (&dims)[kRank], const uint64_t (&strides)[kRank - 1],
                       const uint32_t (&box)[kRank]) {
  const EncodeTiled fn = encode_tiled();
  if (fn == nullptr) return cudaErrorSymbolNotFound;
  uint32_t elem_strides[kRank];
  for (uint32_t &s : elem_strides) s = 1;
  const int status = fn(desc, dtype == IOATTN_DTYPE_BF16 ? kTmaBFloat16 : kTmaFloat16, kRank,
                        const_cast<void *>(ptr), dims, strides, box, elem_strides,
                        kTmaInterleaveNone, kTmaSwizzle128B, kTmaL2Promote256B, kTmaOobFillZeros);
  return status == 0 ? cudaSuccess : cudaErrorInvalidValue;
}

// 4-D map (head_dim, rows, heads, batch) with a box of 64 columns x box_rows rows.
cudaError_t encode(sm90::TmaDescriptor *desc, const TensorLayout &t, int head_dim, int dtype,
                   int box_rows) {
  const uint64_t dims[4] = {uint64_t(head_dim), uint64_t(t.rows), uint64_t(t.heads),
                            uint64_t(t.batch)};
  const uint64_t strides[3] = {tma_stride(t.row_stride, t.rows), tma_stride(t.head_stride, t.heads),
                               tma_stride(t.batch_stride, t.batch)};
  const uint32_t box[4] = {64, uint32_t(box_rows), 1, 1};
  return encode_map(desc, t.ptr, dtype, dims, strides, box);
}

// GQA packing: 5-D map (head_dim, pack, rows, heads_k, batch) of q, with a box of 64 columns x
// pack query heads x positions rows, in that order in shared memory: tile row r is position
// r / pack of the group's head r % pack (sm90/tile_rows.cuh).
cudaError_t encode_packed_q(sm90::TmaDescriptor *desc, const TensorLayout &t, int head_dim,
                            int dtype, int pack, int positions) {
  const int64_t heads_k = t.heads / pack;
  const uint64_t dims[5] = {uint64_t(head_dim), uint64_t(pack), uint64_t(t.rows), uint64_t(heads_k),
                            uint64_t(t.batch)};
  const uint64_t strides[4] = {tma_stride(t.head_stride, pack), tma_stride(t.row_stride, t.rows),
                               tma_stride(t.head_stride * pack, heads_k),
                               tma_stride(t.batch_stride, t.batch)};
  const uint32_t box[5] = {64, uint32_t(pack), uint32_t(positions), 1, 1};
  return encode_map(desc, t.ptr, dtype, dims, strides, box);
}

// Whether the query heads of a group share tiles (GQA packing, sm90/tile_rows.cuh): where that
// takes fewer tiles, i.e. where seqlen_q leaves most of a tile's rows empty (decoding, short
// prompts). Each packed tile then loads the K/V blocks once for the whole group: on an H100
// (bf16, hd128, 8 query heads per K/V head, one query against 8k keys, batch 32) 3.2x faster.
// At most block_m heads per group (a tile holds at least one position) and 256 (a TMA box
// dimension).
int gqa_pack(const FwdParams &p, int block_m) {
  const int g = p.group_size;
  if (g <= 1 || g > block_m || g > 256) return 1;
  const int64_t packed = ceil_div(p.seqlen_q, block_m / g);
  const int64_t unpacked = int64_t(g) * ceil_div(p.seqlen_q, block_m);
  return packed < unpacked ? g : 1;
}

// The query rows, padding included, that one (K/V head, batch) takes under a tile config.
int64_t padded_rows(const FwdParams &p, int block_m) {
  const int pack = gqa_pack(p, block_m);
  return pack > 1 ? ceil_div(p.seqlen_q, block_m / pack) * block_m
                  : int64_t(p.group_size) * ceil_div(p.seqlen_q, block_m) * block_m;
}

TensorLayout layout_q(const FwdParams &p) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  return {p.q,
          varlen ? p.total_q : p.seqlen_q,
          p.num_heads,
          varlen ? 1 : p.batch,
          p.q_row_stride,
          p.q_head_stride,
          p.q_batch_stride};
}

TensorLayout layout_kv(const FwdParams &p, const void *ptr, int64_t row_stride, int64_t head_stride,
                       int64_t batch_stride) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  return {ptr,           varlen ? p.total_k : p.seqlen_k,
          p.num_heads_k, varlen ? 1 : p.batch,
          row_stride,    head_stride,
          batch_stride};
}

// TMA steps with positive strides below 2^40 bytes (a broadcast, stride-0 dimension cannot
// be mapped).
bool mappable(const TensorLayout &t) {
  auto ok = [](int64_t stride, int64_t extent) {
    return extent <= 1 || (stride > 0 && stride * 2 < kTmaMaxStride);
  };
  return ok(t.row_stride, t.rows) && ok(t.head_stride, t.heads) && ok(t.batch_stride, t.batch);
}

}  // namespace

int32_t check_fwd_layout(const FwdParams &p) {
  if (!mappable(layout_q(p)) ||
      !mappable(layout_kv(p, p.k, p.k_row_stride, p.k_head_stride, p.k_batch_stride)) ||
      !mappable(layout_kv(p, p.v, p.v_row_stride, p.v_head_stride, p.v_batch_stride))) {
    return fail(IOATTN_ERR_UNSUPPORTED,
                "libioattn_sm90 maps q, k and v with TMA, which needs positive strides below "
                "2^40 bytes (a broadcast, stride-0 dimension is not supported)");
  }
  return IOATTN_OK;
}

bool fwd_prefers_default_tiles(const KernelEntry &long_variant, const FwdParams &params) {
  const int hd = long_variant.head_dim;
  const bool window = long_variant.window;
  return sm90::fwd_default_tiles_pay(
      hd, window, padded_rows(params, sm90::fwd_tile_config(hd, window, false).block_m),
      padded_rows(params, sm90::fwd_tile_config(hd, window, true).block_m));
}

cudaError_t launch_fwd(const KernelEntry &kernel, const FwdParams &params, cudaStream_t stream) {
  const sm90::FwdTileConfig cfg =
      sm90::fwd_tile_config(kernel.head_dim, kernel.window, kernel.long_q);
  sm90::FwdParamsSm90 p{};
  p.base = params;
  p.pack = gqa_pack(params, cfg.block_m);
  p.pack_magic = sm90::pack_magic(p.pack);
  p.tile_positions = cfg.block_m / p.pack;
  cudaError_t err =
      p.pack > 1 ? encode_packed_q(&p.tma_q, layout_q(params), params.head_dim, kernel.dtype,
                                   p.pack, p.tile_positions)
                 : encode(&p.tma_q, layout_q(params), params.head_dim, kernel.dtype, cfg.block_m);
  if (err == cudaSuccess) {
    err = encode(&p.tma_k,
                 layout_kv(params, params.k, params.k_row_stride, params.k_head_stride,
                           params.k_batch_stride),
                 params.head_dim, kernel.dtype, cfg.block_n);
  }
  if (err == cudaSuccess) {
    err = encode(&p.tma_v,
                 layout_kv(params, params.v, params.v_row_stride, params.v_head_stride,
                           params.v_batch_stride),
                 params.head_dim, kernel.dtype, cfg.block_n);
  }
  if (err != cudaSuccess) return err;
  // O through TMA stores (kernels that stage it, sm90::fwd_stage_o) where a box of 64 rows
  // stays within its sequence and head: not for varlen (a tile's rows past its sequence are the
  // next one's) nor GQA-packed tiles (rows of several heads); O's strides must be mappable too.
  // Otherwise stores from registers.
  const TensorLayout o = {params.out,           params.seqlen_q,     params.num_heads,
                          params.batch,         params.o_row_stride, params.o_head_stride,
                          params.o_batch_stride};
  p.tma_store = sm90::fwd_stage_o(kernel.head_dim, kernel.window, kernel.long_q) &&
                params.cu_seqlens_q == nullptr && p.pack == 1 && mappable(o) &&
                encode(&p.tma_o, o, params.head_dim, kernel.dtype, 64) == cudaSuccess;

  int device = 0, num_sms = 0;
  err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (err != cudaSuccess) return err;
  // Persistent: one CTA per SM, at most one per unit of PersistentTileScheduler (query tiles of
  // tile_positions positions and pack heads; for varlen, seqlen_q is the maximum over the
  // batch). The schedule's constants are the kernel's to read. Window masks pair a (head,
  // batch)'s light and heavy tiles, but not GQA-packed ones: a group has only a few tiles then,
  // of about the same cost, and pairs left CTAs idle (hd128 causal, 64 queries against 4k keys,
  // 4 heads per group, batch 16: 2 packed tiles per group; paired 335 TFLOPS, single 539 on an
  // H100, bf16).
  const int num_blocks = int(ceil_div(params.seqlen_q, p.tile_positions));
  const int heads = params.num_heads / p.pack;
  const int64_t heads_batch = int64_t(heads) * params.batch;
  // The share of the CTAs that a round robin of `units` keeps busy in its last round (1: no
  // partly busy round).
  auto last_round_fill = [&](int64_t units) {
    const int64_t last = units % num_sms;
    return units < num_sms || last == 0 ? 1.0 : double(last) / num_sms;
  };
  const double pairs_fill = last_round_fill(persistent_units(num_blocks, heads_batch, true));
  const double mirrored_fill = last_round_fill(mirrored_units(num_blocks, heads_batch));
  p.sched = make_persistent_schedule(
      num_blocks, heads, params.batch, kernel.window, p.pack == 1,
      sm90::fwd_mirrored_pairs(kernel.head_dim, kernel.window, kernel.long_q, num_blocks,
                               mirrored_fill, pairs_fill),
      sm90::fwd_tail_split(kernel.head_dim, num_blocks, pairs_fill), num_sms);
  const int64_t grid = p.sched.grid;
  return launch_kernel(kernel.kernel, kernel.image, kernel.symbol, grid, kernel.num_threads,
                       kernel.smem_bytes, p, stream);
}

}  // namespace ioattn
