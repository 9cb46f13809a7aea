#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cachecore::util {

// "2G", "500M", "1.5GiB", "4096", "10k": binary multiples (K = 1024), as ccache's max_size.
std::optional<std::uint64_t> parse_size(std::string_view text);
std::string format_size(std::uint64_t bytes); // "1.5 GiB"

} // namespace cachecore::util
