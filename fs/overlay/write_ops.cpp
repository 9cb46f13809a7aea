// Writes through the mount (--rw): passed to the source tree, never into a virtual __pycache__.
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/proc_path.hpp"

#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

namespace fs::overlay {
namespace {

// The daemon may run as root for allow_other mounts: new files belong to the requester.
void give_to_requester(fuse_req_t req, int dirfd, const char* name, const Inode& parent) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    struct stat dir_st;
    gid_t gid = ctx->gid;
    if (::fstatat(parent.fd.get(), "", &dir_st, AT_EMPTY_PATH) == 0 && (dir_st.st_mode & S_ISGID))
        gid = dir_st.st_gid;
    (void)::fchownat(dirfd, name, ctx->uid, gid, AT_SYMLINK_NOFOLLOW);
}

} // namespace

int OverlayFs::writable_dir_error(const Inode& parent, const char* name) const {
    if (!m_config.rw || parent.kind != InodeKind::Real) return EROFS;
    // With hidden real __pycache__ directories, none may be created or replaced either.
    if (is_pycache_name(name)) return EACCES;
    return 0;
}

void OverlayFs::op_mknod(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode,
                         dev_t rdev) {
    Inode& parent = inode(parent_ino);
    if (int err = writable_dir_error(parent, name)) return (void)fuse_reply_err(req, err);
    if (::mknodat(parent.fd.get(), name, mode & ~fuse_req_ctx(req)->umask, rdev) < 0)
        return (void)fuse_reply_err(req, errno);
    if (m_chown_new_files) give_to_requester(req, parent.fd.get(), name, parent);
    fuse_entry_param e;
    if (int err = lookup_real(parent, name, e)) return (void)fuse_reply_err(req, err);
    fuse_reply_entry(req, &e);
}

void OverlayFs::op_mkdir(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode) {
    Inode& parent = inode(parent_ino);
    if (int err = writable_dir_error(parent, name)) return (void)fuse_reply_err(req, err);
    if (::mkdirat(parent.fd.get(), name, mode) < 0) return (void)fuse_reply_err(req, errno);
    if (m_chown_new_files) give_to_requester(req, parent.fd.get(), name, parent);
    fuse_entry_param e;
    if (int err = lookup_real(parent, name, e)) return (void)fuse_reply_err(req, err);
    fuse_reply_entry(req, &e);
}

void OverlayFs::op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent_ino,
                           const char* name) {
    Inode& parent = inode(parent_ino);
    if (int err = writable_dir_error(parent, name)) return (void)fuse_reply_err(req, err);
    if (::symlinkat(link, parent.fd.get(), name) < 0) return (void)fuse_reply_err(req, errno);
    if (m_chown_new_files) give_to_requester(req, parent.fd.get(), name, parent);
    fuse_entry_param e;
    if (int err = lookup_real(parent, name, e)) return (void)fuse_reply_err(req, err);
    fuse_reply_entry(req, &e);
}

void OverlayFs::op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent_ino, const char* name) {
    Inode& parent = inode(parent_ino);
    Inode& target = inode(ino);
    if (int err = writable_dir_error(parent, name)) return (void)fuse_reply_err(req, err);
    if (target.kind != InodeKind::Real) return (void)fuse_reply_err(req, EROFS);
    if (::linkat(AT_FDCWD, ProcPath(target.fd.get()).c_str(), parent.fd.get(), name,
                 AT_SYMLINK_FOLLOW) < 0)
        return (void)fuse_reply_err(req, errno);
    fuse_entry_param e;
    if (int err = lookup_real(parent, name, e)) return (void)fuse_reply_err(req, err);
    fuse_reply_entry(req, &e);
}

void OverlayFs::op_unlink(fuse_req_t req, fuse_ino_t parent_ino, const char* name, bool dir) {
    Inode& parent = inode(parent_ino);
    if (int err = writable_dir_error(parent, name)) return (void)fuse_reply_err(req, err);
    if (::unlinkat(parent.fd.get(), name, dir ? AT_REMOVEDIR : 0) < 0)
        return (void)fuse_reply_err(req, errno);
    fuse_reply_err(req, 0);
}

void OverlayFs::op_rename(fuse_req_t req, fuse_ino_t parent_ino, const char* name,
                          fuse_ino_t newparent_ino, const char* newname, unsigned int flags) {
    Inode& parent = inode(parent_ino);
    Inode& newparent = inode(newparent_ino);
    if (int err = writable_dir_error(parent, name)) return (void)fuse_reply_err(req, err);
    if (int err = writable_dir_error(newparent, newname)) return (void)fuse_reply_err(req, err);
    if (::renameat2(parent.fd.get(), name, newparent.fd.get(), newname, flags) < 0)
        return (void)fuse_reply_err(req, errno);
    fuse_reply_err(req, 0);
}

void OverlayFs::op_create(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode,
                          fuse_file_info* fi) {
    Inode& parent = inode(parent_ino);
    if (int err = writable_dir_error(parent, name)) return (void)fuse_reply_err(req, err);
    int flags = (fi->flags | O_CREAT) & ~O_NOFOLLOW;
    int fd = ::openat(parent.fd.get(), name, flags | O_CLOEXEC, mode);
    if (fd < 0) return (void)fuse_reply_err(req, errno);
    if (m_chown_new_files && (fi->flags & O_EXCL))
        give_to_requester(req, parent.fd.get(), name, parent);
    fuse_entry_param e;
    if (int err = lookup_real(parent, name, e)) {
        ::close(fd);
        return (void)fuse_reply_err(req, err);
    }
    fi->fh = std::uint64_t(fd);
    fi->keep_cache = 1;
    if (fuse_reply_create(req, &e, fi) == -ENOENT) ::close(fd);
}

void OverlayFs::op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                         fuse_file_info* fi) {
    Inode& node = inode(ino);
    if (!m_config.rw || node.kind != InodeKind::Real || !fi || !fi->fh)
        return (void)fuse_reply_err(req, EROFS);
    // Never a short write: CPython ignores write()'s count and renames a truncated file.
    std::size_t done = 0;
    while (done < size) {
        ssize_t n = ::pwrite(int(fi->fh), buf + done, size - done, off + off_t(done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return (void)fuse_reply_err(req, errno);
        }
        done += std::size_t(n);
    }
    fuse_reply_write(req, done);
}

void OverlayFs::op_fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
    if (!fi || !fi->fh) return (void)fuse_reply_err(req, 0);
    int rc = datasync ? ::fdatasync(int(fi->fh)) : ::fsync(int(fi->fh));
    fuse_reply_err(req, rc < 0 ? errno : 0);
}

void OverlayFs::op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                           fuse_file_info* fi) {
    Inode& node = inode(ino);
    if (!m_config.rw || node.kind != InodeKind::Real) return (void)fuse_reply_err(req, EROFS);
    const int fd = node.fd.get();
    const bool have_fh = fi && fi->fh;
    ProcPath proc(fd);
    if (to_set & FUSE_SET_ATTR_MODE) {
        int rc =
            have_fh ? ::fchmod(int(fi->fh), attr->st_mode) : ::chmod(proc.c_str(), attr->st_mode);
        if (rc < 0) return (void)fuse_reply_err(req, errno);
    }
    if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : uid_t(-1);
        gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : gid_t(-1);
        if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
            return (void)fuse_reply_err(req, errno);
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        int rc = have_fh ? ::ftruncate(int(fi->fh), attr->st_size)
                         : ::truncate(proc.c_str(), attr->st_size);
        if (rc < 0) return (void)fuse_reply_err(req, errno);
    }
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
        timespec tv[2];
        tv[0].tv_sec = 0;
        tv[1].tv_sec = 0;
        tv[0].tv_nsec = UTIME_OMIT;
        tv[1].tv_nsec = UTIME_OMIT;
        if (to_set & FUSE_SET_ATTR_ATIME_NOW)
            tv[0].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_ATIME)
            tv[0] = attr->st_atim;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            tv[1].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_MTIME)
            tv[1] = attr->st_mtim;
        int rc = have_fh ? ::futimens(int(fi->fh), tv) : ::utimensat(AT_FDCWD, proc.c_str(), tv, 0);
        if (rc < 0) return (void)fuse_reply_err(req, errno);
    }
    op_getattr(req, ino);
}

void OverlayFs::op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                            size_t size, int flags) {
    Inode& node = inode(ino);
    if (!m_config.rw || node.kind != InodeKind::Real || S_ISLNK(node.type))
        return (void)fuse_reply_err(req, EROFS);
    int rc = ::setxattr(ProcPath(node.fd.get()).c_str(), name, value, size, flags);
    fuse_reply_err(req, rc < 0 ? errno : 0);
}

void OverlayFs::op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
    Inode& node = inode(ino);
    if (!m_config.rw || node.kind != InodeKind::Real || S_ISLNK(node.type))
        return (void)fuse_reply_err(req, EROFS);
    int rc = ::removexattr(ProcPath(node.fd.get()).c_str(), name);
    fuse_reply_err(req, rc < 0 ? errno : 0);
}

} // namespace fs::overlay
