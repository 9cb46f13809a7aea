// The virtual __pycache__ directories and the pycs inside them.
#include "cachecore/pyc/cache_name.hpp"
#include "cachecore/util/log.hpp"
#include "fs/overlay/background_queue.hpp"
#include "fs/overlay/change_watcher.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/proc_path.hpp"
#include "fs/overlay/source_access.hpp"
#include "fs/overlay/thread_status.hpp"

#include <algorithm>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

namespace fs::overlay {
namespace {

// Synthetic inode numbers live in the top half so they never collide with a source's.
constexpr ino_t k_virtual_ino_base = ino_t(1) << 62;

// The requester's supplementary groups, read from /proc by our own strict parser: libfuse
// 3.14's fuse_req_getgroups runs strstr over a buffer it never terminates (AddressSanitizer
// reports it). Unreadable (a pid this daemon cannot see): in no group.
bool in_groups(fuse_req_t req, gid_t gid) {
    const pid_t pid = fuse_req_ctx(req)->pid;
    if (pid <= 0) return false;
    auto status = read_thread_status(pid);
    return status &&
           std::find(status->groups.begin(), status->groups.end(), gid) != status->groups.end();
}

// The requester must be able to read the source: a pyc reveals its source, and compiling on
// behalf of someone who cannot read it would be a side channel.
bool may_read_source(fuse_req_t req, const struct stat& st) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    return may_read(ctx->uid, ctx->gid, st, [&](gid_t gid) { return in_groups(req, gid); });
}

} // namespace

Inode& OverlayFs::pycache_of(Inode& dir) {
    std::lock_guard lock(dir.dir->mutex);
    if (!dir.dir->pycache) {
        auto v = std::make_unique<Inode>();
        v->kind = InodeKind::PycacheDir;
        v->type = S_IFDIR;
        v->st_ino = k_virtual_ino_base + m_next_virtual_ino++;
        v->st_dev = dir.st_dev;
        v->parent = &dir;
        v->watched = dir.dir->watch >= 0;
        v->pycache = std::make_unique<PycacheState>();
        v->pycache->real_dir = &dir;
        dir.dir->pycache = std::move(v);
    }
    return *dir.dir->pycache;
}

void OverlayFs::fill_pycache_attr(const Inode& pycache, struct stat& st) {
    st = {};
    struct stat dir_st;
    if (::fstatat(pycache.parent->fd.get(), "", &dir_st, AT_EMPTY_PATH) == 0) {
        st.st_uid = dir_st.st_uid;
        st.st_gid = dir_st.st_gid;
        st.st_atim = st.st_mtim = st.st_ctim = dir_st.st_mtim;
        // Readable and searchable by whoever may search the directory; never writable.
        st.st_mode = S_IFDIR | (dir_st.st_mode & 0555);
    } else {
        st.st_mode = S_IFDIR | 0555;
    }
    st.st_ino = pycache.st_ino;
    st.st_nlink = 2;
    st.st_size = 4096;
    st.st_blksize = 4096;
}

void OverlayFs::fill_pyc_attr(const Inode& pyc, const PycBlob& blob, struct stat& st) const {
    st = {};
    st.st_ino = pyc.st_ino;
    st.st_mode = S_IFREG | (blob.source_st.st_mode & 0444);
    st.st_nlink = 1;
    st.st_uid = blob.source_st.st_uid;
    st.st_gid = blob.source_st.st_gid;
    // Exact: CPython reads st_size + 1 bytes and the kernel cuts reads at st_size.
    st.st_size = off_t(blob.bytes.size());
    st.st_blksize = 4096;
    st.st_blocks = (st.st_size + 511) / 512;
    st.st_mtim.tv_sec = blob.stamp.mtime_ns / 1'000'000'000;
    st.st_mtim.tv_nsec = blob.stamp.mtime_ns % 1'000'000'000;
    if (st.st_mtim.tv_nsec < 0) {
        st.st_mtim.tv_nsec += 1'000'000'000;
        st.st_mtim.tv_sec -= 1;
    }
    st.st_atim = st.st_ctim = st.st_mtim;
}

double OverlayFs::pyc_timeout(const Inode& pyc, const PycBlob& blob) const {
    // A source not readable by everybody: every stat comes back here for a permission check,
    // so a cached size never reaches someone who may not read the source.
    if (!(blob.source_st.st_mode & S_IROTH)) return 0;
    return pyc.parent->parent->dir->watch >= 0 ? m_config.timeout : m_config.unwatched_timeout;
}

int OverlayFs::pyc_blob(fuse_req_t req, Inode& pyc, std::shared_ptr<const PycBlob>& out) {
    Inode& dir = *pyc.parent->parent;
    PycState& state = *pyc.pyc;
    const std::string source = state.module + ".py";
    struct stat st;
    if (::fstatat(dir.fd.get(), source.c_str(), &st, 0) < 0)
        return errno == ENOENT || errno == ENOTDIR || errno == ELOOP ? ENOENT : errno;
    if (!S_ISREG(st.st_mode)) return ENOENT;
    auto& live =
        m_stats.per_interpreter[std::size_t(interpreter_index(state.interpreter->cache_tag))];
    if (req && !may_read_source(req, st)) {
        ++live.denied;
        return EACCES;
    }
    const auto stamp = cachecore::SourceStamp::of(st);
    if (auto cur = state.current(); cur && cur->stamp == stamp) {
        out = std::move(cur);
        return 0;
    }
    // A lookup made ahead of an importer never waits behind a build (a compile may be running
    // under this lock): the importer asks for itself when it gets here.
    const bool ahead = req && is_look_ahead(req);
    std::unique_lock build(state.build_mutex, std::defer_lock);
    if (!ahead)
        build.lock();
    else if (!build.try_lock())
        return ENOENT;
    if (auto cur = state.current(); cur && cur->stamp == stamp) {
        out = std::move(cur);
        return 0;
    }
    // co_filename: the path under the mount (CPython rewrites it on load anyway).
    std::string co_filename = source;
    char real[PATH_MAX];
    ssize_t n = ::readlink(ProcPath(dir.fd.get()).c_str(), real, sizeof real - 1);
    if (n > 0) {
        std::string path(real, std::size_t(n));
        if (path.compare(0, m_source_real.size(), m_source_real) == 0)
            path = m_config.mountpoint + path.substr(m_source_real.size());
        co_filename = path + "/" + source;
    }
    // A lookup made ahead of an importer only takes what the store has: it must neither compile
    // (a compile ahead does that, in the idle class) nor wait for one.
    const auto on_miss = ahead ? cachecore::OnMiss::Fail : cachecore::OnMiss::Compile;
    auto result = m_cache.get_pyc(dir.fd.get(), source, &st, *state.interpreter, state.optimize,
                                  m_config.pyc_mode, co_filename, on_miss);
    if (auto* error = std::get_if<cachecore::PycError>(&result)) {
        switch (error->kind) {
        case cachecore::PycErrorKind::Io:
            return error->err_no ? error->err_no : EIO;
        case cachecore::PycErrorKind::Unavailable:
            return EIO;
        default:
            return ENOENT; // CPython then compiles the source itself and reports errors
        }
    }
    auto& pyc_result = std::get<cachecore::Pyc>(result);
    if (state.as_link) supersede_link(pyc, state);
    auto blob = std::make_shared<PycBlob>();
    blob->bytes = std::move(pyc_result.bytes);
    blob->stamp = pyc_result.stamp;
    blob->source_st = st;
    blob->compiled = pyc_result.compiled;
    state.set(blob);
    out = std::move(blob);
    // A cold store: queue what the importer will ask for next (import_prefetch.cpp): what this
    // module imports, in the order CPython will ask, then its package's other modules.
    if (pyc_result.compiled) {
        if (m_config.compile_ahead_imports) prefetch_imports(*pyc.parent, state);
        if (m_config.compile_ahead_package) prefetch_siblings(*pyc.parent, state);
    }
    return 0;
}

void OverlayFs::prefetch_siblings(Inode& pycache, const PycState& state) {
    if (!m_background) return;
    const int index = interpreter_index(state.interpreter->cache_tag);
    {
        std::lock_guard lock(pycache.pycache->mutex);
        if (!pycache.pycache->prefetched.emplace(index, state.optimize).second) return;
    }
    Inode& dir = *pycache.parent;
    std::vector<std::string> modules;
    {
        std::lock_guard lock(dir.dir->mutex);
        modules = dir.dir->py_modules;
    }
    // Only a package's modules tend to be imported together; a sys.path root (the stdlib's
    // top level, site-packages) holds hundreds of unrelated ones, and compiling those ahead
    // takes the CPU from the importer.
    constexpr std::size_t k_max_siblings = 128;
    if (std::find(modules.begin(), modules.end(), "__init__") == modules.end()) return;
    if (modules.size() > k_max_siblings) return;
    // The job owns a duplicate of the directory descriptor: the inode may be forgotten meanwhile.
    int fd = ::fcntl(dir.fd.get(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return;
    auto dirfd = std::make_shared<cachecore::util::UniqueFd>(fd);
    const auto* interpreter = state.interpreter;
    const int optimize = state.optimize;
    const std::string self = state.module;
    m_background->post([this, dirfd, modules = std::move(modules), interpreter, optimize, self] {
        for (const auto& module : modules) {
            if (module != self)
                m_cache.prefetch(dirfd->get(), module + ".py", *interpreter, optimize);
        }
    });
}

void OverlayFs::push_to_page_cache(Inode& pyc, bool again) {
    // Puts the bytes of the last served pyc into the kernel's page cache, so the importer's
    // read needs no READ round trip. Tried right after the entry reply, where it usually fails
    // on a new inode (the kernel instantiates it only once the importer runs again), and from
    // every IOCTL (TCGETS) CPython <= 3.13 sends between open and read, when the inode surely
    // exists: `again`, because the kernel may have dropped the pages since (memory pressure,
    // proactive reclaim), and refilling them costs a copy where a READ costs a round trip.
    // Skipped if an invalidation came since the blob was served (the generation moved): never
    // put stale bytes back.
    if (!m_session) return;
    std::lock_guard lock(pyc.pyc->push_mutex);
    const auto& blob = pyc.pyc->served;
    // Pushing again costs a copy even when the pages are still there: bounded to usual sizes.
    constexpr std::size_t k_max_repush = 1u << 20;
    if (!blob || pyc.pyc->served_generation != pyc.pyc->generation ||
        (blob->pushed && (!again || blob->bytes.size() > k_max_repush)))
        return;
    fuse_bufvec buf = FUSE_BUFVEC_INIT(blob->bytes.size());
    buf.buf[0].mem = const_cast<char*>(blob->bytes.data());
    if (fuse_lowlevel_notify_store(m_session, m_table.to_fuse(pyc), 0, &buf,
                                   fuse_buf_copy_flags(0)) == 0) {
        blob->pushed = true;
        ++m_stats.pushes;
    }
}

fuse_ino_t OverlayFs::lookup_pycache_entry(fuse_req_t req, Inode& pycache, const char* name) {
    // Once the reply is sent the kernel may forget everything at once (an unmount, memory
    // pressure); the pyc, its __pycache__ and its directory must outlive this function.
    Inode& dir = *pycache.parent;
    m_table.pin(dir);
    struct Unpin {
        InodeTable& table;
        Inode& dir;
        ~Unpin() { table.unpin(dir); }
    } unpin{m_table, dir};

    // A real __pycache__ could not hold such a name either; CPython then compiles itself.
    if (std::strlen(name) > NAME_MAX) return fuse_reply_err(req, ENAMETOOLONG), 0;
    auto parsed = cachecore::pyc::parse_cache_name(name);
    if (!parsed) return fuse_reply_err(req, ENOENT), 0;
    int index = interpreter_index(parsed->cache_tag);
    if (index < 0) return fuse_reply_err(req, ENOENT), 0;
    ++m_stats.per_interpreter[std::size_t(index)].lookups;

    bool links = links_for(req);
    Inode* pyc;
    {
        std::lock_guard lock(pycache.pycache->mutex);
        auto& slot = pycache.pycache->pycs[name];
        links = links && m_links.load(); // turned off meanwhile: its pass saw the slot or not
        if (slot && slot->pyc->as_link != links)
            pycache.pycache->retired.push_back(std::move(slot)); // link mode was turned off
        if (!slot) {
            slot = std::make_unique<Inode>();
            slot->kind = InodeKind::Pyc;
            slot->type = S_IFREG;
            slot->st_ino = k_virtual_ino_base + m_next_virtual_ino++;
            slot->st_dev = pycache.st_dev;
            slot->parent = &pycache;
            slot->pyc = std::make_unique<PycState>();
            slot->pyc->module = parsed->module;
            slot->pyc->interpreter = &m_config.interpreters[std::size_t(index)];
            slot->pyc->optimize = parsed->optimize;
            slot->pyc->as_link = links;
        }
        pyc = slot.get();
    }
    std::uint64_t generation;
    {
        std::lock_guard lock(pyc->pyc->push_mutex);
        generation = pyc->pyc->generation;
    }
    std::shared_ptr<const PycBlob> blob;
    if (int err = pyc_blob(req, *pyc, blob)) return fuse_reply_err(req, err), 0;
    if (pyc->pyc->as_link) {
        Asker asker = asker_of(req);
        prepare_look_ahead(asker, dir, index, parsed->optimize);
        fuse_ino_t ino = reply_link_entry(req, pycache, name, *pyc, *blob);
        look_ahead_after_pyc(asker, dir, index, parsed->optimize, parsed->module, !blob->compiled);
        return ino;
    }
    m_table.add_lookup(*pyc);
    fuse_entry_param e{};
    e.ino = m_table.to_fuse(*pyc);
    fill_pyc_attr(*pyc, *blob, e.attr);
    e.attr_timeout = e.entry_timeout = pyc_timeout(*pyc, *blob);
    const bool world_readable = blob->source_st.st_mode & S_IROTH;
    if (world_readable) {
        // Recorded before the reply: the importer's TCGETS may reach another thread before
        // this one returns from fuse_reply_entry, and must find the bytes to push.
        std::lock_guard lock(pyc->pyc->push_mutex);
        pyc->pyc->served = blob;
        pyc->pyc->served_generation = generation;
    }
    Asker asker = asker_of(req);
    prepare_look_ahead(asker, dir, index, parsed->optimize);
    fuse_reply_entry(req, &e);
    // Served: the kernel now has the exact size and gets the bytes by READ or by the push.
    count_delivery(*pyc, *blob);
    if (world_readable) push_to_page_cache(*pyc, false);
    look_ahead_after_pyc(asker, dir, index, parsed->optimize, parsed->module, !blob->compiled);
    return e.ino;
}

fuse_ino_t OverlayFs::reply_link_entry(fuse_req_t req, Inode& pycache, const char* name, Inode& pyc,
                                       const PycBlob& blob) {
    // The file is complete (and immutable) before anybody learns its name from the link.
    std::string target;
    if (int err = pyc_link(pyc, blob, target)) {
        // The memory filesystem is full (or gone): every pyc becomes a FUSE file again.
        turn_links_off(std::string("a pyc file could not be written in ") + m_pyc_files->path() +
                       ": " + std::strerror(err));
        return lookup_pycache_entry(req, pycache, name);
    }
    m_table.add_lookup(pyc);
    fuse_entry_param e{};
    e.ino = m_table.to_fuse(pyc);
    fill_link_attr(pyc, blob, e.attr, target.size());
    // Whoever follows the link meets the file's own permission check: no short timeout needed
    // for sources that not everybody may read.
    e.attr_timeout = e.entry_timeout = timeout_for(*pyc.parent->parent);
    fuse_reply_entry(req, &e);
    count_delivery(pyc, blob);
    // Links were turned off while this reply was being made: its invalidation pass may have
    // come before the kernel had this entry.
    if (!m_links.load() && m_watcher)
        m_watcher->reinvalidate(m_table.to_fuse(pycache), name, e.ino);
    return e.ino;
}

void OverlayFs::read_pyc(fuse_req_t req, Inode& pyc, size_t size, off_t off) {
    // Serve exactly the bytes whose size the kernel was told; a changed source reaches the
    // kernel through invalidation, then a fresh GETATTR/LOOKUP rebuilds the blob.
    ++m_stats.pyc_reads;
    auto blob = pyc.pyc->current();
    if (!blob) {
        if (int err = pyc_blob(req, pyc, blob)) return (void)fuse_reply_err(req, err);
    }
    const std::string& bytes = blob->bytes;
    if (off < 0 || std::size_t(off) >= bytes.size()) return (void)fuse_reply_buf(req, nullptr, 0);
    std::size_t n = std::min(size, bytes.size() - std::size_t(off));
    if (off == 0) count_delivery(pyc, *blob);
    fuse_reply_buf(req, bytes.data() + off, n);
}

void OverlayFs::count_delivery(const Inode& pyc, const PycBlob& blob) {
    if (blob.delivered.exchange(true)) return; // each version of a pyc is counted once
    auto& live =
        m_stats.per_interpreter[std::size_t(interpreter_index(pyc.pyc->interpreter->cache_tag))];
    ++live.pycs_served;
    live.bytes_served += blob.bytes.size();
}

void OverlayFs::readdir_pycache(fuse_req_t req, Inode& pycache, size_t size, off_t off, bool plus) {
    Inode& dir = *pycache.parent;
    if (!refresh_dir(dir)) return (void)fuse_reply_err(req, EIO);
    std::vector<std::string> names{".", ".."};
    {
        std::lock_guard lock(dir.dir->mutex);
        for (const auto& module : dir.dir->py_modules) {
            for (const auto& tag : m_config.listed_tags) {
                auto name = cachecore::pyc::format_cache_name({module, tag, 0});
                if (name.size() <= NAME_MAX) names.push_back(std::move(name));
            }
        }
    }
    std::vector<char> buf(size);
    std::size_t used = 0;
    for (std::size_t i = std::size_t(off); i < names.size(); ++i) {
        struct stat st {};
        st.st_ino = i < 2 ? pycache.st_ino : k_virtual_ino_base - 1 - i;
        st.st_mode = i < 2 ? S_IFDIR : S_IFREG;
        std::size_t n;
        if (plus) {
            // ino 0: a name without attributes, so listing never compiles anything.
            fuse_entry_param e{};
            e.attr = st;
            n = fuse_add_direntry_plus(req, buf.data() + used, size - used, names[i].c_str(), &e,
                                       off_t(i + 1));
        } else {
            n = fuse_add_direntry(req, buf.data() + used, size - used, names[i].c_str(), &st,
                                  off_t(i + 1));
        }
        if (n > size - used) break;
        used += n;
    }
    // Marked before the reply: the walker's next listing may reach another thread at once, and
    // must find it marked (it gets listings ahead, see post_listings_ahead). Its first one also
    // starts the listings of the whole directory it walks: the jobs its own listings start
    // begin where it already is, and the next subdirectory of the walked one would come to
    // each of them only once the walker got there.
    Asker asker = asker_of(req);
    const bool walk_starts = off == 0 && importer_is_walker(asker);
    if (walk_starts) {
        prepare_look_ahead(asker, dir, -1, 0);
        m_table.pin(dir);
    }
    fuse_reply_buf(req, buf.data(), used);
    if (walk_starts) {
        if (asker.pidfd) post_listings_ahead(asker, dir);
        m_table.unpin(dir);
    }
}

} // namespace fs::overlay
