// Canonical Huffman coding of the compressed checkpoint format (sparsekit/storage.py) as
// native-only ops, defined here with their kernels: _huffman_encode, _huffman_decode.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/tensor.h"
#include "storage/huffman.h"

namespace sk {
namespace {

std::vector<uint8_t> huffman_lengths(const at::Tensor& lengths) {
  check_tensor(lengths, "lengths", at::kByte, 1);
  // symbols are int32: an alphabet past 2^31 could not be addressed (and its Kraft sum could wrap)
  SK_CHECK(lengths.size(0) <= (int64_t{1} << 31), "lengths must have at most 2^31 entries, got " << lengths.size(0));
  const at::Tensor l = lengths.contiguous();
  const uint8_t* p = l.data_ptr<uint8_t>();
  return std::vector<uint8_t>(p, p + l.size(0));
}

// symbols int32 [n] -> uint8 bytes of their canonical Huffman codes (lengths uint8 [alphabet])
at::Tensor huffman_encode_op(const at::Tensor& symbols, const at::Tensor& lengths) {
  check_tensor(symbols, "symbols", at::kInt, 1);
  const std::vector<uint8_t> len = huffman_lengths(lengths);
  const at::Tensor s = symbols.contiguous();
  const int64_t n = s.size(0), bits = huffman_encoded_bits(s.data_ptr<int32_t>(), n, len);
  at::Tensor out = at::empty({(bits + 7) / 8}, lengths.options());
  huffman_encode(s.data_ptr<int32_t>(), n, len, out.data_ptr<uint8_t>());
  return out;
}

// n symbols (int32) from the code bytes (uint8); ValueError on a truncated or invalid stream
at::Tensor huffman_decode_op(const at::Tensor& data, const at::Tensor& lengths, int64_t n) {
  check_tensor(data, "data", at::kByte, 1);
  const std::vector<uint8_t> len = huffman_lengths(lengths);
  SK_CHECK(n >= 0, "n must be >= 0, got " << n);
  const at::Tensor d = data.contiguous();
  // huffman_decode checks n <= 8 * bytes before writing: the allocation below is bounded by the data
  SK_CHECK(n / 8 <= d.size(0), "huffman: stream ends before its " << n << " symbols (" << d.size(0) << " bytes)");
  at::Tensor out = at::empty({n}, data.options().dtype(at::kInt));
  huffman_decode(d.data_ptr<uint8_t>(), d.size(0), n, len, out.data_ptr<int32_t>());
  return out;
}

}  // namespace
}  // namespace sk

TORCH_LIBRARY_FRAGMENT(sparsekit, m) {
  m.def("_huffman_encode(Tensor symbols, Tensor lengths) -> Tensor");
  m.def("_huffman_decode(Tensor data, Tensor lengths, int n) -> Tensor");
}

TORCH_LIBRARY_IMPL(sparsekit, CPU, m) {
  m.impl("_huffman_encode", &sk::huffman_encode_op);
  m.impl("_huffman_decode", &sk::huffman_decode_op);
}
