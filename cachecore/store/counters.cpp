#include "cachecore/store/counters_codec.hpp"
#include "cachecore/store/le_bytes.hpp"

#include <bit>

namespace cachecore::store {

Counters& Counters::operator+=(const Counters& o) {
    hits += o.hits;
    misses += o.misses;
    compiles += o.compiles;
    compile_errors += o.compile_errors;
    pycs_served += o.pycs_served;
    bytes_served += o.bytes_served;
    compile_seconds += o.compile_seconds;
    return *this;
}

std::string encode_counters(const Counters& c) {
    std::string out;
    for (std::uint64_t v : {c.hits, c.misses, c.compiles, c.compile_errors, c.pycs_served,
                            c.bytes_served, std::bit_cast<std::uint64_t>(c.compile_seconds)}) {
        detail::append_u64(out, v);
    }
    return out;
}

Counters decode_counters(std::string_view value) {
    Counters c;
    if (value.size() != 7 * 8) return c;
    auto at = [&](int i) { return detail::load_u64(value.data() + 8 * i); };
    c.hits = at(0);
    c.misses = at(1);
    c.compiles = at(2);
    c.compile_errors = at(3);
    c.pycs_served = at(4);
    c.bytes_served = at(5);
    c.compile_seconds = std::bit_cast<double>(at(6));
    return c;
}

} // namespace cachecore::store
