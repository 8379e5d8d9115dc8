// Which instruction sets this CPU runs, and the one the kernels use (SPARSEKIT_CPU_ISA or
// set_cpu_isa choose a lower one).
#include "common/isa.h"

#include <atomic>
#include <cstdlib>

#include "common/checks.h"

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sk {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         cpu_has_avx2();
#else
  return false;
#endif
}

bool cpu_has_avx512vp() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return cpu_has_avx512() && __builtin_cpu_supports("avx512vpopcntdq");
#else
  return false;
#endif
}

// AMX needs the CPU (AMX-TILE, AMX-INT8; AVX512-VBMI and VNNI for the expansion and the small-M
// codebook path), the OS (XCR0 tile state bits) and, on Linux, a per-process grant of the tile
// data state, requested once here.
bool cpu_has_amx() {
#if defined(__x86_64__) && defined(__linux__)
  static const bool ok = [] {
    if (!cpu_has_avx512vp() || !__builtin_cpu_supports("avx512vbmi") || !__builtin_cpu_supports("avx512vnni"))
      return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> 25) & 1)) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA enabled
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

}  // namespace

bool cpu_has_vnni_vbmi() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = [] {
    __builtin_cpu_init();
    return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  }();
  return ok;
#else
  return false;
#endif
}

namespace {

const Isa kAllIsas[] = {Isa::portable, Isa::avx2, Isa::avx512, Isa::avx512vp, Isa::amx};

Isa initial_isa() {
  const char* env = std::getenv("SPARSEKIT_CPU_ISA");
  Isa best = best_supported_isa();
  if (env == nullptr || env[0] == '\0') return best;
  std::string want(env);
  for (Isa isa : kAllIsas) {
    if (want == isa_name(isa)) {
      if (static_cast<int>(isa) > static_cast<int>(best))
        SK_CHECK(false, "SPARSEKIT_CPU_ISA=" << want << " but this CPU supports at most " << isa_name(best));
      return isa;
    }
  }
  SK_CHECK(false, "SPARSEKIT_CPU_ISA must be one of amx, avx512vp, avx512, avx2, portable; got '" << want << "'");
  return best;
}

// read by every kernel call from any thread, set by set_isa: atomic, no lock
std::atomic<int> g_isa{-1};

}  // namespace

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::amx: return "amx";
    case Isa::avx512vp: return "avx512vp";
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "portable";
  }
}

Isa best_supported_isa() {
  if (cpu_has_amx()) return Isa::amx;
  if (cpu_has_avx512vp()) return Isa::avx512vp;
  if (cpu_has_avx512()) return Isa::avx512;
  if (cpu_has_avx2()) return Isa::avx2;
  return Isa::portable;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (int i = static_cast<int>(best_supported_isa()); i >= 0; --i) out.push_back(isa_name(static_cast<Isa>(i)));
  return out;
}

Isa current_isa() {
  int isa = g_isa.load(std::memory_order_relaxed);
  if (isa < 0) {  // first call (at import: a bad SPARSEKIT_CPU_ISA fails there)
    isa = static_cast<int>(initial_isa());
    g_isa.store(isa, std::memory_order_relaxed);
  }
  return static_cast<Isa>(isa);
}

void set_isa(const std::string& name) {
  Isa best = best_supported_isa();
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) {
      if (static_cast<int>(isa) > static_cast<int>(best))
        SK_CHECK(false, "isa '" << name << "' is not supported by this CPU (best: " << isa_name(best) << ")");
      g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
      return;
    }
  }
  SK_CHECK(false, "isa must be one of amx, avx512vp, avx512, avx2, portable; got '" << name << "'");
}

}  // namespace sk
