#pragma once

#include "fs/cli/mount_options.hpp"

#include <string>

namespace fs::cli {

int run_mount(MountOptions options);
int run_unmount(const std::string& mountpoint, bool lazy, double wait_seconds);
int run_stats_mount(const std::string& mountpoint, bool json);

} // namespace fs::cli
