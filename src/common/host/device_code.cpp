#include "common/host/device_code.h"

namespace ioattn {

cudaError_t LazyKernel::get(const DeviceImage &image, const char *symbol, cudaKernel_t *kernel) {
  // Acquire pairs with the release below: a thread that sees the handle sees it fully loaded.
  *kernel = kernel_.load(std::memory_order_acquire);
  if (*kernel != nullptr) return cudaSuccess;
  const std::lock_guard<std::mutex> lock(mutex_);
  *kernel = kernel_.load(std::memory_order_relaxed);  // another thread may have loaded it
  if (*kernel != nullptr) return cudaSuccess;

  cudaLibrary_t library = nullptr;
  cudaError_t err =
      cudaLibraryLoadData(&library, image.begin, nullptr, nullptr, 0, nullptr, nullptr, 0);
  if (err != cudaSuccess) return err;
  cudaKernel_t loaded = nullptr;
  err = cudaLibraryGetKernel(&loaded, library, symbol);
  if (err != cudaSuccess) {
    cudaLibraryUnload(library);
    return err;
  }
  // Never unloaded: the handle lives as long as the process, and unloading from a static
  // destructor would race the CUDA runtime's own teardown.
  kernel_.store(loaded, std::memory_order_release);
  *kernel = loaded;
  return cudaSuccess;
}

}  // namespace ioattn
