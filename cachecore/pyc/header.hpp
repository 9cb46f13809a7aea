#pragma once

#include "cachecore/pyc/magic.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cachecore::pyc {

// How the served pyc proves its freshness to CPython (PEP 552).
enum class PycMode { Timestamp, CheckedHash, UncheckedHash };

std::optional<PycMode> parse_pyc_mode(std::string_view text); // "timestamp", "checked-hash", ...
std::string_view to_string(PycMode mode);

// 12 bytes for 3.6 (magic, mtime, size), 16 bytes for 3.7+ (magic, flags, mtime+size or hash).
std::size_t header_size(int python_minor);

// What the header describes about the source the body was compiled from.
struct SourceFacts {
    std::int64_t mtime_sec = 0;    // whole seconds; truncated to 32 bits in the header
    std::uint64_t size = 0;        // byte length; & 0xFFFFFFFF in the header
    std::uint64_t source_hash = 0; // _imp.source_hash of the bytes (hash modes only)
};

// For 3.6 (no PEP 552) hash modes fall back to a timestamp header.
std::string build_header(const Magic& magic, int python_minor, PycMode mode,
                         const SourceFacts& facts);

struct ParsedHeader {
    Magic magic{};
    std::uint32_t flags = 0;
    bool hash_based = false;
    bool check_source = false;
    std::uint32_t mtime = 0;
    std::uint32_t size = 0;
    std::uint64_t hash = 0;
    std::size_t length = 0; // header length in bytes
};

// Parses the header the way importlib's _classify_pyc does (rejects unknown flag bits).
std::optional<ParsedHeader> parse_header(std::string_view data, int python_minor);

} // namespace cachecore::pyc
