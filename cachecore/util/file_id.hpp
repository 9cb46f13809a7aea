#pragma once

#include <cstddef>
#include <sys/types.h>

namespace cachecore::util {

// A file's identity on this machine: (st_dev, st_ino). Hard links share one.
struct FileId {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(const FileId&) const = default;
};

struct FileIdHash {
    std::size_t operator()(const FileId& id) const noexcept {
        return id.ino * 0x9E3779B97F4A7C15ull ^ id.dev;
    }
};

} // namespace cachecore::util
