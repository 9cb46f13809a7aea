#include "cachecore/pyc/pyc_file_dir.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdexcept>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

namespace cachecore::pyc {
namespace {

constexpr const char* k_prefix = "pycachefs.";
constexpr const char* k_acl = "system.posix_acl_access";

bool set_immutable(int fd, bool on) {
    int flags = 0;
    if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) return false;
    flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
    return ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
}

// Unlinks a file that may be immutable (clearing the flag needs CAP_LINUX_IMMUTABLE, as setting it
// did).
void unlink_immutable(int dir_fd, const std::string& name) {
    if (::unlinkat(dir_fd, name.c_str(), 0) == 0 || errno != EPERM) return;
    int f = ::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (f >= 0) {
        set_immutable(f, false);
        ::close(f);
    }
    ::unlinkat(dir_fd, name.c_str(), 0);
}

// Removes every file of an open directory, then the directory (its entries are plain files).
void remove_tree(int parent_fd, const std::string& name) {
    int fd = ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        DIR* d = ::fdopendir(fd);
        if (!d) {
            ::close(fd);
        } else {
            std::vector<std::string> names;
            while (dirent* e = ::readdir(d)) {
                if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
                    names.emplace_back(e->d_name);
            }
            for (const auto& n : names) unlink_immutable(::dirfd(d), n);
            ::closedir(d);
        }
    }
    ::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR);
}

} // namespace

PycFile::PycFile(std::shared_ptr<PycFileDir> dir, std::string name)
    : m_dir(std::move(dir)), m_name(std::move(name)), m_path(m_dir->path() + "/" + m_name),
      m_bytes(0) {}

PycFile::~PycFile() {
    if (m_written) m_dir->remove(m_name, m_bytes);
}

std::shared_ptr<PycFileDir> PycFileDir::create(const std::string& base, bool exact_owner) {
    // The base must be this user's own and writable by nobody else, in every namespace that
    // might follow a link into it: in a world-writable place (/dev/shm) another user could
    // plant a file under a name a cached link leads to.
    struct stat bst;
    if (::lstat(base.c_str(), &bst) < 0)
        throw std::runtime_error("pyc directory base '" + base + "': " + std::strerror(errno));
    if (!S_ISDIR(bst.st_mode) || bst.st_uid != ::geteuid() || (bst.st_mode & 022))
        throw std::runtime_error("pyc directory base '" + base +
                                 "' must be a directory of this user that nobody else can write");
    // Created under a name the sweep ignores, locked, then renamed: a directory that carries the
    // swept name is always held by its daemon.
    std::string templ = base + "/tmp." + std::to_string(::getpid()) + ".XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data()))
        throw std::runtime_error("cannot create a pyc directory in '" + base +
                                 "': " + std::strerror(errno));
    const std::string tmp(buf.data());
    const std::string path =
        base + "/" + k_prefix + tmp.substr(tmp.size() - 6 - std::to_string(::getpid()).size() - 1);
    int fd = ::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    // Held for the daemon's life: how a later daemon tells a live directory from a stale one,
    // whatever pid namespace either runs in.
    if (fd < 0 || ::fchmod(fd, 0711) < 0 || ::flock(fd, LOCK_EX | LOCK_NB) < 0 ||
        ::rename(tmp.c_str(), path.c_str()) < 0) {
        int e = errno;
        if (fd >= 0) ::close(fd);
        ::rmdir(tmp.c_str());
        throw std::runtime_error("cannot prepare '" + path + "': " + std::strerror(e));
    }
    auto dir = std::shared_ptr<PycFileDir>(new PycFileDir(path, util::UniqueFd(fd), exact_owner));
    if (exact_owner) {
        // Files of other owners must be immutable (see fill()): refuse a filesystem that cannot.
        int probe = ::openat(fd, "probe", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0);
        bool ok = probe >= 0 && set_immutable(probe, true);
        if (probe >= 0) {
            set_immutable(probe, false);
            ::close(probe);
            ::unlinkat(fd, "probe", 0);
        }
        if (!ok)
            throw std::runtime_error("files in '" + base +
                                     "' cannot be made immutable (FS_IMMUTABLE_FL)");
    }
    return dir;
}

PycFileDir::PycFileDir(std::string path, util::UniqueFd fd, bool exact_owner)
    : m_path(std::move(path)), m_fd(std::move(fd)), m_exact_owner(exact_owner) {}

PycFileDir::~PycFileDir() {
    // Files still linked by no one; a leftover (written, never owned) goes with the directory.
    auto slash = m_path.rfind('/');
    int parent = ::open(slash == 0 ? "/" : m_path.substr(0, slash).c_str(),
                        O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent >= 0) {
        remove_tree(parent, m_path.substr(slash + 1));
        ::close(parent);
    }
}

std::shared_ptr<PycFile> PycFileDir::reserve() {
    // Unguessable: the directory cannot be listed, so a file is reached only through its link,
    // and someone who once could read a source cannot find its later versions' files.
    unsigned char random[16];
    if (::getrandom(random, sizeof random, 0) != ssize_t(sizeof random))
        throw std::runtime_error(std::string("getrandom: ") + std::strerror(errno));
    static constexpr char k_hex[] = "0123456789abcdef";
    std::string name;
    for (unsigned char b : random) {
        name += k_hex[b >> 4];
        name += k_hex[b & 15];
    }
    return std::make_shared<PycFile>(shared_from_this(), name + ".pyc");
}

std::shared_ptr<PycFile> PycFileDir::write(std::string_view bytes, const struct stat& source_st,
                                           const std::string& source_path, int& err) {
    auto file = reserve();
    err = fill(*file, bytes, source_st, source_path);
    return err ? nullptr : file;
}

int PycFileDir::fill(PycFile& file, std::string_view bytes, const struct stat& source_st,
                     const std::string& source_path) {
    const char* name = file.m_name.c_str();
    // Mode 0 while it is written: nobody may open it before it holds the whole pyc.
    int fd = ::openat(m_fd.get(), name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0) return errno;
    util::UniqueFd guard(fd);
    auto fail = [&](int e) {
        ::unlinkat(m_fd.get(), name, 0);
        return e;
    };
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail(n < 0 ? errno : ENOSPC);
        done += std::size_t(n);
    }
    mode_t mode = source_st.st_mode & 0444;
    if (m_exact_owner) {
        if (::fchown(fd, source_st.st_uid, source_st.st_gid) < 0) return fail(errno);
        // The ACL's group and other entries mirror the mode bits; copying it after the chmod
        // below would leave the mask wider than 0444 allows, so it goes first, then the mode.
        char acl[4096];
        ssize_t n = ::getxattr(source_path.c_str(), k_acl, acl, sizeof acl);
        if (n > 0) {
            if (::fsetxattr(fd, k_acl, acl, std::size_t(n), 0) < 0) {
                // Cannot reproduce who may read the source: readable by its owner only.
                mode &= 0400;
            }
        } else if (n == 0 || (errno != ENODATA && errno != ENOTSUP && errno != EOPNOTSUPP)) {
            // Not known to have no ACL (a huge one, the source replaced meanwhile): owner only.
            mode &= 0400;
        }
    } else {
        // Only this user reaches the mount (no allow_other) and it was allowed to read the
        // source when the pyc was looked up.
        mode = 0400;
    }
    if (::fchmod(fd, mode) < 0) return fail(errno);
    // The source's owner owns the file and could make it writable: immutable first (the caller
    // hands out the link only after fill() returns, and the name cannot be guessed before).
    if (!set_immutable(fd, true) && m_exact_owner && source_st.st_uid != ::geteuid())
        return fail(EPERM);
    file.m_bytes = bytes.size();
    file.m_written = true;
    m_files.fetch_add(1, std::memory_order_relaxed);
    m_bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
    m_written.fetch_add(1, std::memory_order_relaxed);
    return 0;
}

void PycFileDir::remove(const std::string& name, std::uint64_t bytes) {
    unlink_immutable(m_fd.get(), name);
    m_files.fetch_sub(1, std::memory_order_relaxed);
    m_bytes.fetch_sub(bytes, std::memory_order_relaxed);
}

int PycFileDir::sweep_stale(const std::string& base) {
    int base_fd = ::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (base_fd < 0) return 0;
    util::UniqueFd guard(base_fd);
    int list_fd = ::dup(base_fd);
    if (list_fd < 0) return 0;
    DIR* d = ::fdopendir(list_fd);
    if (!d) {
        ::close(list_fd);
        return 0;
    }
    std::vector<std::pair<std::string, util::UniqueFd>> stale; // locked until removed
    const std::size_t prefix_len = std::strlen(k_prefix);
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name.compare(0, prefix_len, k_prefix) != 0) continue;
        int fd = ::openat(base_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        util::UniqueFd dir(fd);
        struct stat st;
        if (::fstat(fd, &st) < 0 || st.st_uid != ::geteuid()) continue;
        if (::flock(fd, LOCK_EX | LOCK_NB) < 0) continue; // its daemon still runs
        stale.emplace_back(std::move(name), std::move(dir));
    }
    ::closedir(d);
    for (const auto& entry : stale) remove_tree(base_fd, entry.first);
    return int(stale.size());
}

} // namespace cachecore::pyc
