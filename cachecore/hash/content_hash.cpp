#include "cachecore/hash/content_hash.hpp"

#include "cachecore/util/hex.hpp"

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
    return util::to_hex({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
}

} // namespace cachecore::hash
