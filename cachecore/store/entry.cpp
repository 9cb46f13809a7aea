#include "cachecore/store/entry.hpp"

#include "cachecore/store/le_bytes.hpp"

#include <xxhash.h>

namespace cachecore::store {

namespace {

using namespace detail;

// Header offsets. Version 1 of the value format; a different version simply fails to decode.
constexpr char k_magic[4] = {'P', 'C', 'F', 'E'};
constexpr std::uint8_t k_entry_version = 1;
constexpr std::size_t k_off_version = 4;
constexpr std::size_t k_off_kind = 5;
constexpr std::size_t k_off_reserved = 6; // u16, zero
constexpr std::size_t k_off_length = 8;
constexpr std::size_t k_off_checksum = 12;
constexpr std::size_t k_off_source_hash = 20;
constexpr std::size_t k_off_created = 28;
static_assert(k_off_created + 8 == k_entry_header_size);

// XXH3-64 of the payload, seeded with a hash of the other header fields: a flipped bit anywhere
// in the value (also in source_hash, which ends up in served pyc headers) is detected.
std::uint64_t checksum(std::string_view header, std::string_view payload) {
    char fields[k_entry_header_size - 8];
    std::memcpy(fields, header.data(), k_off_checksum);
    std::memcpy(fields + k_off_checksum, header.data() + k_off_source_hash,
                k_entry_header_size - k_off_source_hash);
    XXH64_hash_t seed = XXH3_64bits(fields, sizeof fields);
    return XXH3_64bits_withSeed(payload.data(), payload.size(), seed);
}

void append_string(std::string& out, const std::string& s) {
    append_u32(out, static_cast<std::uint32_t>(s.size()));
    out += s;
}

bool read_string(std::string_view& in, std::string& out) {
    if (in.size() < 4) return false;
    std::uint32_t n = load_u32(in.data());
    in.remove_prefix(4);
    if (in.size() < n) return false;
    out.assign(in.substr(0, n));
    in.remove_prefix(n);
    return true;
}

// Parses and checks; on failure sets *why and returns false.
bool parse(std::string_view value, Entry* entry, std::string* why) {
    auto fail = [&](const char* reason) {
        if (why) *why = reason;
        return false;
    };
    if (value.size() < k_entry_header_size) return fail("shorter than the entry header");
    if (std::memcmp(value.data(), k_magic, sizeof k_magic) != 0) return fail("bad format magic");
    if (static_cast<std::uint8_t>(value[k_off_version]) != k_entry_version) {
        return fail("unknown entry format version");
    }
    auto kind = static_cast<EntryKind>(value[k_off_kind]);
    if (kind != EntryKind::Code && kind != EntryKind::CompileError) return fail("unknown kind");
    if (value[k_off_reserved] != 0 || value[k_off_reserved + 1] != 0) {
        return fail("reserved bytes set");
    }
    std::string_view header = value.substr(0, k_entry_header_size);
    std::string_view payload = value.substr(k_entry_header_size);
    if (load_u32(value.data() + k_off_length) != payload.size()) return fail("length mismatch");
    if (load_u64(value.data() + k_off_checksum) != checksum(header, payload)) {
        return fail("checksum mismatch");
    }
    Entry out;
    out.kind = kind;
    out.source_hash = load_u64(value.data() + k_off_source_hash);
    out.created = static_cast<std::int64_t>(load_u64(value.data() + k_off_created));
    if (kind == EntryKind::Code) {
        out.code.assign(payload);
    } else {
        std::string_view in = payload;
        if (!read_string(in, out.error.type) || !read_string(in, out.error.message) ||
            in.size() != 4) {
            return fail("malformed compile error payload");
        }
        out.error.line = static_cast<int>(static_cast<std::int32_t>(load_u32(in.data())));
    }
    if (entry) *entry = std::move(out);
    return true;
}

} // namespace

std::string encode_entry(const Entry& entry) {
    std::string payload;
    if (entry.kind == EntryKind::CompileError) {
        append_string(payload, entry.error.type);
        append_string(payload, entry.error.message);
        append_u32(payload,
                   static_cast<std::uint32_t>(static_cast<std::int32_t>(entry.error.line)));
    }
    const std::string& body = entry.kind == EntryKind::Code ? entry.code : payload;

    std::string out;
    out.reserve(k_entry_header_size + body.size());
    out.append(k_magic, sizeof k_magic);
    out.push_back(static_cast<char>(k_entry_version));
    out.push_back(static_cast<char>(entry.kind));
    out.append(2, '\0');
    append_u32(out, static_cast<std::uint32_t>(body.size()));
    append_u64(out, 0); // checksum, filled below
    append_u64(out, entry.source_hash);
    append_u64(out, static_cast<std::uint64_t>(entry.created));
    out += body;
    std::string_view view(out);
    store_u64(out.data() + k_off_checksum,
              checksum(view.substr(0, k_entry_header_size), view.substr(k_entry_header_size)));
    return out;
}

std::optional<Entry> decode_entry(std::string_view value) {
    Entry entry;
    if (!parse(value, &entry, nullptr)) return std::nullopt;
    return entry;
}

std::optional<std::string> entry_problem(std::string_view value) {
    std::string why;
    if (parse(value, nullptr, &why)) return std::nullopt;
    return why;
}

std::optional<EntryKind> peek_entry_kind(std::string_view value) {
    if (value.size() < k_entry_header_size) return std::nullopt;
    return static_cast<EntryKind>(value[k_off_kind]);
}

} // namespace cachecore::store
