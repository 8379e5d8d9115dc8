// Argument checks of the native ops: every check runs before a kernel touches memory. A failed
// check raises ValueError (c10::ValueError) naming the argument; wrong dtypes raise TypeError
// (common/tensor.h). Sizes and offsets derived from arguments are computed here, overflow-safe.
#pragma once
#include <c10/util/Exception.h>
#include <unistd.h>

#include <cstdint>
#include <limits>
#include <sstream>
#include <string>

namespace sk {

#define SK_CHECK(cond, msg)                                           \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::ostringstream sk_os_;                                      \
      sk_os_ << msg;                                                  \
      throw ::c10::ValueError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, sk_os_.str()); \
    }                                                                 \
  } while (0)

// ValueError with this message (code that builds its message as a string).
[[noreturn]] inline void fail(const std::string& msg) {
  throw ::c10::ValueError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, msg);
}

// ---- Checked integer arithmetic
// Python can pass any int64, and a zero-size tensor can have dimensions whose product would not
// fit: every size, offset and bound an op derives from its arguments is computed here, and a
// result that would wrap raises ValueError naming what was computed.

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  SK_CHECK(!__builtin_add_overflow(a, b, &r), what << " does not fit in int64 (" << a << " + " << b << ")");
  return r;
}

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  SK_CHECK(!__builtin_mul_overflow(a, b, &r), what << " does not fit in int64 (" << a << " * " << b << ")");
  return r;
}

// ceil(a / b) for a >= 0 and b >= 1, without forming a + b - 1 (which can wrap).
inline int64_t ceil_div(int64_t a, int64_t b) {
  SK_CHECK(a >= 0 && b >= 1, "ceil_div(" << a << ", " << b << ") needs a >= 0 and b >= 1");
  return a / b + (a % b != 0);
}

// a rounded up to a multiple of m (a >= 0, m >= 1).
inline int64_t round_up(int64_t a, int64_t m, const char* what) { return checked_mul(ceil_div(a, m), m, what); }

// Threads a kernel may use: kernels size per-thread scratch by the count.
constexpr int kMaxThreads = 1024;

inline void check_nthreads(int nthreads) {
  SK_CHECK(nthreads >= 1 && nthreads <= kMaxThreads, "nthreads must be in [1, " << kMaxThreads << "], got " << nthreads);
}

// Bytes of `count` elements of `elem` bytes for a scratch buffer sized from the arguments:
// checked, and at most this machine's physical memory (a larger buffer could only come from
// absurd arguments, and would be paged out or killed rather than fail cleanly).
inline std::size_t scratch_bytes(int64_t count, int64_t elem, const char* what) {
  static const int64_t limit = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? int64_t{pages} * page : std::numeric_limits<int64_t>::max();
  }();
  SK_CHECK(count >= 0, what << " has a negative size (" << count << ")");
  const int64_t bytes = checked_mul(count, elem, what);
  SK_CHECK(bytes <= limit, what << " would need " << bytes << " bytes, more than this machine's memory (" << limit
                                << " bytes)");
  return static_cast<std::size_t>(bytes);
}

// 3-bit codebook indices sit in 4-bit fields (codebook/format.py): the high bit of every field of
// an index word, set only by an index >= 8, which is invalid (also in unused fields, which must be 0).
constexpr uint32_t kField4HighBits = 0x88888888u;

// Checks the bitwise OR of index words a kernel read: ValueError if a 3-bit index is >= 8.
inline void check_index_words(uint32_t words_or, int64_t bits, const char* name) {
  SK_CHECK(bits != 3 || (words_or & kField4HighBits) == 0,
           name << ": an index is >= 8 (bits=3; every 4-bit field must be < 8)");
}

}  // namespace sk
