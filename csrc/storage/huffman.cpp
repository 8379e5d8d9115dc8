#include "storage/huffman.h"

#include <string>

#include "common/checks.h"

namespace sk {
namespace {

constexpr int kMaxLen = 32;

// Canonical codes from lengths (0 = symbol unused). Checks the Kraft sum: a complete or
// incomplete prefix code is fine, an over-subscribed one is not. Symbols are int32, so the
// alphabet is below 2^31 symbols, which also keeps the Kraft sum below 2^62 (no overflow).
std::vector<uint32_t> canonical_codes(const std::vector<uint8_t>& lengths, std::vector<int64_t>& count) {
  if (lengths.size() > static_cast<size_t>(INT32_MAX))
    fail("huffman: alphabet larger than 2^31 symbols");
  count.assign(kMaxLen + 1, 0);
  for (uint8_t l : lengths) {
    if (l > kMaxLen) fail("huffman: code length above 32");
    if (l) ++count[l];
  }
  // Kraft sum in units of 2^-kMaxLen, checked term by term: a term is at most (alphabet size <=
  // 2^31) * 2^31 and the sum so far at most 2^32, so nothing wraps
  uint64_t kraft = 0;
  for (int l = 1; l <= kMaxLen; ++l) {
    kraft += static_cast<uint64_t>(count[l]) << (kMaxLen - l);
    if (kraft > (uint64_t{1} << kMaxLen)) fail("huffman: code lengths do not form a prefix code");
  }
  std::vector<uint64_t> next(kMaxLen + 2, 0);
  uint64_t code = 0;
  for (int l = 1; l <= kMaxLen; ++l) {
    code = (code + static_cast<uint64_t>(count[l - 1] * (l > 1))) << 1;
    next[l] = code;
  }
  std::vector<uint32_t> codes(lengths.size(), 0);
  for (size_t s = 0; s < lengths.size(); ++s)
    if (lengths[s]) codes[s] = static_cast<uint32_t>(next[lengths[s]]++);
  return codes;
}

}  // namespace

int64_t huffman_encoded_bits(const int32_t* symbols, int64_t n, const std::vector<uint8_t>& lengths) {
  int64_t bits = 0;
  const int64_t A = static_cast<int64_t>(lengths.size());
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = symbols[i];
    if (s < 0 || s >= A || lengths[s] == 0)
      fail("huffman: symbol " + std::to_string(s) + " has no code");
    bits += lengths[s];
  }
  return bits;
}

void huffman_encode(const int32_t* symbols, int64_t n, const std::vector<uint8_t>& lengths, uint8_t* out) {
  std::vector<int64_t> count;
  const std::vector<uint32_t> codes = canonical_codes(lengths, count);
  uint64_t acc = 0;  // pending bits, MSB-first
  int pending = 0;
  int64_t pos = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = symbols[i];
    const int l = lengths[s];
    acc = (acc << l) | codes[s];
    pending += l;
    while (pending >= 8) {
      pending -= 8;
      out[pos++] = static_cast<uint8_t>(acc >> pending);
    }
    acc &= (uint64_t{1} << pending) - 1;
  }
  if (pending > 0) out[pos++] = static_cast<uint8_t>(acc << (8 - pending));
}

void huffman_decode(const uint8_t* bytes, int64_t nbytes, int64_t n, const std::vector<uint8_t>& lengths,
                    int32_t* out) {
  // Everything is checked before use: n, nbytes and the lengths may come from a hostile file.
  if (nbytes < 0 || n < 0) fail("huffman: negative size");
  // every code takes at least one bit (written so that nothing overflows)
  if (n / 8 + (n % 8 != 0) > nbytes)
    fail("huffman: stream ends before its " + std::to_string(n) + " symbols (" +
                                std::to_string(nbytes) + " bytes hold at most 8 per byte)");
  std::vector<int64_t> count;
  canonical_codes(lengths, count);  // validates the lengths
  // symbols sorted by (length, symbol): the canonical order
  std::vector<int32_t> sorted;
  std::vector<int64_t> offset(kMaxLen + 2, 0), first(kMaxLen + 2, 0);
  for (int l = 1; l <= kMaxLen; ++l) {
    offset[l] = static_cast<int64_t>(sorted.size());
    for (size_t s = 0; s < lengths.size(); ++s)
      if (lengths[s] == l) sorted.push_back(static_cast<int32_t>(s));
  }
  int64_t code = 0;
  for (int l = 1; l <= kMaxLen; ++l) {
    first[l] = code;
    code = (code + count[l]) << 1;
  }
  int64_t bit = 0;
  const int64_t total_bits = nbytes * 8;  // nbytes >= n / 8 and both fit in memory: no overflow
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = 0;
    int l = 0;
    for (;;) {
      if (bit >= total_bits) fail("huffman: stream ends before symbol " + std::to_string(i));
      c = (c << 1) | ((bytes[bit >> 3] >> (7 - (bit & 7))) & 1);
      ++bit;
      if (++l > kMaxLen) fail("huffman: invalid code in the stream");
      if (c >= first[l] && c - first[l] < count[l]) break;
    }
    out[i] = sorted[offset[l] + (c - first[l])];
  }
  // the encoder pads the last byte with zero bits and writes nothing after it
  if (total_bits - bit >= 8)
    fail("huffman: " + std::to_string((total_bits - bit) / 8) +
                                " bytes left after the last symbol");
  if (bit < total_bits && (bytes[bit >> 3] & ((1u << (total_bits - bit)) - 1)) != 0)
    fail("huffman: nonzero padding after the last symbol");
}

}  // namespace sk
