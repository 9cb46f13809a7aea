#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace fs::overlay {

// What the kernel checks a thread's file accesses with, from /proc/<tid>/task/<tid>/status.
struct ThreadStatus {
    uid_t fsuid = 0;
    gid_t fsgid = 0;
    std::vector<gid_t> groups;
    std::uint64_t cap_effective = 0;
};

// Strict: every line needed must be there, complete and well formed, or nothing is returned
// (a guessed group would be a group the thread does not have).
std::optional<ThreadStatus> parse_thread_status(std::string_view text);
std::optional<ThreadStatus> read_thread_status(pid_t tid);

} // namespace fs::overlay
