// What to look up ahead of an importer (the lookups themselves: look_ahead.hpp).
//
// A process that has asked for a pyc of interpreter T in directory D is importing from D: it
// will ask for D's other modules and pycs and probe D's subdirectories as packages
// (`S/__init__` with each extension suffix, `S/__init__.py`, `S/__pycache__/__init__.T.pyc`).
// The same holds for every directory that process lists afterwards (CPython lists a package
// directory when it imports the first of its submodules). A process that walks the tree (it
// lists a __pycache__) imports nothing: no module is looked up for it, but the directories it
// will list next are listed ahead (post_listings_ahead).
#include "cachecore/pyc/cache_name.hpp"
#include "fs/overlay/look_ahead.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/proc_path.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace fs::overlay {
namespace {

// A directory holding more is a sys.path root (site-packages, the stdlib's top level), where an
// importer takes a few of many; its first names are still worth it.
constexpr std::size_t k_max_names = 1024;
// A directory is looked ahead of once per this long (again once the kernel may have dropped
// what was looked up, or for an importer after one whose lookups failed: a cold store).
constexpr auto k_again_after = std::chrono::seconds(30);
// A subpackage is listed ahead only when its directory is of a usual size (st_size; a huge
// directory is listed by the importer itself, if it ever is).
constexpr off_t k_max_listed_size = 256 * 1024;
// Listings one walker's job makes ahead of it (see post_listings_ahead).
constexpr std::size_t k_max_listings_ahead = 512;

bool ends_with(const std::string& s, std::string_view suffix) {
    return s.size() > suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The subdirectories of the directory `dirfd` in the backing tree, sorted (as pkgutil and most
// walkers visit them), with "__pycache__" for the one the mount shows where a module is (and
// never a real one when those are hidden). Symlinks are not followed.
std::vector<std::string> backing_subdirs(int dirfd, bool hide_real_pycache) {
    std::vector<std::string> out;
    cachecore::util::UniqueFd fd(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0 || st.st_size > k_max_listed_size) return out;
    std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(fd.get()), ::closedir);
    if (!d) return out;
    (void)fd.release(); // the DIR owns it now
    bool has_module = false;
    while (const dirent* e = ::readdir(d.get())) {
        const std::string_view name = e->d_name;
        if (e->d_type == DT_DIR && name != "." && name != ".." &&
            !(name == "__pycache__" && hide_real_pycache))
            out.emplace_back(name);
        else if (e->d_type != DT_DIR && name.size() > 3 && name.substr(name.size() - 3) == ".py")
            has_module = true;
    }
    if (has_module && std::find(out.begin(), out.end(), "__pycache__") == out.end())
        out.emplace_back("__pycache__");
    std::sort(out.begin(), out.end());
    return out;
}

} // namespace

bool OverlayFs::is_look_ahead(fuse_req_t req) const {
    return m_look_ahead && m_look_ahead->is_own(fuse_req_ctx(req)->pid);
}

OverlayFs::Asker OverlayFs::asker_of(fuse_req_t req) const {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    return Asker{ctx->pid, ctx->uid, ctx->gid, is_look_ahead(req), nullptr, nullptr};
}

bool OverlayFs::looked_ahead_recently(Inode& dir, int index, int optimize) {
    if (!dir.dir) return true;
    std::lock_guard lock(dir.dir->mutex);
    auto it = dir.dir->looked_ahead.find({index, optimize});
    return it != dir.dir->looked_ahead.end() &&
           std::chrono::steady_clock::now() - it->second < k_again_after;
}

void OverlayFs::prepare_look_ahead(Asker& asker, Inode& dir, int index, int optimize) {
    const bool pyc = index >= 0;
    // Called before the reply: the requester is still waiting for it, so its thread id still
    // names it. Only when a job is likely (a pidfd costs a system call).
    if (!m_look_ahead || asker.own || asker.pidfd) return;
    bool walker = false;
    // A process not known yet, or known only by its listings: its first listing may start the
    // walk of its __main__'s imports (walk_main_early).
    bool main_early = m_config.look_ahead_imports && m_background;
    {
        std::lock_guard lock(m_importers_mutex);
        for (const auto& importer : m_importers) {
            if (importer.pid != asker.pid || !importer.used) continue;
            walker = importer.walker;
            main_early = main_early && !importer.main_tried && !importer.imports_ahead;
            if (index < 0) {
                index = importer.index;
                optimize = importer.optimize;
            }
        }
    }
    // A walker's listing starts a listing of its subdirectories (see post_listings_ahead).
    if (walker && pyc) return;
    if (walker) {
        index = k_listings_index;
        optimize = 0;
    } else if (index < 0 && (pyc || !main_early)) {
        return;
    }
    // A pyc the importer had to ask for itself starts a walk of its imports (see
    // import_look_ahead.cpp); a listing only a look-ahead of its directory.
    if (!pyc && looked_ahead_recently(dir, index, optimize)) return;
    auto fd = LookAhead::open_requester(asker.pid);
    if (!fd) return;
    asker.pidfd = std::make_shared<cachecore::util::UniqueFd>(std::move(fd));
    asker.preparing = m_look_ahead->preparing();
}

void OverlayFs::look_ahead_after_pyc(const Asker& asker, Inode& dir, int index, int optimize,
                                     const std::string& module, bool walk_imports) {
    if (!m_look_ahead || asker.own) return;
    std::vector<std::pair<dev_t, ino_t>> listed_before;
    {
        std::lock_guard lock(m_importers_mutex);
        Importer& slot = importer_slot(asker.pid);
        if (slot.walker) return;
        if (slot.index < 0)
            listed_before.assign(slot.listed.begin(), slot.listed.begin() + slot.n_listed);
        slot.index = index;
        slot.optimize = optimize;
        slot.n_listed = 0;
    }
    if (!asker.pidfd) return;
    if (walk_imports) look_ahead_imports(asker, dir, index, optimize, module);
    post_look_ahead(asker, dir, index, optimize, module);
    // The process turned out to be an importer: the directories it listed before (the sys.path
    // entries it searched) are where its next top-level imports come from.
    for (const auto& [dev, ino] : listed_before) {
        if (Inode* listed = m_table.pin(dev, ino)) {
            post_look_ahead(asker, *listed, index, optimize, {});
            m_table.unpin(*listed);
        }
    }
}

bool OverlayFs::importer_is_walker(const Asker& asker) {
    if (!m_look_ahead || asker.own) return false;
    std::lock_guard lock(m_importers_mutex);
    Importer& slot = importer_slot(asker.pid);
    return !std::exchange(slot.walker, true);
}

OverlayFs::Importer& OverlayFs::importer_slot(pid_t pid) {
    // Least recently used slot when the pid has none.
    Importer* oldest = &m_importers[0];
    Importer* slot = nullptr;
    for (auto& importer : m_importers) {
        if (importer.pid == pid && importer.used) {
            slot = &importer;
            break;
        }
        if (importer.used < oldest->used) oldest = &importer;
    }
    if (!slot) {
        slot = oldest;
        *slot = Importer{};
        slot->pid = pid;
    }
    slot->used = ++m_importer_clock;
    return *slot;
}

void OverlayFs::look_ahead_after_listing(const Asker& asker, Inode& dir) {
    if (!m_look_ahead || asker.own) return;
    int index = -1, optimize = 0;
    bool walker = false;
    {
        std::lock_guard lock(m_importers_mutex);
        Importer& slot = importer_slot(asker.pid);
        if (slot.walker) {
            walker = true;
        } else {
            index = slot.index;
            optimize = slot.optimize;
        }
        if (index < 0 && !walker) {
            // Not an importer yet (it may never be: ls, a tree walk): remembered for a while.
            if (slot.n_listed == slot.listed.size()) {
                std::rotate(slot.listed.begin(), slot.listed.begin() + 1, slot.listed.end());
                --slot.n_listed;
            }
            slot.listed[slot.n_listed++] = {dir.st_dev, dir.st_ino};
        }
    }
    if (walker && asker.pidfd) post_listings_ahead(asker, dir);
    if (index >= 0 && asker.pidfd) post_look_ahead(asker, dir, index, optimize, {});
    if (index < 0 && !walker && asker.pidfd) walk_main_early(asker, dir);
}

void OverlayFs::post_listings_ahead(const Asker& asker, Inode& dir) {
    // A process that walks the tree (it listed a __pycache__: CPython never does) lists what
    // it finds next: pkgutil.iter_modules lists every subdirectory to see whether it is a
    // package, then descends into the packages; os.walk and find descend into each. On a
    // fresh mount each listing costs the walker two round trips (READDIRPLUS, then READDIR for
    // the end). The look-ahead makes them ahead of it, in the walker's order (below), and the
    // kernel keeps the listings (cache_readdir). The walker's listings served from that cache
    // start no job; one it had to make itself starts a job from there, which goes first.
    // Only listings: a walk imports nothing, so no module or pyc is looked up (or written,
    // with links).
    if (!dir.dir || !shares_view(asker.pid)) return;
    if (!mark_looked_ahead(dir, k_listings_index, 0)) return;
    auto in_tree = path_in_tree(dir);
    if (!in_tree) return unmark_looked_ahead(dir, k_listings_index, 0);
    // In the walker's order, depth first: each subdirectory, then its whole subtree, then the
    // next one (pkgutil.iter_modules lists a subdirectory to see whether it is a package and
    // descends into it before going on; os.walk and find go the same way). The lookers find
    // each level's subdirectories in their own listings, made as the walker (what it may not
    // list, they may not either). The first names go out at once: the backing tree used to be
    // walked in full before posting, while the walker went on.
    const bool hide = m_config.hide_real_pycache;
    std::vector<std::string> names;
    for (auto& sub : backing_subdirs(dir.fd.get(), hide)) names.push_back(sub + "/");
    cachecore::util::UniqueFd pidfd(::fcntl(asker.pidfd->get(), F_DUPFD_CLOEXEC, 0));
    LookAhead::Requester who{asker.pid, asker.uid, asker.gid, {}};
    if (names.empty() ||
        !m_look_ahead->post_tree(std::move(who), std::move(pidfd), std::move(*in_tree),
                                 std::move(names), k_max_listings_ahead))
        unmark_looked_ahead(dir, k_listings_index, 0);
}

bool OverlayFs::mark_looked_ahead(Inode& dir, int index, int optimize) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(dir.dir->mutex);
    auto [it, fresh] = dir.dir->looked_ahead.try_emplace({index, optimize}, now);
    if (!fresh) {
        if (now - it->second < k_again_after) return false;
        it->second = now;
    }
    return true;
}

void OverlayFs::unmark_looked_ahead(Inode& dir, int index, int optimize) {
    std::lock_guard lock(dir.dir->mutex);
    dir.dir->looked_ahead.erase({index, optimize});
}

std::optional<std::string> OverlayFs::path_in_tree(Inode& dir) {
    if (&dir == &m_table.root()) return std::string();
    char real[PATH_MAX];
    ssize_t n = ::readlink(ProcPath(dir.fd.get()).c_str(), real, sizeof real - 1);
    if (n <= 0) return std::nullopt;
    std::string path(real, std::size_t(n));
    if (path.size() <= m_source_real.size() + 1 ||
        path.compare(0, m_source_real.size(), m_source_real) != 0 ||
        path[m_source_real.size()] != '/')
        return std::nullopt; // moved out of the tree, or deleted meanwhile
    return path.substr(m_source_real.size() + 1);
}

void OverlayFs::post_look_ahead(const Asker& asker, Inode& dir, int index, int optimize,
                                const std::string& served) {
    if (!dir.dir || !asker.pidfd) return;
    // Lookups go through this daemon's view of the filesystem: only for a process that shares
    // it (a container's importer would resolve a symlink in the tree somewhere else). The view
    // is read from /proc after the reply; the pidfd tells whether it was still the asker's.
    if (!shares_view(asker.pid)) return;
    if (!mark_looked_ahead(dir, index, optimize)) return;
    auto unmark = [&] { unmark_looked_ahead(dir, index, optimize); };
    auto listing = dir_listing(dir);
    if (!listing) return unmark();
    auto in_tree = path_in_tree(dir);
    if (!in_tree) return unmark();
    std::string rel = std::move(*in_tree);
    const auto& interpreter = m_config.interpreters[std::size_t(index)];
    auto pyc_name = [&](const std::string& module) {
        return cachecore::pyc::format_cache_name({module, interpreter.cache_tag, optimize});
    };
    std::vector<std::string> names;
    for (const DirEntry& entry : *listing) {
        if (names.size() >= k_max_names) break;
        const std::string& name = entry.name;
        if (entry.is_virtual_pycache || name == "." || name == ".." || name == "__pycache__")
            continue;
        if (entry.type == DT_DIR) {
            // Not a package name (CPython splits dotted names), or a package probed as
            // CPython's FileFinder does: extension modules first, then the source.
            if (name.find('.') != std::string::npos) continue;
            for (const auto& suffix : interpreter.extension_suffixes)
                names.push_back(name + "/__init__" + suffix);
            names.push_back(name + "/__init__.py");
            names.push_back(name + "/__pycache__/" + pyc_name("__init__"));
            // A package's directory is listed by CPython when it imports the first submodule:
            // two round trips (READDIRPLUS, then READDIR for the end), made here instead.
            struct stat init, sub;
            if (::fstatat(dir.fd.get(), (name + "/__init__.py").c_str(), &init, 0) == 0 &&
                S_ISREG(init.st_mode) &&
                ::fstatat(dir.fd.get(), name.c_str(), &sub, AT_SYMLINK_NOFOLLOW) == 0 &&
                S_ISDIR(sub.st_mode) && sub.st_size <= k_max_listed_size)
                names.push_back(name + "/");
        } else if (ends_with(name, ".py")) {
            // The source (a listing gives no file attributes, see real_ops.cpp), then the pyc.
            std::string module = name.substr(0, name.size() - 3);
            if (module == served) continue;
            names.push_back(name);
            names.push_back("__pycache__/" + pyc_name(module));
        } else if (std::any_of(interpreter.extension_suffixes.begin(),
                               interpreter.extension_suffixes.end(),
                               [&](const std::string& s) { return ends_with(name, s); })) {
            names.push_back(name); // an extension module
        }
    }
    cachecore::util::UniqueFd pidfd(::fcntl(asker.pidfd->get(), F_DUPFD_CLOEXEC, 0));
    LookAhead::Requester who{asker.pid, asker.uid, asker.gid, {}};
    if (!m_look_ahead->post(std::move(who), std::move(pidfd), std::move(rel), std::move(names)))
        unmark();
}

} // namespace fs::overlay
