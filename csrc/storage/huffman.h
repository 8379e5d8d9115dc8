// Canonical Huffman coding of small-alphabet symbol streams (codebook and block-sparse indices
// in sparsekit's compressed checkpoint format). Codes are canonical: symbols sorted by (code
// length, symbol) get consecutive codes, so the lengths alone describe the code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sk {

// Bits of the encoding of `symbols` (each < lengths.size(), with lengths[s] in 1..32 for every
// symbol that occurs); raises ValueError on a symbol without a code.
int64_t huffman_encoded_bits(const int32_t* symbols, int64_t n, const std::vector<uint8_t>& lengths);

// Writes the codes MSB-first into out (ceil(bits / 8) bytes, zero-filled past the last code).
void huffman_encode(const int32_t* symbols, int64_t n, const std::vector<uint8_t>& lengths, uint8_t* out);

// Decodes n symbols from bytes; raises ValueError, before writing anything, if n
// exceeds 8 * nbytes (every code has at least one bit) or the lengths do not form a prefix
// code, and while decoding if the stream ends early, holds an invalid code, or has more than
// the zero padding of its last byte after the n-th symbol. Nothing is trusted: n, nbytes and
// the lengths may come from a hostile file.
void huffman_decode(const uint8_t* bytes, int64_t nbytes, int64_t n, const std::vector<uint8_t>& lengths,
                    int32_t* out);

}  // namespace sk
