#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace fs::overlay {

// Counters of the running mount, per served interpreter; readable through the mount root's
// `user.pycachefs.stats` extended attribute (see `pycachefs stats MOUNTPOINT`).
struct LiveCounters {
    std::atomic<std::uint64_t> lookups{0};     // kernel LOOKUPs of pyc names
    std::atomic<std::uint64_t> pycs_served{0}; // pyc files delivered (reads at offset 0)
    std::atomic<std::uint64_t> bytes_served{0};
    std::atomic<std::uint64_t> denied{0}; // requests refused because the source is unreadable
};

// FUSE requests by kind: what the kernel could not answer from its caches.
enum class Request : std::uint8_t {
    Lookup,
    Forget,
    Getattr,
    Readlink,
    Open,
    Read,
    Release,
    Flush,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Statfs,
    Getxattr,
    Listxattr,
    Access,
    Ioctl,
    Setattr,
    Mknod,
    Mkdir,
    Symlink,
    Link,
    Unlink,
    Rmdir,
    Rename,
    Create,
    Write,
    Fsync,
    Setxattr,
    Removexattr,
    Count
};
inline constexpr std::array<const char*, std::size_t(Request::Count)> k_request_names = {
    "lookup",  "forget",   "getattr",   "readlink", "open",        "read",
    "release", "flush",    "opendir",   "readdir",  "readdirplus", "releasedir",
    "statfs",  "getxattr", "listxattr", "access",   "ioctl",       "setattr",
    "mknod",   "mkdir",    "symlink",   "link",     "unlink",      "rmdir",
    "rename",  "create",   "write",     "fsync",    "setxattr",    "removexattr"};

struct LiveStats {
    std::atomic<std::uint64_t> lookups{0}; // all LOOKUPs
    std::array<std::atomic<std::uint64_t>, std::size_t(Request::Count)> requests{};
    // Of those, the ones the look-ahead's own lookups caused (the rest: the importers' own).
    std::array<std::atomic<std::uint64_t>, std::size_t(Request::Count)> look_ahead_requests{};
    std::atomic<std::uint64_t> look_ahead_total{0}; // their sum
    std::atomic<std::uint64_t> pyc_reads{0}; // READ requests for pycs (a push makes them rare)
    std::atomic<std::uint64_t> pushes{0};    // pycs placed in the page cache by the daemon
    std::atomic<std::uint64_t> invalidations{0};
    std::atomic<std::uint64_t> reinvalidations{0}; // replies that raced a change (after_reply)
    std::vector<LiveCounters> per_interpreter;     // index = OverlayConfig::interpreters index
    explicit LiveStats(std::size_t interpreters) : per_interpreter(interpreters) {}
};

} // namespace fs::overlay
