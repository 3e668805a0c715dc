// Two fp32 values rounded to a packed pair of 16-bit elements (the low half first), the
// register format of mma.sync / WGMMA operands and of 4-byte stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/portable.h"

namespace ioattn {

template <class Element>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (is_same_v<Element, __half>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
  } else {
    static_assert(is_same_v<Element, __nv_bfloat16>, "fp16 or bf16 only");
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
  }
}

}  // namespace ioattn
