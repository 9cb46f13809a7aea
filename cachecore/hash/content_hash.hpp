#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace cachecore::hash {

// XXH3-128 of a source file's raw bytes: the content identity every cache entry hangs off.
struct ContentHash {
    std::array<std::uint8_t, 16> bytes{};

    static ContentHash of(std::string_view data);
    std::string hex() const;
    auto operator<=>(const ContentHash&) const = default;
};

struct ContentHashHasher {
    std::size_t operator()(const ContentHash& h) const noexcept {
        std::size_t v;
        std::memcpy(&v, h.bytes.data(), sizeof v);
        return v;
    }
};

} // namespace cachecore::hash
