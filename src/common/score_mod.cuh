// Score modifiers applied to raw q.k before masking and softmax.
//   NoSoftcap   s = q.k                      (the softmax scale is applied in exp2's FFMA)
//   TanhSoftcap s = tanh(q.k * scale / cap)  (the softmax then scales by cap)
#pragma once

#include "common/params.h"

namespace ioattn {

__device__ __forceinline__ float tanh_approx(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

struct NoSoftcap {
  __device__ explicit NoSoftcap(const FwdParams &) {}
  __device__ __forceinline__ float operator()(float s) const { return s; }
};

struct TanhSoftcap {
  float pre;
  __device__ explicit TanhSoftcap(const FwdParams &p) : pre(p.softcap_pre) {}
  __device__ __forceinline__ float operator()(float s) const { return tanh_approx(s * pre); }
};

}  // namespace ioattn
