#include "common/host/error.h"

#include <utility>

namespace ioattn {
namespace {
thread_local std::string g_last_error;
}  // namespace

int32_t fail(int32_t status, std::string message) {
  g_last_error = std::move(message);
  return status;
}

void clear_error() { g_last_error.clear(); }

const char *last_error() { return g_last_error.c_str(); }

}  // namespace ioattn
