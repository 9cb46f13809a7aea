#pragma once

#include "cachecore/util/file_id.hpp"
#include "fs/overlay/inode.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <sys/stat.h>
#include <unordered_map>
#include <vector>

namespace fs::overlay {

// Real inodes keyed by the source's (st_dev, st_ino), so hard links share one kernel inode.
// Lookup counts follow the kernel exactly: lookup/readdirplus/create add, forget subtracts.
// Virtual inodes (__pycache__ and its pycs) live inside their real directory and pin it.
class InodeTable {
public:
    InodeTable(cachecore::util::UniqueFd root_fd, const struct stat& root_st);

    Inode& root() { return m_root; }
    Inode& from_fuse(std::uint64_t ino) {
        return ino == 1 ? m_root : *reinterpret_cast<Inode*>(ino);
    }
    std::uint64_t to_fuse(const Inode& inode) const {
        return &inode == &m_root ? 1 : reinterpret_cast<std::uint64_t>(&inode);
    }

    // Finds or creates the inode for `st` (taking `fd` if new) and adds one lookup.
    // `on_new` runs (under the table lock) for a freshly created inode, e.g. to add a watch.
    Inode& acquire(cachecore::util::UniqueFd fd, const struct stat& st,
                   const std::function<void(Inode&)>& on_new);
    // The inode for (dev, ino) if the kernel knows it; no lookup is added.
    Inode* find(dev_t dev, ino_t ino);
    void add_lookup(Inode& inode, std::uint64_t n = 1);
    // Keeps an inode alive outside a request (the watcher thread): erasure waits for unpin().
    Inode* pin(dev_t dev, ino_t ino);
    void pin(Inode& inode);
    void unpin(Inode& inode);
    // Snapshot of every real directory inode, pinned (for a full invalidation).
    std::vector<Inode*> pin_all_dirs();
    void forget(Inode& inode, std::uint64_t n);

    // Called (under the table lock) before a real inode is destroyed.
    void set_on_erase(std::function<void(Inode&)> fn) { m_on_erase = std::move(fn); }
    std::size_t size();
    std::mutex& mutex() { return m_mutex; }

private:
    using Key = cachecore::util::FileId;
    using KeyHash = cachecore::util::FileIdHash;
    bool pinned_by_virtual(Inode& dir);
    void maybe_erase(Inode& inode);

    std::mutex m_mutex;
    Inode m_root;
    std::unordered_map<Key, std::unique_ptr<Inode>, KeyHash> m_map;
    std::function<void(Inode&)> m_on_erase;
};

} // namespace fs::overlay
