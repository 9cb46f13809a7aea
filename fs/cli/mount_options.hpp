#pragma once

#include "cachecore/pyc/header.hpp"
#include "cachecore/util/config_file.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fs::cli {

// Everything `pycachefs mount` accepts; every long option also works as `-o key=value`.
struct MountOptions {
    std::string source;
    std::string mountpoint;
    std::string store;                // empty = default location
    std::vector<std::string> pythons; // --python, repeatable
    std::optional<std::uint64_t> max_size;
    bool rw = false;
    cachecore::pyc::PycMode pyc_mode = cachecore::pyc::PycMode::Timestamp;
    bool hide_real_pycache = true;
    std::string watcher = "auto";      // auto | fanotify | inotify
    std::string compile_ahead = "all"; // all | imports | package | off
    std::string io_uring = "off";      // auto | on | off: FUSE over io_uring
    std::string pyc_links = "auto";    // auto | off | DIR: pycs as symlinks to real files
    bool look_ahead = true;            // look names up ahead of importers (on | dirs | off)
    bool look_ahead_imports = true;    // ... along the import graph too (on)
    bool foreground = false;
    bool debug = false; // debug log (and libfuse's request trace with -d -d)
    bool fuse_debug = false;
    std::string log_file;
    std::string log_level; // debug|info|warning|error
    std::string pid_file;
    unsigned workers = 0; // compile workers per interpreter (0 = one per core)
    unsigned compile_timeout_s = 30;
    bool nonempty = false;                 // allow a non-empty mount point
    std::vector<std::string> fuse_options; // passed to the kernel mount (allow_other, ...)
};

// One `-o a,b=c` string as settings (origin "-o"); a backslash escapes a comma.
std::vector<cachecore::util::Setting> split_o_options(const std::string& text);

// Applies one (normalized) setting; unknown keys are FUSE options. Returns an error message that
// names the setting's origin, or empty on success.
std::string apply_setting(const cachecore::util::Setting& setting, MountOptions& options);

// $PYCACHEFS_STORE, else $XDG_CACHE_HOME/pycachefs, else ~/.cache/pycachefs.
std::string default_store_dir();

} // namespace fs::cli
