#pragma once

#include <string>
#include <vector>

namespace fs::cli {

struct SourceWalk {
    std::vector<std::string> files;  // absolute paths of *.py regular files, sorted per directory
    std::vector<std::string> errors; // "PATH: why" for roots or directories that cannot be read
};

// Every `.py` under the roots (a root may also be a single file). Skips `__pycache__`; follows
// symlinked directories but enters each directory (device, inode) once, so links cannot loop.
SourceWalk find_python_sources(const std::vector<std::string>& roots);

} // namespace fs::cli
