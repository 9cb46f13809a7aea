#pragma once

#include "cachecore/util/config_file.hpp"
#include "fs/cli/mount_options.hpp"

#include <string>
#include <vector>

namespace fs::cli {

using Settings = std::vector<cachecore::util::Setting>;

int run_mount(MountOptions options);
int run_unmount(const std::string& mountpoint, bool lazy, double wait_seconds);
// `zero`: also reset the counters of the store the mount uses.
int run_stats_mount(const std::string& mountpoint, bool json, bool zero);

struct WarmArgs {
    std::vector<std::string> paths;
    Settings cli;              // --store, --python, --max-size, --log-level as settings
    std::vector<int> optimize; // empty: {0}
    unsigned jobs = 0;         // files in flight (0: one per core)
};
int run_warm(const WarmArgs& args);

// Store maintenance; `cli`: --store/--max-size as settings. Exit codes: 0 ok, 1 failure (verify:
// bad entries found), 2 bad configuration.
int run_store_stats(const Settings& cli, bool json, bool zero);
int run_gc(const Settings& cli);
int run_clear(const Settings& cli);
int run_verify(const Settings& cli);

} // namespace fs::cli
