#pragma once

#include <string>

namespace fs::cli {

// Unmounts a FUSE mount: umount2() as root, fusermount3 otherwise. Lazy detaches a busy mount.
// Returns an empty string on success, else a one-line reason.
std::string unmount_path(const std::string& mountpoint, bool lazy);

} // namespace fs::cli
