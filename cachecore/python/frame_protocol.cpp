#include "cachecore/python/frame_protocol.hpp"

#include <algorithm>

namespace cachecore::python::frame {
namespace {

void put_u32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}

std::uint32_t get_u32(std::string_view in) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(std::uint8_t(in[i])) << (8 * i);
    return v;
}

} // namespace

std::uint32_t read_length(std::string_view header) {
    return get_u32(header);
}

std::string encode_frame(std::string_view body) {
    std::string out;
    out.reserve(k_header_size + body.size());
    put_u32(out, std::uint32_t(body.size()));
    out.append(body);
    return out;
}

Decoded decode_frame(std::string_view input, std::size_t max_body) {
    Decoded d;
    if (input.size() < k_header_size) return d;
    std::size_t length = get_u32(input);
    if (length > max_body) {
        d.status = DecodeStatus::TooLarge;
        return d;
    }
    if (input.size() - k_header_size < length) return d;
    d.status = DecodeStatus::Complete;
    d.body = input.substr(k_header_size, length);
    d.consumed = k_header_size + length;
    return d;
}

std::string encode_request(int optimize, std::string_view filename, std::string_view source) {
    std::string out;
    std::size_t body = 1 + 4 + filename.size() + source.size();
    out.reserve(k_header_size + body);
    put_u32(out, std::uint32_t(body));
    // CPython treats every level above 2 like 2, and -1 would mean "the worker's own -O".
    out.push_back(char(std::clamp(optimize, 0, 2)));
    put_u32(out, std::uint32_t(filename.size()));
    out.append(filename);
    out.append(source);
    return out;
}

std::optional<Request> decode_request_body(std::string_view body) {
    if (body.size() < 5) return std::nullopt;
    Request r;
    r.optimize = std::uint8_t(body[0]);
    std::size_t name_len = get_u32(body.substr(1));
    if (body.size() - 5 < name_len) return std::nullopt;
    r.filename = std::string(body.substr(5, name_len));
    r.source = std::string(body.substr(5 + name_len));
    return r;
}

std::string encode_reply_body(const Reply& reply) {
    std::string out(1, char(reply.kind));
    switch (reply.kind) {
    case ReplyKind::Code:
        out += reply.code;
        break;
    case ReplyKind::Hello:
        out += reply.greeting;
        break;
    case ReplyKind::Error:
        put_u32(out, std::uint32_t(reply.error_line));
        put_u32(out, std::uint32_t(reply.error_type.size()));
        out += reply.error_type;
        out += reply.error_message;
        break;
    }
    return out;
}

std::optional<Reply> decode_reply_body(std::string_view body) {
    if (body.empty()) return std::nullopt;
    Reply r;
    std::string_view rest = body.substr(1);
    switch (std::uint8_t(body[0])) {
    case 0:
        r.kind = ReplyKind::Code;
        r.code = std::string(rest);
        return r;
    case 2:
        r.kind = ReplyKind::Hello;
        r.greeting = std::string(rest);
        return r;
    case 1: {
        if (rest.size() < 8) return std::nullopt;
        r.kind = ReplyKind::Error;
        r.error_line = int(std::int32_t(get_u32(rest)));
        std::size_t type_len = get_u32(rest.substr(4));
        rest.remove_prefix(8);
        if (rest.size() < type_len) return std::nullopt;
        r.error_type = std::string(rest.substr(0, type_len));
        r.error_message = std::string(rest.substr(type_len));
        return r;
    }
    default:
        return std::nullopt;
    }
}

} // namespace cachecore::python::frame
