#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

// The byte protocol between the pool and driver.py. Pure functions, no I/O, so a fuzzer can
// drive them directly. Every frame is a u32 little-endian body length followed by the body.
namespace cachecore::python::frame {

inline constexpr std::size_t k_header_size = 4;
// A reply larger than this is treated as a protocol error (a broken or hostile worker).
inline constexpr std::size_t k_max_body = std::size_t(1) << 30;

std::string encode_frame(std::string_view body);

enum class DecodeStatus { Complete, NeedMore, TooLarge };
struct Decoded {
    DecodeStatus status = DecodeStatus::NeedMore;
    std::string_view body; // valid when Complete; points into the input
    std::size_t consumed = 0;
};
// Decodes the first frame of `input` without copying.
Decoded decode_frame(std::string_view input, std::size_t max_body = k_max_body);
// The length a frame header announces (input must hold at least k_header_size bytes).
std::uint32_t read_length(std::string_view header);

struct Request {
    int optimize = 0;
    std::string filename;
    std::string source;
};
// A whole frame (header included), ready to be written to the worker's stdin.
std::string encode_request(int optimize, std::string_view filename, std::string_view source);
std::optional<Request> decode_request_body(std::string_view body);

enum class ReplyKind : std::uint8_t { Code = 0, Error = 1, Hello = 2 };
struct Reply {
    ReplyKind kind = ReplyKind::Error;
    std::string code;       // Code: marshal.dumps(code object)
    std::string error_type; // Error
    std::string error_message;
    int error_line = 0;
    std::string greeting; // Hello
};
std::string encode_reply_body(const Reply& reply); // the driver's side, for tests and fuzzing
std::optional<Reply> decode_reply_body(std::string_view body);

} // namespace cachecore::python::frame
