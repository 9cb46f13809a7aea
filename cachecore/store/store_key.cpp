#include "cachecore/store/store_key.hpp"

#include <algorithm>

namespace cachecore::store {

std::array<std::uint8_t, StoreKey::k_size> StoreKey::bytes() const {
    std::array<std::uint8_t, k_size> out{};
    std::copy(magic.begin(), magic.end(), out.begin());
    out[4] = optimize;
    out[5] = k_format_version;
    std::copy(content.bytes.begin(), content.bytes.end(), out.begin() + 6);
    return out;
}

std::optional<StoreKey> StoreKey::from_bytes(std::string_view data) {
    // A key of another format version is not an error, just a key this build cannot use.
    if (data.size() != k_size || static_cast<std::uint8_t>(data[5]) != k_format_version) {
        return std::nullopt;
    }
    StoreKey key;
    for (std::size_t i = 0; i < 4; ++i) key.magic[i] = static_cast<std::uint8_t>(data[i]);
    key.optimize = static_cast<std::uint8_t>(data[4]);
    for (std::size_t i = 0; i < key.content.bytes.size(); ++i) {
        key.content.bytes[i] = static_cast<std::uint8_t>(data[6 + i]);
    }
    return key;
}

} // namespace cachecore::store
