#pragma once

#include <cstdio>
#include <string>

namespace fs::overlay {

// Operations that cannot take an O_PATH descriptor go through its /proc/self/fd link.
struct ProcPath {
    char text[32];
    explicit ProcPath(int fd) { std::snprintf(text, sizeof text, "/proc/self/fd/%d", fd); }
    const char* c_str() const { return text; }
};

} // namespace fs::overlay
