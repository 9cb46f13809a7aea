#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cachecore::store {

enum class EntryKind : std::uint8_t { Code = 1, CompileError = 2 };

struct CompileErrorInfo {
    std::string type;    // "SyntaxError"
    std::string message; // CPython's message
    int line = 0;
};

// One stored value. The pyc header is never stored: it depends on the file being served.
struct Entry {
    EntryKind kind = EntryKind::Code;
    std::string code;              // marshal.dumps(code) when kind == Code
    CompileErrorInfo error;        // when kind == CompileError (a negative entry)
    std::uint64_t source_hash = 0; // _imp.source_hash of the source for this magic (hash pycs)
    std::int64_t created = 0;      // unix seconds
};

// Value layout: a fixed little-endian header (format magic "PCFE", version, kind, payload
// length, XXH3-64 of the payload, source hash, created time) followed by the payload.
std::string encode_entry(const Entry& entry);
// nullopt when the bytes are not a well-formed entry of this version or the checksum fails.
std::optional<Entry> decode_entry(std::string_view value);

inline constexpr std::size_t k_entry_header_size = 36;
// Why `value` is not a well-formed entry (e.g. "checksum mismatch"); nullopt when it is fine.
std::optional<std::string> entry_problem(std::string_view value);
// The kind byte alone, unchecked (for cheap listings); nullopt when the header is not there.
std::optional<EntryKind> peek_entry_kind(std::string_view value);

} // namespace cachecore::store
