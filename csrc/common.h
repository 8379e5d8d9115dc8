// Argument checking for the Python-facing entry points. Every check runs before a
// kernel touches memory; failures raise ValueError (std::invalid_argument) or
// TypeError (pybind11::type_error) naming the argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sk {
namespace py = pybind11;

#define SK_CHECK(cond, msg)                                  \
  do {                                                       \
    if (!(cond)) {                                           \
      std::ostringstream sk_os_;                             \
      sk_os_ << msg;                                         \
      throw std::invalid_argument(sk_os_.str());             \
    }                                                        \
  } while (0)

template <typename T>
inline const char* dtype_name();
template <>
inline const char* dtype_name<float>() { return "float32"; }
template <>
inline const char* dtype_name<int32_t>() { return "int32"; }
template <>
inline const char* dtype_name<int64_t>() { return "int64"; }

// Checks dtype, rank, C-contiguity (and writability) of a numpy view.
template <typename T>
inline void check_array(const py::array& a, const char* name, int ndim, bool writable = false) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " must be " + dtype_name<T>() + ", got " +
                         std::string(py::str(a.dtype())));
  SK_CHECK(a.ndim() == ndim, name << " must have " << ndim << " dimensions, got " << a.ndim());
  SK_CHECK(a.flags() & py::array::c_style, name << " must be C-contiguous");
  if (writable) SK_CHECK(a.writeable(), name << " must be writable");
}

inline void check_dim(const py::array& a, const char* name, int dim, int64_t want) {
  SK_CHECK(a.shape(dim) == want, name << ".shape[" << dim << "] must be " << want << ", got " << a.shape(dim));
}

}  // namespace sk
