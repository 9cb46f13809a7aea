#pragma once

// The properties the fuzz targets check, shared with the unit test that replays the committed
// corpus (tests/unit/test_fuzz_corpus.cpp), so every finding stays covered by the gcc/CI build.
// Each check returns an empty string when the input behaves, else what went wrong; the fuzz
// target aborts on it, the unit test reports it.

#include "cachecore/pyc/cache_name.hpp"
#include "cachecore/pyc/header.hpp"
#include "cachecore/python/frame_protocol.hpp"
#include "cachecore/store/entry.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace pycachefs_fuzz {

// Splits fuzz input into typed pieces; reads past the end yield zeros / empty strings.
class InputReader {
public:
    explicit InputReader(std::string_view data) : m_data(data) {}

    std::uint8_t u8() {
        if (m_data.empty()) return 0;
        auto v = static_cast<std::uint8_t>(m_data.front());
        m_data.remove_prefix(1);
        return v;
    }
    std::uint32_t u32() {
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v |= std::uint32_t(u8()) << (8 * i);
        return v;
    }
    std::uint64_t u64() { return std::uint64_t(u32()) | std::uint64_t(u32()) << 32; }
    // A string whose length is the next byte (capped by what is left).
    std::string_view short_string() {
        const std::size_t wanted = u8(); // before m_data.size(): u8() shrinks it
        const std::size_t n = std::min(wanted, m_data.size());
        auto s = m_data.substr(0, n);
        m_data.remove_prefix(n);
        return s;
    }
    std::string_view rest() {
        auto s = m_data;
        m_data = {};
        return s;
    }

private:
    std::string_view m_data;
};

// --- cache file names --------------------------------------------------------------------

inline bool valid_cache_name(const cachecore::pyc::CacheName& n) {
    auto clean = [](std::string_view s) {
        return !s.empty() && s.find('/') == s.npos && s.find('\0') == s.npos;
    };
    return clean(n.module) && clean(n.cache_tag) && n.cache_tag.find('.') == std::string::npos &&
           !n.cache_tag.starts_with("opt-") && n.optimize >= 0 && n.optimize <= 999999999;
}

inline std::string check_cache_name(std::string_view data) {
    using namespace cachecore::pyc;
    // 1. Arbitrary bytes as a name: whatever parses must format back to the very same bytes
    // (a name that parsed to something else would be served under the wrong identity).
    if (auto parsed = parse_cache_name(data)) {
        if (!valid_cache_name(*parsed)) return "parse_cache_name accepted an invalid name";
        if (format_cache_name(*parsed) != data) return "format(parse(name)) != name";
    }
    // 2. A name built from parts: every valid CacheName survives format -> parse.
    InputReader in(data);
    CacheName name;
    name.optimize = int(in.u32() % 4 == 0 ? in.u32() % 1000000000u : in.u8() % 3);
    name.cache_tag = std::string(in.short_string());
    name.module = std::string(in.rest());
    if (valid_cache_name(name)) {
        auto round = parse_cache_name(format_cache_name(name));
        if (!round) return "a valid CacheName did not parse back";
        if (!(*round == name)) return "parse(format(name)) != name";
    }
    return {};
}

// --- pyc headers -------------------------------------------------------------------------

inline std::string check_pyc_header(std::string_view data) {
    using namespace cachecore::pyc;
    InputReader in(data);
    const int minor = 6 + in.u8() % 9; // 3.6 .. 3.14
    const std::string_view raw = data.substr(std::min<std::size_t>(1, data.size()));

    // 1. Arbitrary bytes: a parsed header rebuilds to the same bytes, except the legal flags
    // value 0b10 (check_source without hash_based) that importlib reads as a timestamp pyc.
    if (auto h = parse_header(raw, minor)) {
        if (h->length != header_size(minor) || raw.size() < h->length)
            return "parse_header length is wrong";
        if (minor >= 7 && (h->flags & ~3u) != 0) return "parse_header accepted unknown flags";
        if (h->flags != 2) {
            PycMode mode = !h->hash_based    ? PycMode::Timestamp
                           : h->check_source ? PycMode::CheckedHash
                                             : PycMode::UncheckedHash;
            SourceFacts facts{h->mtime, h->size, h->hash};
            if (build_header(h->magic, minor, mode, facts) != raw.substr(0, h->length))
                return "build_header(parse_header(bytes)) != bytes";
        }
    }

    // 2. Facts -> header -> parsed facts.
    Magic magic{};
    for (auto& b : magic) b = in.u8();
    const auto mode = static_cast<PycMode>(in.u8() % 3);
    SourceFacts facts;
    facts.mtime_sec = static_cast<std::int64_t>(in.u64());
    facts.size = in.u64();
    facts.source_hash = in.u64();
    const std::string header = build_header(magic, minor, mode, facts);
    if (header.size() != header_size(minor)) return "build_header size != header_size";
    auto h = parse_header(header + std::string(in.rest()), minor);
    if (!h) return "parse_header rejected build_header's output";
    if (h->magic != magic) return "magic lost in the round trip";
    const bool hashed = minor >= 7 && mode != PycMode::Timestamp;
    if (h->hash_based != hashed) return "hash_based flag lost in the round trip";
    if (hashed) {
        if (h->hash != facts.source_hash) return "source hash lost in the round trip";
        if (h->check_source != (mode == PycMode::CheckedHash)) return "check_source lost";
    } else {
        if (h->mtime != std::uint32_t(std::uint64_t(facts.mtime_sec) & 0xFFFFFFFFu))
            return "mtime lost in the round trip";
        if (h->size != std::uint32_t(facts.size & 0xFFFFFFFFu))
            return "size lost in the round trip";
    }
    return {};
}

// --- worker protocol ---------------------------------------------------------------------

inline std::string check_frame_protocol(std::string_view data) {
    namespace frame = cachecore::python::frame;
    InputReader in(data);
    // A small limit as well, so that the TooLarge path is reachable with small inputs.
    const std::size_t max_body = in.u8() % 2 ? frame::k_max_body : std::size_t(in.u8());
    std::string_view stream = in.rest();

    // Decode frames one after another the way the pool reads a worker's stdout.
    while (true) {
        auto d = frame::decode_frame(stream, max_body);
        if (d.status == frame::DecodeStatus::NeedMore) {
            if (stream.size() >= frame::k_header_size &&
                stream.size() - frame::k_header_size >= frame::read_length(stream))
                return "NeedMore although the whole frame is there";
            break;
        }
        if (d.status == frame::DecodeStatus::TooLarge) {
            if (frame::read_length(stream) <= max_body) return "TooLarge for a frame within limit";
            break;
        }
        if (d.consumed != frame::k_header_size + d.body.size() || d.consumed > stream.size() ||
            d.body.data() != stream.data() + frame::k_header_size ||
            d.body.size() != frame::read_length(stream) || d.body.size() > max_body)
            return "decode_frame returned an inconsistent frame";
        if (frame::encode_frame(d.body) != stream.substr(0, d.consumed))
            return "encode_frame(decode_frame(bytes)) != bytes";

        if (auto req = frame::decode_request_body(d.body)) {
            if (5 + req->filename.size() + req->source.size() != d.body.size())
                return "decode_request_body lost bytes";
            if (req->optimize <= 2 &&
                frame::encode_request(req->optimize, req->filename, req->source) !=
                    frame::encode_frame(d.body))
                return "encode_request(decode_request_body(body)) != body";
        }
        if (auto reply = frame::decode_reply_body(d.body)) {
            if (frame::encode_reply_body(*reply) != d.body)
                return "encode_reply_body(decode_reply_body(body)) != body";
        }
        stream.remove_prefix(d.consumed);
    }

    // Bodies built from parts survive encode -> decode.
    InputReader parts(data);
    const int optimize = parts.u8() % 3;
    const std::string filename(parts.short_string());
    const std::string source(parts.rest());
    const std::string req_frame = frame::encode_request(optimize, filename, source);
    auto d = frame::decode_frame(req_frame);
    if (d.status != frame::DecodeStatus::Complete || d.consumed != req_frame.size())
        return "encode_request produced an undecodable frame";
    auto req = frame::decode_request_body(d.body);
    if (!req || req->optimize != optimize || req->filename != filename || req->source != source)
        return "request round trip failed";
    frame::Reply reply;
    reply.kind = static_cast<frame::ReplyKind>(optimize);
    if (reply.kind == frame::ReplyKind::Error) {
        reply.error_line = static_cast<int>(std::uint32_t(filename.size()) * 2654435761u);
        reply.error_type = filename;
        reply.error_message = source;
    } else {
        (reply.kind == frame::ReplyKind::Code ? reply.code : reply.greeting) = source;
    }
    auto back = frame::decode_reply_body(frame::encode_reply_body(reply));
    if (!back || back->kind != reply.kind || back->code != reply.code ||
        back->greeting != reply.greeting || back->error_type != reply.error_type ||
        back->error_message != reply.error_message || back->error_line != reply.error_line)
        return "reply round trip failed";
    return {};
}

// --- store values ------------------------------------------------------------------------

inline bool same_entry(const cachecore::store::Entry& a, const cachecore::store::Entry& b) {
    return a.kind == b.kind && a.code == b.code && a.error.type == b.error.type &&
           a.error.message == b.error.message && a.error.line == b.error.line &&
           a.source_hash == b.source_hash && a.created == b.created;
}

inline std::string check_store_entry(std::string_view data) {
    using namespace cachecore::store;
    // 1. Arbitrary bytes: decode and entry_problem agree, and what decodes re-encodes exactly.
    auto decoded = decode_entry(data);
    auto problem = entry_problem(data);
    if (decoded.has_value() == problem.has_value())
        return "decode_entry and entry_problem disagree";
    if (decoded && encode_entry(*decoded) != data) return "encode(decode(value)) != value";
    if (decoded && peek_entry_kind(data) != decoded->kind) return "peek_entry_kind disagrees";

    // 2. An entry built from parts round-trips, and any single damaged byte is detected.
    InputReader in(data);
    Entry e;
    e.kind = in.u8() % 2 ? EntryKind::Code : EntryKind::CompileError;
    e.source_hash = in.u64();
    e.created = static_cast<std::int64_t>(in.u64());
    const std::uint32_t damage_at = in.u32();
    std::uint8_t damage_xor = in.u8();
    if (damage_xor == 0) damage_xor = 1;
    if (e.kind == EntryKind::Code) {
        e.code = std::string(in.rest());
    } else {
        e.error.line = static_cast<int>(in.u32());
        e.error.type = std::string(in.short_string());
        e.error.message = std::string(in.rest());
    }
    std::string value = encode_entry(e);
    auto back = decode_entry(value);
    if (!back || !same_entry(*back, e)) return "entry round trip failed";
    if (entry_problem(value)) return "entry_problem flags a fresh entry";

    value[damage_at % value.size()] = char(value[damage_at % value.size()] ^ damage_xor);
    if (decode_entry(value)) return "a damaged entry decoded";
    if (!entry_problem(value)) return "entry_problem missed a damaged entry";
    value.pop_back();
    if (decode_entry(value)) return "a truncated entry decoded";
    return {};
}

// The body of every fuzz target: run one check on the input and abort on a problem, which is
// what makes libFuzzer save the input.
inline int run_check(const char* target, std::string (*check)(std::string_view),
                     const std::uint8_t* data, std::size_t size) {
    const std::string problem = check(std::string_view(reinterpret_cast<const char*>(data), size));
    if (!problem.empty()) {
        std::fprintf(stderr, "%s: %s\n", target, problem.c_str());
        std::abort();
    }
    return 0;
}

} // namespace pycachefs_fuzz
