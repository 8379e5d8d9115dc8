// Portable kernels: GCC/Clang vector extensions at the baseline instruction set
// (SSE2 on x86-64, NEON on aarch64, scalar elsewhere).
#include "isa_prelude.h"

namespace sk {
namespace portable {

#define SK_VW 4
#define SK_NR 6
#define SK_MR 2
#include "block_sparse_impl.h"
#include "xnor_impl.h"
#include "codebook_impl.h"
#include "dwsep_impl.h"
#undef SK_VW
#undef SK_NR
#undef SK_MR

}  // namespace portable
}  // namespace sk
