#pragma once

#include "cachecore/util/unique_fd.hpp"

#include <string>

namespace cachecore::util {

// openat2(root_fd, path, flags | O_CLOEXEC | O_NOFOLLOW) with RESOLVE_BENEATH: nothing outside
// the tree under root_fd is ever reached, through "..", absolute or symbolic links. An empty path
// is the root itself. Invalid (errno set) when the path leaves the tree or the kernel lacks
// openat2 (Linux < 5.6).
UniqueFd open_beneath(int root_fd, const std::string& path, int flags);

} // namespace cachecore::util
