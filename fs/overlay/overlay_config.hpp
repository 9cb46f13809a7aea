#pragma once

#include "cachecore/pyc/header.hpp"
#include "cachecore/python/interpreter.hpp"

#include <string>
#include <vector>

namespace fs::overlay {

struct OverlayConfig {
    std::string source;     // absolute path of the source tree
    std::string mountpoint; // absolute path of the mount point
    bool rw = false;
    bool hide_real_pycache = true;
    std::string watcher = "auto"; // auto: fanotify when permitted, else inotify
    cachecore::pyc::PycMode pyc_mode = cachecore::pyc::PycMode::Timestamp;
    // Served interpreters; the first one for a cache tag wins.
    std::vector<cachecore::python::Interpreter> interpreters;
    // Tags named when a virtual __pycache__ is listed (listing never compiles).
    std::vector<std::string> listed_tags;
    double timeout = 86400;         // kernel entry/attr/negative timeouts while changes are watched
    double unwatched_timeout = 1.0; // for directories whose changes cannot be watched
    bool compile_ahead_imports = true; // a cold module's imports (import_prefetch.cpp)
    bool compile_ahead_package = true; // a cold package's modules (prefetch_siblings)
    bool look_ahead = true;            // look names up ahead of an importer (look_ahead.hpp)
    bool look_ahead_imports = true;    // ... along its import graph (import_look_ahead.cpp)
    // Link mode (pyc_links.cpp): pycs are symlinks to real files in a private directory created
    // under this base (a directory only this user can write, best on a memory filesystem);
    // empty: pycs are FUSE regular files.
    std::string pyc_files_base;
    bool pyc_files_exact_owner = true;     // files get the source's owner (needs CAP_CHOWN)
    bool pyc_files_create_base = false;    // the base is ours to create (/run/pycachefs)
    bool pyc_files_need_memory_fs = false; // auto: links only where writing files costs no I/O
};

} // namespace fs::overlay
