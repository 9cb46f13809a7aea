#pragma once

// The FUSE-over-io_uring ABI (kernel 6.14+, FUSE protocol 7.42). Debian 12's linux-libc-dev
// (6.1) predates it, so the few definitions we need live here, checked against the kernel's
// include/uapi/linux/fuse.h layout by the static_asserts below.

#include <cstddef>
#include <cstdint>
#include <linux/fuse.h>

namespace fs::transport::abi {

inline constexpr std::uint64_t k_over_io_uring = 1ULL << 41; // FUSE_OVER_IO_URING (flags2 bit 9)
inline constexpr std::uint32_t k_init_ext = 1U << 30;        // FUSE_INIT_EXT
inline constexpr std::uint32_t k_max_pages = 1U << 22;       // FUSE_MAX_PAGES
inline constexpr std::uint32_t k_default_max_pages = 32;     // FUSE_DEFAULT_MAX_PAGES_PER_REQ
inline constexpr std::size_t k_min_read_buffer = 8192;       // FUSE_MIN_READ_BUFFER

enum Command : std::uint32_t { CmdRegister = 1, CmdCommitAndFetch = 2 };

struct RingEntInOut {
    std::uint64_t flags;
    std::uint64_t commit_id; // the request's unique, echoed back on commit
    std::uint32_t payload_sz;
    std::uint32_t padding;
    std::uint64_t reserved;
};

inline constexpr std::size_t k_in_out_header_size = 128; // FUSE_URING_IN_OUT_HEADER_SZ
inline constexpr std::size_t k_op_in_size = 128;         // FUSE_URING_OP_IN_OUT_SZ

struct RingHeader {
    char in_out[k_in_out_header_size]; // fuse_in_header on fetch, fuse_out_header on commit
    char op_in[k_op_in_size];          // the per-opcode header (fuse_read_in, ...), if any
    RingEntInOut ent_in_out;
};

// Lives in the 80-byte command area of a 128-byte SQE.
struct RingCmd {
    std::uint64_t flags;
    std::uint64_t commit_id;
    std::uint16_t qid;
    std::uint8_t padding[6];
};

static_assert(sizeof(RingEntInOut) == 32);
static_assert(offsetof(RingHeader, ent_in_out) == 256 && sizeof(RingHeader) == 288);
static_assert(sizeof(RingCmd) == 24);
static_assert(offsetof(fuse_init_out, flags2) == 32 && offsetof(fuse_init_in, flags2) == 16);

} // namespace fs::transport::abi
