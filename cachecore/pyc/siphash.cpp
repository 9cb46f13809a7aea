#include "cachecore/pyc/siphash.hpp"

#include <bit>
#include <cstring>

namespace cachecore::pyc {

namespace {

std::uint64_t load_le64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
    return v;
}

struct State {
    std::uint64_t v0, v1, v2, v3;

    void round() {
        v0 += v1;
        v1 = std::rotl(v1, 13);
        v1 ^= v0;
        v0 = std::rotl(v0, 32);
        v2 += v3;
        v3 = std::rotl(v3, 16);
        v3 ^= v2;
        v0 += v3;
        v3 = std::rotl(v3, 21);
        v3 ^= v0;
        v2 += v1;
        v1 = std::rotl(v1, 17);
        v1 ^= v2;
        v2 = std::rotl(v2, 32);
    }
    void compress(std::uint64_t m, int c_rounds) {
        v3 ^= m;
        for (int i = 0; i < c_rounds; ++i) round();
        v0 ^= m;
    }
};

} // namespace

std::uint64_t siphash(int c_rounds, int d_rounds, const std::uint8_t (&key)[16],
                      std::string_view data) {
    const std::uint64_t k0 = load_le64(key);
    const std::uint64_t k1 = load_le64(key + 8);
    State s{k0 ^ 0x736f6d6570736575ull, k1 ^ 0x646f72616e646f6dull, k0 ^ 0x6c7967656e657261ull,
            k1 ^ 0x7465646279746573ull};

    const auto* p = reinterpret_cast<const std::uint8_t*>(data.data());
    const std::size_t n = data.size();
    const std::size_t full = n & ~std::size_t{7};
    for (std::size_t i = 0; i < full; i += 8) s.compress(load_le64(p + i), c_rounds);

    std::uint64_t last = std::uint64_t(n & 0xFF) << 56;
    for (std::size_t i = 0; i < (n & 7); ++i) last |= std::uint64_t(p[full + i]) << (8 * i);
    s.compress(last, c_rounds);

    s.v2 ^= 0xFF;
    for (int i = 0; i < d_rounds; ++i) s.round();
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

std::uint64_t source_hash(const Magic& magic, int python_minor, std::string_view source) {
    std::uint8_t key[16] = {};
    std::memcpy(key, magic.data(), magic.size());
    // CPython switched its internal SipHash from 2-4 to 1-3 in 3.11 (bpo-29410).
    if (python_minor >= 11) return siphash(1, 3, key, source);
    return siphash(2, 4, key, source);
}

} // namespace cachecore::pyc
