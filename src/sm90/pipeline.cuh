// Producer/consumer rings on mbarriers. Each buffer of a ring has a "full" barrier, completed
// by the producer's arrive.expect_tx plus the TMA bytes landing, and an "empty" barrier,
// completed when every consumer thread has finished reading the buffer. Both sides walk the
// ring with a PipelineState; a barrier's phase parity flips each time the ring wraps.
#pragma once

#include "common/portable.h"
#include "sm90/ptx.cuh"

namespace ioattn::sm90 {

template <int kStages>
struct PipelineState {
  int stage = 0;
  uint32_t phase = 0;

  __device__ __forceinline__ void advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

template <int kStages>
struct Ring {
  uint64_t full[kStages];
  uint64_t empty[kStages];

  __device__ void init(int consumer_threads) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);  // the producer's arrive.expect_tx
      mbar_init(&empty[s], consumer_threads);
    }
  }

  // Producer: waits until the consumers have released the buffer (the first pass through
  // the ring waits on the phase before the first, which counts as complete), then announces
  // `bytes` of TMA traffic that will complete it. Returns the barrier the loads signal.
  __device__ __forceinline__ uint64_t *producer_acquire(const PipelineState<kStages> &st,
                                                        uint32_t bytes) {
    mbar_wait(&empty[st.stage], st.phase ^ 1);
    mbar_arrive_expect_tx(&full[st.stage], bytes);
    return &full[st.stage];
  }

  __device__ __forceinline__ void consumer_wait(const PipelineState<kStages> &st) {
    mbar_wait(&full[st.stage], st.phase);
  }

  // Every consumer thread calls this once its reads of the buffer are complete (for WGMMA
  // operands: after the wgmma.wait_group that retires them).
  __device__ __forceinline__ void consumer_release(const PipelineState<kStages> &st) {
    mbar_arrive(&empty[st.stage]);
  }
};

}  // namespace ioattn::sm90
