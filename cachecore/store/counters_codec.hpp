#pragma once

#include "cachecore/store/store.hpp"

#include <string>
#include <string_view>

namespace cachecore::store {

// Counters are stored as 7 little-endian 8-byte fields (the double as its IEEE-754 bits).
std::string encode_counters(const Counters& c);
// A value of an unexpected size reads as zero: counters are statistics, never worth an error.
Counters decode_counters(std::string_view value);

} // namespace cachecore::store
