#pragma once

#include "cachecore/pyc/magic.hpp"

#include <cstdint>
#include <string_view>

namespace cachecore::pyc {

// SipHash-c-d with a 128-bit key (16 bytes, little-endian k0 then k1), 64-bit output.
std::uint64_t siphash(int c_rounds, int d_rounds, const std::uint8_t (&key)[16],
                      std::string_view data);

// CPython's _imp.source_hash(): key = the 4 magic bytes then 12 zero bytes, over the raw source
// bytes; SipHash-2-4 on 3.7-3.10, SipHash-1-3 on 3.11+.
std::uint64_t source_hash(const Magic& magic, int python_minor, std::string_view source);

} // namespace cachecore::pyc
