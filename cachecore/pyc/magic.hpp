#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace cachecore::pyc {

// importlib.util.MAGIC_NUMBER: 2 bytes little-endian version number followed by "\r\n".
using Magic = std::array<std::uint8_t, 4>;

inline std::uint32_t magic_u32(const Magic& m) {
    return std::uint32_t(m[0]) | std::uint32_t(m[1]) << 8 | std::uint32_t(m[2]) << 16 |
           std::uint32_t(m[3]) << 24;
}

std::string magic_hex(const Magic& m);

} // namespace cachecore::pyc
