// The one scratch allocator of the kernels (declared in common/kernel_prelude.h).
#include <cstdlib>
#include <new>

#include "common/checks.h"
#include "common/kernel_prelude.h"

namespace sk {

void* thread_scratch(std::size_t bytes, int slot) {
  struct Buffer {
    void* p = nullptr;
    std::size_t n = 0;
    ~Buffer() { std::free(p); }
  };
  static thread_local Buffer bufs[8];
  SK_CHECK(slot >= 0 && slot < 8, "thread_scratch: slot must be in [0, 8), got " << slot);
  Buffer& b = bufs[slot];
  if (b.n < bytes) {
    scratch_bytes(static_cast<int64_t>(bytes), 1, "a kernel's scratch buffer");  // no more than the machine has
    std::free(b.p);
    b.n = 0;
    b.p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (b.p == nullptr) throw std::bad_alloc();
    b.n = bytes;
  }
  return b.p;
}

}  // namespace sk
