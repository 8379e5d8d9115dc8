// Portable kernels: GCC/Clang vector extensions at the baseline instruction set
// (SSE2 on x86-64, NEON on aarch64, scalar elsewhere).
#include "isa_prelude.h"

namespace sk {
namespace portable {

#define SK_VW 4
#include "block_sparse_impl.h"
#undef SK_VW

}  // namespace portable
}  // namespace sk
