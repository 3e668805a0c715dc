// The few standard-library pieces the kernels use, for both device compilers: nvcc has the C++
// standard library, NVRTC has none (it compiles these same sources for the CUDA 12 wheels, see
// cmake/device_compile.py). Kernel code includes this header instead of <cstdint>,
// <type_traits> or <cmath>; host-only code keeps using the standard headers.
#pragma once

#ifdef __CUDACC_RTC__
using int8_t = signed char;
using int16_t = short;
using int32_t = int;
using int64_t = long long;
using uint8_t = unsigned char;
using uint16_t = unsigned short;
using uint32_t = unsigned int;
using uint64_t = unsigned long long;
using uintptr_t = unsigned long long;
static_assert(sizeof(int64_t) == 8 && sizeof(int32_t) == 4 && sizeof(uintptr_t) == sizeof(void *),
              "unexpected integer widths");
#else
#include <cstdint>
#endif

// Functions that both the host (the kernel table, tile sizes) and the kernels evaluate.
#ifdef __CUDACC__
#define IOATTN_HOST_DEVICE __host__ __device__
#else
#define IOATTN_HOST_DEVICE
#endif

namespace ioattn {

// exp(x) = exp2(x * kLog2e): scores are scaled into the exp2 domain on the host (score_scale_log2)
// and LSE goes back to natural log (x kLn2) in the forward and into exp2 again in the backward;
// one definition keeps the three in agreement.
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

template <bool kCond, class T, class F>
struct Conditional {
  using type = T;
};
template <class T, class F>
struct Conditional<false, T, F> {
  using type = F;
};
template <bool kCond, class T, class F>
using conditional_t = typename Conditional<kCond, T, F>::type;

#ifdef __CUDACC__
// -inf (INFINITY lives in <cmath>; NVRTC has neither it nor the compiler builtin behind it).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }
#endif

template <class A, class B>
inline constexpr bool is_same_v = false;
template <class A>
inline constexpr bool is_same_v<A, A> = true;

}  // namespace ioattn
