// Device code embedded in a kernel library: fat binaries (cmake/device_compile.py) linked into
// the .nv_fatbin section, loaded with the CUDA runtime's library API on first use.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <mutex>

namespace ioattn {

// One embedded fat binary: [begin, end) inside the library's .nv_fatbin section.
struct DeviceImage {
  const unsigned char *begin;
  const unsigned char *end;
};

// A kernel of an embedded fat binary, loaded on first use and kept for the life of the
// process. cudaLibraryLoadData is context independent: one handle serves every device, each
// context loading the image (the driver picks the SASS or PTX for its arch) when it first
// launches the kernel. A failed load is retried on the next call.
class LazyKernel {
 public:
  cudaError_t get(const DeviceImage &image, const char *symbol, cudaKernel_t *kernel);

 private:
  std::mutex mutex_;
  std::atomic<cudaKernel_t> kernel_{nullptr};
};

}  // namespace ioattn
