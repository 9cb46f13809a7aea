#include "fs/overlay/thread_status.hpp"

#include "cachecore/util/unique_fd.hpp"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fcntl.h>
#include <limits>
#include <string>
#include <unistd.h>

namespace fs::overlay {
namespace {

// The numbers of one "Key:\tn\tn..." line, or nullopt when any token is not a number.
template <class T> std::optional<std::vector<T>> numbers(std::string_view rest, int base = 10) {
    std::vector<T> out;
    std::size_t i = 0;
    while (i < rest.size()) {
        if (rest[i] == ' ' || rest[i] == '\t') {
            ++i;
            continue;
        }
        std::uint64_t value = 0;
        auto [end, ec] = std::from_chars(rest.data() + i, rest.data() + rest.size(), value, base);
        if (ec != std::errc() || end == rest.data() + i) return std::nullopt;
        if (value > std::numeric_limits<T>::max()) return std::nullopt;
        std::size_t next = std::size_t(end - rest.data());
        if (next < rest.size() && rest[next] != ' ' && rest[next] != '\t') return std::nullopt;
        out.push_back(T(value));
        i = next;
    }
    return out;
}

} // namespace

std::optional<ThreadStatus> parse_thread_status(std::string_view text) {
    ThreadStatus status;
    bool uid = false, gid = false, groups = false, caps = false;
    while (!text.empty()) {
        std::size_t nl = text.find('\n');
        if (nl == std::string_view::npos) return std::nullopt; // cut short: never guess
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view key = line.substr(0, colon), rest = line.substr(colon + 1);
        if (key == "Uid" || key == "Gid") {
            auto ids = numbers<std::uint32_t>(rest);
            if (!ids || ids->size() != 4) return std::nullopt; // real, effective, saved, fs
            (key == "Uid" ? status.fsuid : status.fsgid) = (*ids)[3];
            (key == "Uid" ? uid : gid) = true;
        } else if (key == "Groups") {
            auto ids = numbers<std::uint32_t>(rest);
            if (!ids || ids->size() > 65536) return std::nullopt; // NGROUPS_MAX
            status.groups.assign(ids->begin(), ids->end());
            groups = true;
        } else if (key == "CapEff") {
            auto bits = numbers<std::uint64_t>(rest, 16);
            if (!bits || bits->size() != 1) return std::nullopt;
            status.cap_effective = (*bits)[0];
            caps = true;
        }
    }
    if (!uid || !gid || !groups || !caps) return std::nullopt;
    return status;
}

std::optional<ThreadStatus> read_thread_status(pid_t tid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/task/%d/status", int(tid), int(tid));
    cachecore::util::UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    std::string text;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return std::nullopt;
        if (n == 0) break;
        text.append(buf, std::size_t(n));
        if (text.size() > (1u << 20)) return std::nullopt;
    }
    return parse_thread_status(text);
}

} // namespace fs::overlay
