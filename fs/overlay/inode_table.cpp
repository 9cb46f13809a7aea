#include "fs/overlay/inode_table.hpp"

namespace fs::overlay {

InodeTable::InodeTable(cachecore::util::UniqueFd root_fd, const struct stat& root_st) {
    m_root.kind = InodeKind::Real;
    m_root.fd = std::move(root_fd);
    m_root.st_ino = root_st.st_ino;
    m_root.st_dev = root_st.st_dev;
    m_root.type = S_IFDIR;
    m_root.nlookup = 1; // the kernel never forgets the root
    m_root.dir = std::make_unique<DirState>();
}

Inode& InodeTable::acquire(cachecore::util::UniqueFd fd, const struct stat& st,
                           const std::function<void(Inode&)>& on_new) {
    std::lock_guard lock(m_mutex);
    if (st.st_dev == m_root.st_dev && st.st_ino == m_root.st_ino) {
        ++m_root.nlookup;
        return m_root;
    }
    auto& slot = m_map[Key{st.st_dev, st.st_ino}];
    if (!slot) {
        slot = std::make_unique<Inode>();
        slot->kind = InodeKind::Real;
        slot->fd = std::move(fd);
        slot->st_ino = st.st_ino;
        slot->st_dev = st.st_dev;
        slot->type = st.st_mode & S_IFMT;
        if (S_ISDIR(st.st_mode)) slot->dir = std::make_unique<DirState>();
        if (on_new) on_new(*slot);
    }
    ++slot->nlookup;
    return *slot;
}

Inode* InodeTable::find(dev_t dev, ino_t ino) {
    std::lock_guard lock(m_mutex);
    if (dev == m_root.st_dev && ino == m_root.st_ino) return &m_root;
    auto it = m_map.find(Key{dev, ino});
    return it == m_map.end() ? nullptr : it->second.get();
}

void InodeTable::add_lookup(Inode& inode, std::uint64_t n) {
    std::lock_guard lock(m_mutex);
    inode.nlookup += n;
}

bool InodeTable::pinned_by_virtual(Inode& dir) {
    if (!dir.dir || !dir.dir->pycache) return false;
    Inode& pycache = *dir.dir->pycache;
    if (pycache.nlookup > 0) return true;
    std::lock_guard lock(pycache.pycache->mutex);
    for (auto& [name, pyc] : pycache.pycache->pycs) {
        if (pyc->nlookup > 0) return true;
    }
    for (auto& pyc : pycache.pycache->retired) {
        if (pyc->nlookup > 0) return true;
    }
    return false;
}

void InodeTable::maybe_erase(Inode& inode) {
    if (&inode == &m_root || inode.kind != InodeKind::Real) return;
    if (inode.nlookup > 0 || inode.pins > 0 || pinned_by_virtual(inode)) return;
    if (m_on_erase) m_on_erase(inode);
    m_map.erase(Key{inode.st_dev, inode.st_ino});
}

void InodeTable::forget(Inode& inode, std::uint64_t n) {
    std::lock_guard lock(m_mutex);
    inode.nlookup = n >= inode.nlookup ? 0 : inode.nlookup - n;
    if (inode.nlookup > 0) return;
    switch (inode.kind) {
    case InodeKind::Real:
        maybe_erase(inode);
        break;
    case InodeKind::Pyc: {
        // Free the bytes; the inode itself stays so its number is stable.
        inode.pyc->set(nullptr);
        {
            std::lock_guard push(inode.pyc->push_mutex);
            inode.pyc->superseded.clear();
        }
        maybe_erase(*inode.parent->parent);
        break;
    }
    case InodeKind::PycacheDir:
        maybe_erase(*inode.parent);
        break;
    }
}

Inode* InodeTable::pin(dev_t dev, ino_t ino) {
    std::lock_guard lock(m_mutex);
    Inode* inode = nullptr;
    if (dev == m_root.st_dev && ino == m_root.st_ino) {
        inode = &m_root;
    } else if (auto it = m_map.find(Key{dev, ino}); it != m_map.end()) {
        inode = it->second.get();
    }
    if (inode) ++inode->pins;
    return inode;
}

void InodeTable::pin(Inode& inode) {
    std::lock_guard lock(m_mutex);
    ++inode.pins;
}

void InodeTable::unpin(Inode& inode) {
    std::lock_guard lock(m_mutex);
    --inode.pins;
    maybe_erase(inode);
}

std::vector<Inode*> InodeTable::pin_all_dirs() {
    std::lock_guard lock(m_mutex);
    std::vector<Inode*> dirs{&m_root};
    ++m_root.pins;
    for (auto& [key, inode] : m_map) {
        if (inode->dir) {
            ++inode->pins;
            dirs.push_back(inode.get());
        }
    }
    return dirs;
}

std::size_t InodeTable::size() {
    std::lock_guard lock(m_mutex);
    return m_map.size() + 1;
}

} // namespace fs::overlay
