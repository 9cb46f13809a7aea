#pragma once

#include <string>
#include <vector>

namespace fs::cli {

// The filesystem types mounted at exactly `path`, bottom to top, from /proc/self/mountinfo:
// never from the mount itself (a hung daemon would hang any access to it).
std::vector<std::string> mount_types_at(const std::string& path);

} // namespace fs::cli
