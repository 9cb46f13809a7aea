#include "cachecore/pyc/header.hpp"

#include <cstring>

namespace cachecore::pyc {

namespace {

void put_le32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(char(v >> (8 * i) & 0xFF));
}

std::uint32_t get_le32(std::string_view d, std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | std::uint8_t(d[at + i]);
    return v;
}

constexpr std::uint32_t k_flag_hash_based = 0b01;
constexpr std::uint32_t k_flag_check_source = 0b10;

bool has_pep552(int python_minor) {
    return python_minor >= 7;
}

} // namespace

std::optional<PycMode> parse_pyc_mode(std::string_view text) {
    if (text == "timestamp" || text == "TIMESTAMP") return PycMode::Timestamp;
    if (text == "checked-hash" || text == "CHECKED_HASH") return PycMode::CheckedHash;
    if (text == "unchecked-hash" || text == "UNCHECKED_HASH") return PycMode::UncheckedHash;
    return std::nullopt;
}

std::string_view to_string(PycMode mode) {
    switch (mode) {
    case PycMode::Timestamp:
        return "timestamp";
    case PycMode::CheckedHash:
        return "checked-hash";
    case PycMode::UncheckedHash:
        return "unchecked-hash";
    }
    return "timestamp";
}

std::size_t header_size(int python_minor) {
    return has_pep552(python_minor) ? 16 : 12;
}

std::string build_header(const Magic& magic, int python_minor, PycMode mode,
                         const SourceFacts& facts) {
    std::string out;
    out.reserve(16);
    out.append(reinterpret_cast<const char*>(magic.data()), magic.size());
    // Both fields are masked the way importlib writes them (`& 0xFFFFFFFF`); the cast of a
    // negative mtime wraps modulo 2^32 exactly like that mask.
    const auto mtime = std::uint32_t(std::uint64_t(facts.mtime_sec) & 0xFFFFFFFFu);
    const auto size = std::uint32_t(facts.size & 0xFFFFFFFFu);
    if (!has_pep552(python_minor)) {
        put_le32(out, mtime);
        put_le32(out, size);
        return out;
    }
    if (mode == PycMode::Timestamp) {
        put_le32(out, 0);
        put_le32(out, mtime);
        put_le32(out, size);
        return out;
    }
    std::uint32_t flags = k_flag_hash_based;
    if (mode == PycMode::CheckedHash) flags |= k_flag_check_source;
    put_le32(out, flags);
    put_le32(out, std::uint32_t(facts.source_hash));
    put_le32(out, std::uint32_t(facts.source_hash >> 32));
    return out;
}

std::optional<ParsedHeader> parse_header(std::string_view data, int python_minor) {
    const std::size_t length = header_size(python_minor);
    if (data.size() < length) return std::nullopt;
    ParsedHeader h;
    h.length = length;
    std::memcpy(h.magic.data(), data.data(), h.magic.size());
    if (!has_pep552(python_minor)) {
        h.mtime = get_le32(data, 4);
        h.size = get_le32(data, 8);
        return h;
    }
    h.flags = get_le32(data, 4);
    if (h.flags & ~(k_flag_hash_based | k_flag_check_source)) return std::nullopt;
    h.hash_based = (h.flags & k_flag_hash_based) != 0;
    if (h.hash_based) {
        h.check_source = (h.flags & k_flag_check_source) != 0;
        h.hash = std::uint64_t(get_le32(data, 8)) | std::uint64_t(get_le32(data, 12)) << 32;
    } else {
        // flags == 0b10 without bit 0 is legal and read as a timestamp pyc (_classify_pyc).
        h.mtime = get_le32(data, 8);
        h.size = get_le32(data, 12);
    }
    return h;
}

} // namespace cachecore::pyc
