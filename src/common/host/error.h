// Thread-local message of the last failed call, returned by ioattn_last_error().
#pragma once

#include <cstdint>
#include <string>

namespace ioattn {

// Records `message` as this thread's last error and returns `status` (for `return fail(...)`).
int32_t fail(int32_t status, std::string message);
void clear_error();
const char *last_error();

}  // namespace ioattn
