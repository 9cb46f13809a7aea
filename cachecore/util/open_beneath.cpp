#include "cachecore/util/open_beneath.hpp"

#include <cstdint>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace cachecore::util {

UniqueFd open_beneath(int root_fd, const std::string& path, int flags) {
    open_how how{};
    how.flags = std::uint64_t(flags | O_CLOEXEC | O_NOFOLLOW);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    long fd = ::syscall(SYS_openat2, root_fd, path.empty() ? "." : path.c_str(), &how, sizeof how);
    return UniqueFd{fd < 0 ? -1 : static_cast<int>(fd)};
}

} // namespace cachecore::util
