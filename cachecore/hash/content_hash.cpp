#include "cachecore/hash/content_hash.hpp"

#include <xxhash.h>

namespace cachecore::hash {

ContentHash ContentHash::of(std::string_view data) {
    // The canonical form is big-endian and fixed by xxHash, so stored keys are portable.
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits(data.data(), data.size()));
    ContentHash h;
    static_assert(sizeof canonical.digest == sizeof h.bytes);
    std::memcpy(h.bytes.data(), canonical.digest, h.bytes.size());
    return h;
}

std::string ContentHash::hex() const {
    static constexpr char k_digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (std::uint8_t b : bytes) {
        out.push_back(k_digits[b >> 4]);
        out.push_back(k_digits[b & 0xF]);
    }
    return out;
}

} // namespace cachecore::hash
