// Declares a format's kernel entry points once for each ISA its kernel.h is compiled for
// (common/instantiate.h): SK_DECLARE_PER_ISA(void bsr_linear(const BsrLinearArgs& a);).
#pragma once

#define SK_DECLARE_PER_ISA(...)  \
  namespace portable {           \
  __VA_ARGS__                    \
  }                              \
  namespace avx2 {               \
  __VA_ARGS__                    \
  }                              \
  namespace avx512 {             \
  __VA_ARGS__                    \
  }
