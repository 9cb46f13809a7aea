#pragma once

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

struct LiveStats {
    std::atomic<std::uint64_t> lookups{0}; // all LOOKUPs
    std::atomic<std::uint64_t> invalidations{0};
    std::vector<LiveCounters> per_interpreter; // index = OverlayConfig::interpreters index
    explicit LiveStats(std::size_t interpreters) : per_interpreter(interpreters) {}
};

} // namespace fs::overlay
