#pragma once

#include "cachecore/hash/content_hash.hpp"
#include "cachecore/pyc/magic.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace cachecore::store {

// Bump when the compile recipe or the entry format changes: old entries then simply miss.
inline constexpr std::uint8_t k_format_version = 1;

// The identity of one compiled body: which bytes, which bytecode (magic), which optimize level.
// Serialized as magic(4) | optimize(1) | format version(1) | content hash(16) so that one
// interpreter's entries are contiguous in the LMDB key order.
struct StoreKey {
    hash::ContentHash content;
    pyc::Magic magic{};
    std::uint8_t optimize = 0;

    static constexpr std::size_t k_size = 22;
    std::array<std::uint8_t, k_size> bytes() const;
    static std::optional<StoreKey> from_bytes(std::string_view data); // checks the version
    auto operator<=>(const StoreKey&) const = default;
};

} // namespace cachecore::store
