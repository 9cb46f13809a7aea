#include "fs/cli/mount_stats.hpp"

#include <cerrno>
#include <cstring>
#include <sys/xattr.h>

namespace fs::cli {

std::optional<std::string> read_mount_stats(const std::string& mountpoint, std::string* error) {
    constexpr const char* k_name = "user.pycachefs.stats";
    for (int attempt = 0; attempt < 3; ++attempt) {
        ssize_t n = ::getxattr(mountpoint.c_str(), k_name, nullptr, 0);
        if (n < 0) break;
        std::string value(std::size_t(n), '\0');
        n = ::getxattr(mountpoint.c_str(), k_name, value.data(), value.size());
        if (n >= 0) {
            value.resize(std::size_t(n));
            return value;
        }
        if (errno != ERANGE) break; // ERANGE: the counters grew in between; ask again
    }
    if (error) {
        *error = errno == ENODATA || errno == ENOTSUP
                     ? "'" + mountpoint + "' is not a pycachefs mount point"
                     : "'" + mountpoint + "': " + std::strerror(errno);
    }
    return std::nullopt;
}

} // namespace fs::cli
