// The switches shared by every op (instruction set, CPU backend) as ops of the sparsekit library,
// and the Python module sparsekit._C, which holds no functions: importing it registers the CPU
// kernels (<format>/register.cpp) with PyTorch's dispatcher, for the schemas defined in
// sparsekit/<format>/op.py.
#include <Python.h>

#include <atomic>

#include "common/isa.h"
#include "common/tensor.h"
#include <torch/library.h>

namespace sk {
namespace {

std::atomic<int> g_cpu_backend{static_cast<int>(CpuBackend::automatic)};

std::string cpu_isa() { return isa_name(current_isa()); }

void set_cpu_isa(const std::string& name) { set_isa(name); }

std::vector<std::string> supported_cpu_isas() { return supported_isas(); }

void set_cpu_backend(int64_t mode) {
  SK_CHECK(mode >= 0 && mode <= 2, "mode must be 0 (auto), 1 (native) or 2 (python), got " << mode);
  g_cpu_backend.store(static_cast<int>(mode), std::memory_order_relaxed);
}

}  // namespace

CpuBackend cpu_backend() { return static_cast<CpuBackend>(g_cpu_backend.load(std::memory_order_relaxed)); }

}  // namespace sk

TORCH_LIBRARY_FRAGMENT(sparsekit, m) {
  m.def("_cpu_isa() -> str", &sk::cpu_isa);
  m.def("_set_cpu_isa(str name) -> ()", &sk::set_cpu_isa);
  m.def("_supported_cpu_isas() -> str[]", &sk::supported_cpu_isas);
  m.def("_set_cpu_backend(int mode) -> ()", &sk::set_cpu_backend);
}

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "sparsekit's native ops (registered on import)",
                                      -1, nullptr};
  try {
    sk::current_isa();  // a bad SPARSEKIT_CPU_ISA fails the import (reported when a kernel is first needed)
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_ImportError, e.what_without_backtrace());
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ImportError, e.what());
    return nullptr;
  }
  return PyModule_Create(&module);
}
