#pragma once

#include <optional>
#include <string>

namespace fs::cli {

// The live statistics of a mount (JSON), read from its root's `user.pycachefs.stats` xattr.
// nullopt (and *error) when the path is not a pycachefs mount.
std::optional<std::string> read_mount_stats(const std::string& mountpoint, std::string* error);

} // namespace fs::cli
