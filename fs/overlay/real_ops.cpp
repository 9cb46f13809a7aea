// Lookups, attributes, reads and listings of the real (passed-through) tree.
#include "fs/overlay/change_watcher.hpp"
#include "fs/overlay/look_ahead.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/proc_path.hpp"

#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <vector>

namespace fs::overlay {
namespace {

constexpr const char* k_stats_xattr = "user.pycachefs.stats";

std::int64_t ns(const timespec& t) {
    return std::int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

bool ends_with_py(const char* name, std::size_t len) {
    return len > 3 && std::memcmp(name + len - 3, ".py", 3) == 0;
}

// readdirplus hands out attributes for directories (packages: an importer stats the ones it
// enters, and they are few), and for module files only without a look-ahead. A file's
// attributes cost an open and a stat of its inode while the importer waits for the listing,
// and CPython stats only the modules it imports: a sys.path root lists hundreds it never
// touches, whose inodes this VM has often reclaimed (one open was measured at 13 ms, a fresh
// listing of the stdlib's 206 entries at 30-45 ms, 0.6 ms without; native getdents reads no
// inode at all). The look-ahead looks up the modules an importer does import, off its path;
// without one, the listing is the cheapest place. Anything else (editor and tool temporaries
// renamed over modules) gets a bare name and stays out of the kernel's cache.
bool worth_attributes(const DirEntry& entry, bool files_too) {
    if (entry.type == DT_DIR) return true;
    if (!files_too) return false;
    const std::string& n = entry.name;
    auto ends = [&](std::string_view suffix) {
        return n.size() > suffix.size() &&
               n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    return ends(".py") || ends(".so") || ends(".pyc") || ends(".pth");
}

// The two-call protocol of getxattr/listxattr: ask for the size, then fetch. 0 or an errno.
template <class Call> int read_sized(std::string& out, Call call) {
    ssize_t n = call(nullptr, 0);
    if (n < 0) return errno;
    out.resize(std::size_t(n));
    n = call(out.data(), out.size());
    if (n < 0) return errno;
    out.resize(std::size_t(n));
    return 0;
}

void reply_negative(fuse_req_t req, double timeout) {
    // An entry with ino 0 is a cached negative dentry; a plain ENOENT is never cached.
    fuse_entry_param e{};
    e.entry_timeout = timeout;
    fuse_reply_entry(req, &e);
}

} // namespace

int OverlayFs::lookup_real(Inode& parent, const char* name, fuse_entry_param& e) {
    int fd = ::openat(parent.fd.get(), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno;
    cachecore::util::UniqueFd owned(fd);
    struct stat st;
    if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return errno;
    bool parent_watched = parent.dir && parent.dir->watch >= 0;
    Inode& inode = m_table.acquire(std::move(owned), st, [&](Inode& fresh) {
        fresh.watched = parent_watched;
        if (fresh.dir && m_watcher) {
            fresh.dir->watch = m_watcher->watch(fresh);
            fresh.watched = parent_watched && fresh.dir->watch >= 0;
        }
    });
    e = {};
    e.ino = m_table.to_fuse(inode);
    e.attr = st;
    e.attr_timeout = inode.watched ? m_config.timeout : m_config.unwatched_timeout;
    e.entry_timeout = timeout_for(parent);
    return 0;
}

void OverlayFs::op_lookup(fuse_req_t req, fuse_ino_t parent_ino, const char* name) {
    ++m_stats.lookups;
    const std::uint64_t epoch = m_change_epoch.load();
    Inode& parent = inode(parent_ino);
    if (parent.kind == InodeKind::PycacheDir) {
        fuse_ino_t ino = lookup_pycache_entry(req, parent, name);
        return after_reply(epoch, parent_ino, name, ino);
    }
    if (parent.kind != InodeKind::Real || !parent.dir) return (void)fuse_reply_err(req, ENOTDIR);

    if (is_pycache_name(name)) {
        if (!refresh_dir(parent)) return (void)fuse_reply_err(req, EIO);
        bool has_py;
        {
            std::lock_guard lock(parent.dir->mutex);
            has_py = parent.dir->has_py;
        }
        if (!has_py) {
            reply_negative(req, timeout_for(parent));
            return after_reply(epoch, parent_ino, name, 0);
        }
        Inode& pycache = pycache_of(parent);
        m_table.add_lookup(pycache);
        fuse_entry_param e{};
        e.ino = m_table.to_fuse(pycache);
        fill_pycache_attr(pycache, e.attr);
        e.attr_timeout = e.entry_timeout = timeout_for(parent);
        fuse_reply_entry(req, &e);
        return after_reply(epoch, parent_ino, name, e.ino);
    }

    fuse_entry_param e;
    int err = lookup_real(parent, name, e);
    if (err == ENOENT) {
        reply_negative(req, timeout_for(parent));
        return after_reply(epoch, parent_ino, name, 0);
    }
    if (err) return (void)fuse_reply_err(req, err);
    fuse_reply_entry(req, &e);
    after_reply(epoch, parent_ino, name, e.ino);
}

void OverlayFs::op_forget(fuse_ino_t ino, std::uint64_t n) {
    m_table.forget(inode(ino), n);
}

void OverlayFs::op_getattr(fuse_req_t req, fuse_ino_t ino) {
    Inode& node = inode(ino);
    struct stat st {};
    switch (node.kind) {
    case InodeKind::Real:
        if (::fstatat(node.fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
            return (void)fuse_reply_err(req, errno);
        return (void)fuse_reply_attr(req, &st,
                                     node.watched || &node == &m_table.root()
                                         ? m_config.timeout
                                         : m_config.unwatched_timeout);
    case InodeKind::PycacheDir:
        fill_pycache_attr(node, st);
        return (void)fuse_reply_attr(req, &st, timeout_for(*node.parent));
    case InodeKind::Pyc: {
        std::shared_ptr<const PycBlob> blob;
        if (int err = pyc_blob(req, node, blob)) return (void)fuse_reply_err(req, err);
        if (node.pyc->as_link) {
            std::string target;
            if (int err = pyc_link(node, *blob, target)) return (void)fuse_reply_err(req, err);
            fill_link_attr(node, *blob, st, target.size());
            return (void)fuse_reply_attr(req, &st, timeout_for(*node.parent->parent));
        }
        fill_pyc_attr(node, *blob, st);
        return (void)fuse_reply_attr(req, &st, pyc_timeout(node, *blob));
    }
    }
}

void OverlayFs::op_readlink(fuse_req_t req, fuse_ino_t ino) {
    Inode& node = inode(ino);
    if (node.kind == InodeKind::Pyc && node.pyc->as_link) {
        std::shared_ptr<const PycBlob> blob;
        std::string target;
        int err = pyc_blob(req, node, blob);
        if (!err) err = pyc_link(node, *blob, target);
        if (err) return (void)fuse_reply_err(req, err);
        fuse_reply_readlink(req, target.c_str());
        // The kernel asked for the link: it no longer holds an older text.
        std::lock_guard lock(node.pyc->push_mutex);
        node.pyc->superseded.clear();
        return;
    }
    if (node.kind != InodeKind::Real) return (void)fuse_reply_err(req, EINVAL);
    char buf[PATH_MAX + 1];
    ssize_t n = ::readlinkat(node.fd.get(), "", buf, sizeof buf - 1);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    buf[n] = '\0';
    fuse_reply_readlink(req, buf);
}

int OverlayFs::reader_fd(Inode& node) {
    int fd = node.read_fd.load(std::memory_order_acquire);
    if (fd >= 0) return fd;
    fd = ::open(ProcPath(node.fd.get()).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    int expected = -1;
    if (!node.read_fd.compare_exchange_strong(expected, fd)) {
        ::close(fd);
        return expected;
    }
    return fd;
}

void OverlayFs::op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    // Read-only mounts ask the kernel not to send OPEN at all (FUSE_CAP_NO_OPEN_SUPPORT).
    if (!m_config.rw) return (void)fuse_reply_err(req, ENOSYS);
    Inode& node = inode(ino);
    if (node.kind == InodeKind::PycacheDir) return (void)fuse_reply_err(req, EISDIR);
    if (node.kind == InodeKind::Pyc) {
        if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
            return (void)fuse_reply_err(req, EROFS);
        fi->fh = 0;
        fi->keep_cache = 1;
        return (void)fuse_reply_open(req, fi);
    }
    int flags = fi->flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
    int fd = ::open(ProcPath(node.fd.get()).c_str(), flags | O_CLOEXEC);
    if (fd < 0) return (void)fuse_reply_err(req, errno);
    fi->fh = std::uint64_t(fd);
    fi->keep_cache = node.watched ? 1 : 0;
    if (fuse_reply_open(req, fi) == -ENOENT) ::close(fd); // the opener was interrupted
}

void OverlayFs::op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    if (fi && fi->fh) ::close(int(fi->fh));
    fuse_reply_err(req, 0);
}

void OverlayFs::op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                        fuse_file_info* fi) {
    Inode& node = inode(ino);
    if (node.kind == InodeKind::Pyc) return read_pyc(req, node, size, off);
    if (node.kind != InodeKind::Real) return (void)fuse_reply_err(req, EISDIR);
    int fd = fi && fi->fh ? int(fi->fh) : reader_fd(node);
    if (fd < 0) return (void)fuse_reply_err(req, -fd);
    // Let libfuse splice straight from the source file: no copy through this process.
    fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = fuse_buf_flags(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void OverlayFs::op_ioctl(fuse_req_t req, fuse_ino_t ino) {
    Inode& node = inode(ino);
    if (node.kind == InodeKind::Pyc) push_to_page_cache(node, true);
    fuse_reply_err(req, ENOTTY); // no file here is a terminal or takes ioctls
}

void OverlayFs::op_opendir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    // FUSE_CAP_NO_OPENDIR_SUPPORT: the kernel then caches listings itself (keep_cache/cache_dir).
    fuse_reply_err(req, ENOSYS);
}

bool OverlayFs::refresh_dir(Inode& dir) {
    struct stat st;
    if (::fstatat(dir.fd.get(), "", &st, AT_EMPTY_PATH) < 0) return false;
    DirState& state = *dir.dir;
    std::lock_guard lock(state.mutex);
    if (state.listing && state.scanned_mtime_ns == ns(st.st_mtim) &&
        state.scanned_ctime_ns == ns(st.st_ctim))
        return true;
    int fd = ::openat(dir.fd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    DIR* dp = ::fdopendir(fd);
    if (!dp) {
        ::close(fd);
        return false;
    }
    auto listing = std::make_shared<std::vector<DirEntry>>();
    std::vector<std::string> modules;
    bool has_real_pycache = false;
    while (dirent* d = ::readdir(dp)) {
        std::size_t len = std::strlen(d->d_name);
        if (std::strcmp(d->d_name, "__pycache__") == 0) {
            has_real_pycache = true;
            if (m_config.hide_real_pycache) continue;
        }
        // A directory named `x.py` is not a module; symlinks and unknown types may be.
        if (ends_with_py(d->d_name, len) && d->d_type != DT_DIR)
            modules.emplace_back(d->d_name, len - 3);
        listing->push_back(DirEntry{d->d_name, d->d_ino, d->d_type, false});
    }
    ::closedir(dp);
    (void)has_real_pycache;
    state.has_py = m_config.hide_real_pycache && !modules.empty();
    if (state.has_py) {
        listing->push_back(DirEntry{"__pycache__", 0, DT_DIR, true});
    }
    state.py_modules = std::move(modules);
    state.listing = std::move(listing);
    state.scanned_mtime_ns = ns(st.st_mtim);
    state.scanned_ctime_ns = ns(st.st_ctim);
    return true;
}

std::shared_ptr<const std::vector<DirEntry>> OverlayFs::dir_listing(Inode& dir) {
    if (!refresh_dir(dir)) return nullptr;
    std::lock_guard lock(dir.dir->mutex);
    return dir.dir->listing;
}

void OverlayFs::op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
    Inode& dir = inode(ino);
    if (dir.kind == InodeKind::PycacheDir) return readdir_pycache(req, dir, size, off, plus);
    if (dir.kind != InodeKind::Real || !dir.dir) return (void)fuse_reply_err(req, ENOTDIR);
    const std::uint64_t epoch = m_change_epoch.load();
    auto listing = dir_listing(dir);
    if (!listing) return (void)fuse_reply_err(req, EIO);
    std::vector<std::pair<const char*, fuse_ino_t>> given; // readdirplus entries, for after_reply

    std::vector<char> buf(size);
    std::size_t used = 0;
    for (std::size_t i = std::size_t(off); i < listing->size(); ++i) {
        const DirEntry& entry = (*listing)[i];
        const char* name = entry.name.c_str();
        bool dots = std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0;
        std::size_t n;
        if (!plus) {
            struct stat st {};
            st.st_ino = entry.is_virtual_pycache ? pycache_of(dir).st_ino : entry.ino;
            st.st_mode = mode_t(entry.type) << 12;
            n = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, off_t(i + 1));
            if (n > size - used) break;
            used += n;
            continue;
        }
        fuse_entry_param e{};
        Inode* acquired = nullptr;
        if (dots) {
            e.attr.st_ino = entry.ino;
            e.attr.st_mode = mode_t(entry.type) << 12;
        } else if (entry.is_virtual_pycache) {
            acquired = &pycache_of(dir);
            m_table.add_lookup(*acquired);
            e.ino = m_table.to_fuse(*acquired);
            fill_pycache_attr(*acquired, e.attr);
            e.attr_timeout = e.entry_timeout = timeout_for(dir);
        } else if (!worth_attributes(entry, !m_look_ahead)) {
            // A name only: the kernel looks it up if someone asks. Temporary files that are
            // renamed over modules must not enter the kernel's cache with their attributes.
            e.attr.st_ino = entry.ino;
            e.attr.st_mode = mode_t(entry.type) << 12;
        } else {
            if (lookup_real(dir, name, e) != 0) continue; // vanished since the scan
            acquired = &m_table.from_fuse(e.ino);
        }
        n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, off_t(i + 1));
        if (n > size - used) {
            if (acquired) m_table.forget(*acquired, 1); // the kernel never saw this entry
            break;
        }
        used += n;
        if (acquired) given.emplace_back(name, e.ino);
    }
    // A first listing is a look-ahead trigger; the directory must then outlive the reply (the
    // kernel may forget it at once) while it is looked ahead of.
    const bool ahead = off == 0 && m_look_ahead;
    Asker asker = asker_of(req);
    if (ahead) {
        prepare_look_ahead(asker, dir, -1, 0);
        m_table.pin(dir);
    }
    fuse_reply_buf(req, buf.data(), used);
    for (const auto& [name, child] : given) after_reply(epoch, ino, name, child);
    if (ahead) {
        look_ahead_after_listing(asker, dir);
        m_table.unpin(dir);
    }
}

void OverlayFs::op_statfs(fuse_req_t req, fuse_ino_t) {
    struct statvfs sv;
    if (::fstatvfs(m_table.root().fd.get(), &sv) < 0) return (void)fuse_reply_err(req, errno);
    fuse_reply_statfs(req, &sv);
}

void OverlayFs::op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    Inode& node = inode(ino);
    std::string value;
    if (ino == FUSE_ROOT_ID && std::strcmp(name, k_stats_xattr) == 0) {
        value = stats_json();
    } else if (node.kind != InodeKind::Real || S_ISLNK(node.type)) {
        return (void)fuse_reply_err(req, ENODATA);
    } else {
        const ProcPath path(node.fd.get());
        if (int err = read_sized(value, [&](char* buf, std::size_t len) {
                return ::getxattr(path.c_str(), name, buf, len);
            }))
            return (void)fuse_reply_err(req, err);
    }
    if (size == 0) return (void)fuse_reply_xattr(req, value.size());
    if (size < value.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, value.data(), value.size());
}

void OverlayFs::op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    Inode& node = inode(ino);
    std::string value;
    if (node.kind == InodeKind::Real && !S_ISLNK(node.type)) {
        const ProcPath path(node.fd.get());
        if (int err = read_sized(value, [&](char* buf, std::size_t len) {
                return ::listxattr(path.c_str(), buf, len);
            }))
            return (void)fuse_reply_err(req, err);
    }
    if (size == 0) return (void)fuse_reply_xattr(req, value.size());
    if (size < value.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, value.data(), value.size());
}

void OverlayFs::op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
    // default_permissions makes the kernel check modes; only writes need a word from us.
    Inode& node = inode(ino);
    if ((mask & W_OK) && (!m_config.rw || node.kind != InodeKind::Real))
        return (void)fuse_reply_err(req, EROFS);
    fuse_reply_err(req, 0);
}

} // namespace fs::overlay
