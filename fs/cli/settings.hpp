#pragma once

#include "cachecore/util/config_file.hpp"
#include "fs/cli/mount_options.hpp"

#include <string>
#include <vector>

namespace fs::cli {

// $PYCACHEFS_CONF when set (tests, alternative setups), else /etc/pycachefs.conf.
std::string system_config_path();

// Fills every field of `options` except source/mountpoint from, lowest to highest precedence:
// the system config file, `pycachefs.conf` in the store directory, PYCACHEFS_* environment
// variables, `-o` strings, and the command line (`cli`, already as settings). The store
// directory itself is resolved first (it says where the second file is) and defaults to
// default_store_dir(). Returns an error that names the file/variable/option to fix, or empty.
std::string resolve_options(const std::vector<cachecore::util::Setting>& cli,
                            const std::vector<std::string>& o_strings, MountOptions& options);

} // namespace fs::cli
