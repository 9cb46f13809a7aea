#include "cachecore/pyc/magic.hpp"

namespace cachecore::pyc {

std::string magic_hex(const Magic& m) {
    static constexpr char k_digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(m.size() * 2);
    for (std::uint8_t b : m) {
        out.push_back(k_digits[b >> 4]);
        out.push_back(k_digits[b & 0xF]);
    }
    return out;
}

} // namespace cachecore::pyc
