#pragma once

#include "cachecore/source_memo.hpp"

#include <string>
#include <sys/stat.h>
#include <variant>

namespace cachecore {

// Why a source could not be statted or read.
struct SourceFailure {
    bool not_found = false; // missing, or not a regular file (FIFO, device, directory...)
    int err_no = 0;
    std::string what; // "open", "read", ...
};

// fstatat(dirfd, name) following symlinks, like CPython's stat of the source; non-regular
// files are reported as not found so they are never opened.
std::variant<struct stat, SourceFailure> stat_source(int dirfd, const std::string& name);

// One consistent read of a source: `stamp` describes exactly `bytes`.
struct SourceBytes {
    std::string bytes;
    SourceStamp stamp;
};

// One read of an open source from its start (the file offset is not used): re-checks the type,
// reads to EOF, and fails with EAGAIN when the file changed meanwhile.
std::variant<SourceBytes, SourceFailure> read_open_source(int fd);

// Opens with O_RDONLY|O_NONBLOCK|O_CLOEXEC (a FIFO swapped in never blocks), re-checks the type
// with fstat, reads to EOF and fstats again. Retries when the file changed during the read or does
// not match `expected` (then the newer stamp is expected); after `attempts` tries: EAGAIN.
std::variant<SourceBytes, SourceFailure> read_source(int dirfd, const std::string& name,
                                                     const SourceStamp* expected, int attempts = 3);

} // namespace cachecore
