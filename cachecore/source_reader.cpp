#include "cachecore/source_reader.hpp"

#include "cachecore/util/unique_fd.hpp"

#include <cerrno>
#include <fcntl.h>
#include <optional>
#include <unistd.h>

namespace cachecore {

namespace {

bool is_not_found(int err) {
    return err == ENOENT || err == ENOTDIR;
}

SourceFailure failure(int err, const char* what) {
    return SourceFailure{is_not_found(err), err, what};
}

} // namespace

std::variant<struct stat, SourceFailure> stat_source(int dirfd, const std::string& name) {
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, 0) != 0) return failure(errno, "stat");
    if (!S_ISREG(st.st_mode)) return SourceFailure{true, ENOENT, "not a regular file"};
    return st;
}

std::variant<SourceBytes, SourceFailure> read_open_source(int fd) {
    struct stat before {};
    if (::fstat(fd, &before) != 0) return failure(errno, "fstat");
    if (!S_ISREG(before.st_mode)) return SourceFailure{true, ENOENT, "not a regular file"};

    SourceBytes out;
    out.bytes.resize(std::size_t(before.st_size) + 1);
    std::size_t used = 0;
    for (;;) {
        if (used == out.bytes.size()) out.bytes.resize(out.bytes.size() * 2 + 4096);
        ssize_t n = ::pread(fd, out.bytes.data() + used, out.bytes.size() - used, off_t(used));
        if (n < 0) {
            if (errno == EINTR) continue;
            return failure(errno, "read");
        }
        if (n == 0) break;
        used += std::size_t(n);
    }
    out.bytes.resize(used);

    struct stat after {};
    if (::fstat(fd, &after) != 0) return failure(errno, "fstat");
    out.stamp = SourceStamp::of(before);
    // The header will claim this stamp, so the bytes must be exactly what it describes.
    if (!(out.stamp == SourceStamp::of(after)) || std::int64_t(used) != before.st_size)
        return SourceFailure{false, EAGAIN, "read (source changed)"};
    return out;
}

std::variant<SourceBytes, SourceFailure> read_source(int dirfd, const std::string& name,
                                                     const SourceStamp* expected, int attempts) {
    std::optional<SourceStamp> want;
    if (expected) want = *expected;
    for (int attempt = 0; attempt < attempts; ++attempt) {
        util::UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
        if (!fd) return failure(errno, "open");
        auto read = read_open_source(fd.get());
        if (auto* f = std::get_if<SourceFailure>(&read)) {
            if (f->err_no == EAGAIN) continue;
            return read;
        }
        auto& out = std::get<SourceBytes>(read);
        if (want && !(*want == out.stamp)) {
            want = out.stamp; // the file moved on since the caller's stat: confirm once more
            continue;
        }
        return read;
    }
    return SourceFailure{false, EAGAIN, "read (source kept changing)"};
}

} // namespace cachecore
