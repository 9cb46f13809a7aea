// Link mode: a pyc is a symlink to a real file in a private directory on a memory filesystem.
// CPython <= 3.13 sends ioctl(TCGETS) on every open, and the kernel forwards every ioctl on a
// FUSE regular file to the daemon: a round trip per imported module, on every import, forever.
// Behind a symlink (cached by the kernel, FUSE_CAP_CACHE_SYMLINKS) the importer opens, stats
// and reads a real file: once the kernel knows the link, an import costs no round trip at all.
//
// The link only works where the importer sees the same directory: a process from another mount
// namespace (a container the mount is bind-mounted into) may not. The first request from one
// turns link mode off for the whole mount: every link the kernel knows is invalidated and pycs
// are regular FUSE files from then on (new inodes: the kernel refuses one that changes type).
#include "cachecore/util/log.hpp"
#include "fs/overlay/change_watcher.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/proc_path.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

namespace fs::overlay {

namespace {

bool on_memory_fs(const std::string& path) {
    struct statfs sf;
    return ::statfs(path.c_str(), &sf) == 0 &&
           (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC);
}

} // namespace

void OverlayFs::start_links() {
    if (m_config.pyc_files_base.empty()) {
        m_links_off_reason = "off (--pyc-links off, or no place for them: allow_other without "
                             "root, no XDG_RUNTIME_DIR)";
        return;
    }
    try {
        const std::string& base = m_config.pyc_files_base;
        if (m_config.pyc_files_need_memory_fs) {
            // The base itself, or where it would be created.
            struct stat st;
            const std::string where =
                ::stat(base.c_str(), &st) == 0 ? base : base.substr(0, base.rfind('/'));
            if (!on_memory_fs(where))
                throw std::runtime_error(
                    where +
                    " is not on a memory filesystem (writing the files to disk made "
                    "fresh mounts 1.8x slower here); mount a tmpfs on " +
                    base + " or give --pyc-links a private tmpfs");
        }
        if (m_config.pyc_files_create_base &&
            ::mkdir(base.c_str(), ::geteuid() == 0 ? 0711 : 0700) == 0)
            ::chmod(base.c_str(), ::geteuid() == 0 ? 0711 : 0700);
        int swept = cachecore::pyc::PycFileDir::sweep_stale(base);
        if (swept > 0)
            LOG_INFO("removed " + std::to_string(swept) + " pyc directories of dead daemons in " +
                     base);
        m_pyc_files = cachecore::pyc::PycFileDir::create(m_config.pyc_files_base,
                                                         m_config.pyc_files_exact_owner);
        m_links = true;
    } catch (const std::exception& e) {
        m_links_off_reason = std::string("off: ") + e.what();
        LOG_WARN("pycs served as FUSE files (slower): " + std::string(e.what()));
    }
}

bool OverlayFs::FsView::read(pid_t pid) {
    char path[48];
    std::snprintf(path, sizeof path, "/proc/%d/ns/mnt", int(pid));
    struct stat ns;
    if (::stat(path, &ns) < 0) return false;
    std::snprintf(path, sizeof path, "/proc/%d/root", int(pid));
    struct statx root {};
    if (::statx(AT_FDCWD, path, 0, STATX_INO | STATX_MNT_ID, &root) < 0) return false;
    ns_dev = ns.st_dev;
    ns_ino = ns.st_ino;
    root_dev = makedev(root.stx_dev_major, root.stx_dev_minor);
    root_ino = root.stx_ino;
    root_mount = (root.stx_mask & STATX_MNT_ID) ? root.stx_mnt_id : 0;
    return true;
}

bool OverlayFs::shares_view(pid_t pid) {
    // An import is hundreds of requests from one process: checked about once a second (a
    // process may chroot later).
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    const std::uint64_t key =
        std::uint64_t(std::uint32_t(pid)) << 32 | std::uint32_t(now / 1'000'000'000);
    if (pid != 0 && key == m_same_view.load(std::memory_order_relaxed)) return true;
    // Fails closed: a requester whose view cannot be read counts as foreign.
    FsView view;
    if (pid == 0 || !m_view_known || !view.read(pid) || !(view == m_view)) return false;
    m_same_view.store(key, std::memory_order_relaxed);
    return true;
}

bool OverlayFs::links_for(fuse_req_t req) {
    if (!m_links.load(std::memory_order_relaxed)) return false;
    if (is_look_ahead(req)) return true; // this daemon's own thread shares its view
    // The kernel reports the requester's pid as this daemon's pid namespace sees it: 0 when it
    // cannot (a process in a container's pid namespace the daemon is outside of).
    const pid_t pid = fuse_req_ctx(req)->pid;
    // The link names a path in this daemon's view of the filesystem: a process in another mount
    // namespace (a container) or under another root (a chroot, whose root is another mount even
    // of the same directory) resolves it somewhere else.
    if (shares_view(pid)) return true;
    turn_links_off("process " + std::to_string(pid) +
                   " sees another filesystem (another mount or pid namespace, or a chroot) and "
                   "may not see " +
                   m_pyc_files->path());
    return false;
}

std::string OverlayFs::source_path(const Inode& pyc) const {
    // The source's ACL is read through the directory descriptor, as this process sees it.
    return std::string(ProcPath(pyc.parent->parent->fd.get()).c_str()) + "/" + pyc.pyc->module +
           ".py";
}

void OverlayFs::supersede_link(Inode& pyc, PycState& state) {
    // A new version replaces the blob inside a request, before the watcher has invalidated the
    // old link (it may be on its way, or the directory is not watched): the kernel may still
    // hold the old link text, so the old file stays until the kernel asks for the link again
    // (op_readlink) or forgets the pyc, and the link is invalidated from the watcher's thread.
    auto old = state.current();
    if (!old) return;
    {
        std::lock_guard lock(old->file_mutex);
        if (!old->file) return;
        std::lock_guard s(state.push_mutex);
        state.superseded.push_back(old->file);
    }
    if (m_watcher) m_watcher->reinvalidate(0, "", m_table.to_fuse(pyc));
}

int OverlayFs::pyc_link(const Inode& pyc, const PycBlob& blob, std::string& target) {
    std::lock_guard lock(blob.file_mutex);
    if (!blob.file) {
        int err = 0;
        blob.file = m_pyc_files->write(blob.bytes, blob.source_st, source_path(pyc), err);
        if (!blob.file) return err ? err : EIO;
    }
    target = blob.file->path();
    return 0;
}

void OverlayFs::fill_link_attr(const Inode& pyc, const PycBlob& blob, struct stat& st,
                               std::size_t size) const {
    fill_pyc_attr(pyc, blob, st);
    st.st_mode = S_IFLNK | 0777;
    st.st_size = off_t(size);
    st.st_blocks = 0;
}

void OverlayFs::turn_links_off(const std::string& why) {
    std::lock_guard lock(m_links_mutex);
    if (!m_links.exchange(false)) return;
    m_links_off_reason = "off since " + why;
    LOG_WARN("pycs served as FUSE files from now on: " + why);
    // Invalidation must not run inside a request handler (the kernel may hold the directory
    // the request is about): one thread, once per mount.
    m_links_off_thread = std::thread([this] {
        if (!m_session) return;
        for (Inode* dir : m_table.pin_all_dirs()) {
            Inode* pycache = nullptr;
            if (dir->dir) {
                std::lock_guard dl(dir->dir->mutex);
                pycache = dir->dir->pycache.get();
            }
            std::vector<std::string> names;
            if (pycache) {
                std::lock_guard pl(pycache->pycache->mutex);
                for (auto& [name, pyc] : pycache->pycache->pycs)
                    if (pyc->pyc->as_link) names.push_back(name);
            }
            for (const auto& name : names)
                fuse_lowlevel_notify_inval_entry(m_session, m_table.to_fuse(*pycache), name.c_str(),
                                                 name.size());
            m_table.unpin(*dir);
        }
    });
}

nlohmann::json OverlayFs::pyc_files_json() const {
    std::lock_guard lock(m_links_mutex);
    nlohmann::json j = {{"links", m_links.load()}};
    if (m_pyc_files) {
        j["dir"] = m_pyc_files->path();
        j["files"] = m_pyc_files->files();
        j["bytes"] = m_pyc_files->bytes();
        j["written"] = m_pyc_files->written();
    }
    if (!m_links.load()) j["why_not"] = m_links_off_reason;
    return j;
}

} // namespace fs::overlay
