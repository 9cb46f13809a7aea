// Turning a change in the source tree into precise kernel cache invalidations.
#include "cachecore/util/log.hpp"
#include "fs/overlay/overlay_fs.hpp"

#include <cstring>
#include <fcntl.h>
#include <vector>

namespace fs::overlay {

void OverlayFs::on_change(Inode& dir, const std::string& name, bool dir_itself) {
    if (!m_session) return;
    ++m_stats.invalidations;
    const fuse_ino_t dir_ino = m_table.to_fuse(dir);
    {
        std::lock_guard lock(dir.dir->mutex);
        dir.dir->scanned_mtime_ns = -1; // rescan even if the mtime tick did not move
    }
    // Attributes and the cached listing of the directory itself.
    fuse_lowlevel_notify_inval_inode(m_session, dir_ino, 0, 0);
    if (dir_itself) {
        // Unknown names (or the directory's own metadata): drop what depends on the listing.
        fuse_lowlevel_notify_inval_entry(m_session, dir_ino, "__pycache__", 11);
        return;
    }
    fuse_lowlevel_notify_inval_entry(m_session, dir_ino, name.c_str(), name.size());

    struct stat st;
    if (::fstatat(dir.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (Inode* child = m_table.pin(st.st_dev, st.st_ino)) {
            fuse_lowlevel_notify_inval_inode(m_session, m_table.to_fuse(*child), 0, 0);
            m_table.unpin(*child);
        }
    }
    if (name.size() <= 3 || name.compare(name.size() - 3, 3, ".py") != 0) return;

    // A module changed, appeared or went away: its pycs and maybe the __pycache__ itself.
    fuse_lowlevel_notify_inval_entry(m_session, dir_ino, "__pycache__", 11);
    Inode* pycache = nullptr;
    {
        std::lock_guard lock(dir.dir->mutex);
        pycache = dir.dir->pycache.get();
    }
    if (!pycache) return;
    const std::string module = name.substr(0, name.size() - 3);
    std::vector<std::pair<std::string, Inode*>> affected;
    {
        std::lock_guard lock(pycache->pycache->mutex);
        for (auto& [pyc_name, pyc] : pycache->pycache->pycs) {
            if (pyc->pyc->module == module) affected.emplace_back(pyc_name, pyc.get());
        }
    }
    const fuse_ino_t pycache_ino = m_table.to_fuse(*pycache);
    for (auto& [pyc_name, pyc] : affected) {
        {
            std::lock_guard lock(pyc->pyc->push_mutex);
            ++pyc->pyc->generation;
            pyc->pyc->superseded.clear();
        }
        // A linked pyc's file goes now, not at the next lookup: after a chmod or an ACL change
        // of the source it must not stay readable under its old permissions.
        if (pyc->pyc->as_link) pyc->pyc->set(nullptr);
        fuse_lowlevel_notify_inval_inode(m_session, m_table.to_fuse(*pyc), 0, 0);
        fuse_lowlevel_notify_inval_entry(m_session, pycache_ino, pyc_name.c_str(), pyc_name.size());
    }
}

void OverlayFs::on_watch_lost(Inode& dir) {
    std::lock_guard lock(dir.dir->mutex);
    dir.dir->watch = -1;
}

} // namespace fs::overlay
