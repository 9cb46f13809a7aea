#pragma once

#include <string>
#include <string_view>

namespace cachecore::util {

// Lower-case hex of raw bytes (keys, hashes, magic numbers in messages and stats).
inline std::string to_hex(std::string_view bytes) {
    static constexpr char k_digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char b : bytes) {
        out.push_back(k_digits[b >> 4]);
        out.push_back(k_digits[b & 0xF]);
    }
    return out;
}

} // namespace cachecore::util
