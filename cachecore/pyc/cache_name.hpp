#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cachecore::pyc {

// A file name inside __pycache__: `<module>.<cache_tag>[.opt-<N>].pyc`, as importlib's
// cache_from_source() builds it. `module` is the source name without its final `.py`.
struct CacheName {
    std::string module;
    std::string cache_tag;
    int optimize = 0; // 0 = no opt suffix; N >= 1 = `.opt-N`

    bool operator==(const CacheName&) const = default;
};

// Rejects anything cache_from_source() could not have produced (empty parts, `opt-0`,
// leading zeros, non-digit levels, missing tag, wrong extension, '/' or NUL in the name).
std::optional<CacheName> parse_cache_name(std::string_view file_name);
std::string format_cache_name(const CacheName& name);

} // namespace cachecore::pyc
