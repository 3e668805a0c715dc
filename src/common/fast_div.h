// Division by a divisor fixed for a launch (a tile scheduler's head or block count), as a
// multiply-high, an add and a shift instead of the ~20 instructions of an integer division: the
// round-up method of Granlund and Montgomery ("Division by invariant integers using
// multiplication", 1994) with a 32-bit multiplier. The host builds it (kernel parameters), the
// kernels divide with it.
#pragma once

#include "common/portable.h"

namespace ioattn {

struct FastDiv {
  uint32_t divisor = 1;
  uint32_t multiplier = 1;  // floor(2^32 (2^shift - divisor) / divisor) + 1, below 2^32
  uint32_t shift = 0;       // ceil(log2(divisor))

  FastDiv() = default;
  // divisor >= 1.
  IOATTN_HOST_DEVICE explicit FastDiv(int d) : divisor(uint32_t(d)) {
    while ((uint64_t(1) << shift) < divisor) ++shift;
    multiplier =
        uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - divisor)) / divisor + 1u);
  }

#ifdef __CUDACC__
  // n / divisor for 0 <= n < 2^31 (umulhi(n, multiplier) <= n, so the sum fits 32 bits).
  __device__ __forceinline__ int div(int n) const {
    return int((__umulhi(uint32_t(n), multiplier) + uint32_t(n)) >> shift);
  }
  // n / divisor, and n % divisor in `rem`.
  __device__ __forceinline__ int divmod(int n, int &rem) const {
    const int q = div(n);
    rem = n - q * int(divisor);
    return q;
  }
#endif
};

}  // namespace ioattn
