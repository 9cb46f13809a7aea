#include "fs/overlay/overlay_fs.hpp"

#include "cachecore/util/log.hpp"
#include "fs/overlay/background_queue.hpp"
#include "fs/overlay/change_watcher.hpp"
#include "fs/overlay/look_ahead.hpp"

#include <climits>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sys/fsuid.h>

namespace fs::overlay {

OverlayFs::OverlayFs(OverlayConfig config, cachecore::util::UniqueFd root_fd,
                     const struct stat& root_st, cachecore::BytecodeCache& cache)
    : m_config(std::move(config)), m_cache(cache), m_table(std::move(root_fd), root_st),
      m_stats(m_config.interpreters.size()) {
    char buf[PATH_MAX];
    m_source_real = ::realpath(m_config.source.c_str(), buf) ? buf : m_config.source;
    for (std::size_t i = 0; i < m_config.interpreters.size(); ++i) {
        m_tag_index.emplace(m_config.interpreters[i].cache_tag, int(i)); // first one wins
    }
    m_chown_new_files = ::geteuid() == 0;
}

OverlayFs::~OverlayFs() {
    stop();
}

void OverlayFs::start(fuse_session* session) {
    m_session = session;
    m_background = std::make_unique<BackgroundQueue>();
    m_resolver = std::make_unique<cachecore::imports::ModuleResolver>(m_table.root().fd.get());
    m_watcher = std::make_unique<ChangeWatcher>(*this);
    m_table.set_on_erase([this](Inode& inode) {
        if (inode.dir && inode.dir->watch >= 0 && m_watcher) m_watcher->unwatch(inode.dir->watch);
    });
    Inode& root = m_table.root();
    root.dir->watch = m_watcher->watch(root);
    root.watched = root.dir->watch >= 0;
    m_view_known = m_view.read(::getpid());
    start_links();
    if (m_config.look_ahead && !m_config.mountpoint.empty() && !m_over_uring)
        m_look_ahead = std::make_unique<LookAhead>(m_config.mountpoint, &m_stats.look_ahead_total);
}

void OverlayFs::stop() {
    if (m_look_ahead) m_look_ahead->stop();
    if (m_background) m_background->stop();
    if (m_watcher) m_watcher->stop();
    if (m_links_off_thread.joinable()) m_links_off_thread.join();
}

double OverlayFs::timeout_for(const Inode& dir) const {
    return dir.dir && dir.dir->watch >= 0 ? m_config.timeout : m_config.unwatched_timeout;
}

void OverlayFs::after_reply(std::uint64_t epoch, fuse_ino_t parent, const char* name,
                            fuse_ino_t ino) {
    if (m_change_epoch.load() != epoch && m_watcher) m_watcher->reinvalidate(parent, name, ino);
}

bool OverlayFs::is_pycache_name(const char* name) const {
    return m_config.hide_real_pycache && std::strcmp(name, "__pycache__") == 0;
}

int OverlayFs::interpreter_index(const std::string& tag) const {
    auto it = m_tag_index.find(tag);
    return it == m_tag_index.end() ? -1 : it->second;
}

void OverlayFs::op_init(fuse_conn_info* conn) {
    // The import hot path should cost no request at all once warm: the kernel keeps pages
    // (no OPEN/OPENDIR round trips), caches listings, and never flushes on close.
    if (!m_config.rw && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT))
        conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
    if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
    if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
    if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    // Writeback caching would turn every close into a GETATTR and is wrong for shared trees.
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    conn->want &= ~FUSE_CAP_EXPORT_SUPPORT;
}

std::string OverlayFs::stats_json() {
    using nlohmann::json;
    auto core = m_cache.counters();
    json interpreters = json::object();
    json totals = {{"lookups", 0ull},        {"pycs_served", 0ull},    {"store_hits", 0ull},
                   {"compiles", 0ull},       {"compile_errors", 0ull}, {"bytes_served", 0ull},
                   {"compile_seconds", 0.0}, {"denied", 0ull}};
    for (std::size_t i = 0; i < m_config.interpreters.size(); ++i) {
        const auto& interp = m_config.interpreters[i];
        if (interpreter_index(interp.cache_tag) != int(i)) continue;
        const auto& live = m_stats.per_interpreter[i];
        cachecore::store::Counters c;
        if (auto it = core.find(interp.cache_tag); it != core.end()) c = it->second;
        json one = {{"path", interp.path},
                    {"version", interp.version},
                    {"lookups", live.lookups.load()},
                    {"pycs_served", live.pycs_served.load()},
                    {"bytes_served", live.bytes_served.load()},
                    {"denied", live.denied.load()},
                    {"store_hits", c.hits},
                    {"store_misses", c.misses},
                    {"compiles", c.compiles},
                    {"compile_errors", c.compile_errors},
                    {"compile_seconds", c.compile_seconds}};
        for (auto key : {"lookups", "pycs_served", "bytes_served", "denied", "store_hits",
                         "compiles", "compile_errors"}) {
            totals[key] = totals[key].get<std::uint64_t>() + one[key].get<std::uint64_t>();
        }
        totals["compile_seconds"] = totals["compile_seconds"].get<double>() + c.compile_seconds;
        interpreters[interp.cache_tag] = std::move(one);
    }
    json requests = json::object(), look_ahead_requests = json::object();
    for (std::size_t i = 0; i < k_request_names.size(); ++i) {
        if (auto n = m_stats.requests[i].load()) requests[k_request_names[i]] = n;
        if (auto n = m_stats.look_ahead_requests[i].load())
            look_ahead_requests[k_request_names[i]] = n;
    }
    json look_ahead = nullptr;
    if (m_look_ahead) {
        look_ahead = m_look_ahead->stats();
        look_ahead["requests"] = std::move(look_ahead_requests);
    }
    json j = {{"pid", ::getpid()},
              {"source", m_config.source},
              {"mountpoint", m_config.mountpoint},
              {"store", m_cache.store().options().dir.string()},
              {"rw", m_config.rw},
              {"pyc_mode", std::string(cachecore::pyc::to_string(m_config.pyc_mode))},
              {"inodes", m_table.size()},
              {"all_lookups", m_stats.lookups.load()},
              {"invalidations", m_stats.invalidations.load()},
              {"reinvalidations", m_stats.reinvalidations.load()},
              {"requests", requests},
              {"pyc_reads", m_stats.pyc_reads.load()},
              {"sources_read", m_cache.sources_read()},
              {"import_lists",
               {{"from_store", m_cache.import_lists().from_store},
                {"scanned", m_cache.import_lists().scanned}}},
              {"page_cache_pushes", m_stats.pushes.load()},
              {"pyc_files", pyc_files_json()},
              {"look_ahead", look_ahead},
              {"watching", m_watcher ? m_watcher->describe() : std::string("none")},
              {"totals", totals},
              {"interpreters", interpreters}};
    if (m_transport_stats)
        j.update(m_transport_stats());
    else
        j["transport"] = "/dev/fuse";
    return j.dump(2);
}

// ---- trampolines: libfuse calls plain functions; the session's userdata is the OverlayFs ----
namespace {

OverlayFs& self(fuse_req_t req, Request kind) {
    auto& fs = *static_cast<OverlayFs*>(fuse_req_userdata(req));
    fs.count_request(req, kind);
    return fs;
}

} // namespace

fuse_lowlevel_ops OverlayFs::operations() {
    fuse_lowlevel_ops ops{};
    ops.init = [](void* userdata, fuse_conn_info* conn) {
        static_cast<OverlayFs*>(userdata)->op_init(conn);
    };
    ops.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
        self(req, Request::Lookup).op_lookup(req, parent, name);
    };
    ops.forget = [](fuse_req_t req, fuse_ino_t ino, uint64_t n) {
        self(req, Request::Forget).op_forget(ino, n);
        fuse_reply_none(req);
    };
    ops.forget_multi = [](fuse_req_t req, size_t count, fuse_forget_data* forgets) {
        for (size_t i = 0; i < count; ++i)
            self(req, Request::Forget).op_forget(forgets[i].ino, forgets[i].nlookup);
        fuse_reply_none(req);
    };
    ops.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
        self(req, Request::Getattr).op_getattr(req, ino);
    };
    ops.readlink = [](fuse_req_t req, fuse_ino_t ino) {
        self(req, Request::Readlink).op_readlink(req, ino);
    };
    ops.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
        self(req, Request::Open).op_open(req, ino, fi);
    };
    ops.read = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
        self(req, Request::Read).op_read(req, ino, size, off, fi);
    };
    ops.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
        self(req, Request::Release).op_release(req, ino, fi);
    };
    ops.flush = [](fuse_req_t req, fuse_ino_t, fuse_file_info*) {
        // Nothing is buffered here; ENOSYS makes the kernel stop sending FLUSH on every close.
        self(req, Request::Flush);
        fuse_reply_err(req, ENOSYS);
    };
    ops.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
        self(req, Request::Opendir).op_opendir(req, ino, fi);
    };
    ops.readdir = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
        self(req, Request::Readdir).op_readdir(req, ino, size, off, false);
    };
    ops.readdirplus = [](fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
        self(req, Request::Readdirplus).op_readdir(req, ino, size, off, true);
    };
    ops.releasedir = [](fuse_req_t req, fuse_ino_t, fuse_file_info*) {
        self(req, Request::Releasedir);
        fuse_reply_err(req, 0);
    };
    ops.statfs = [](fuse_req_t req, fuse_ino_t ino) {
        self(req, Request::Statfs).op_statfs(req, ino);
    };
    ops.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
        self(req, Request::Getxattr).op_getxattr(req, ino, name, size);
    };
    ops.listxattr = [](fuse_req_t req, fuse_ino_t ino, size_t size) {
        self(req, Request::Listxattr).op_listxattr(req, ino, size);
    };
    ops.access = [](fuse_req_t req, fuse_ino_t ino, int mask) {
        self(req, Request::Access).op_access(req, ino, mask);
    };
    ops.ioctl = [](fuse_req_t req, fuse_ino_t ino, unsigned int, void*, fuse_file_info*, unsigned,
                   const void*, size_t, size_t) {
        // CPython <= 3.13 asks isatty() (TCGETS) on every file it opens, between the open and
        // the read: the moment to hand over a pyc's bytes before its READ would be sent.
        self(req, Request::Ioctl).op_ioctl(req, ino);
    };
    ops.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                     fuse_file_info* fi) {
        self(req, Request::Setattr).op_setattr(req, ino, attr, to_set, fi);
    };
    ops.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
        self(req, Request::Mknod).op_mknod(req, parent, name, mode, rdev);
    };
    ops.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
        self(req, Request::Mkdir).op_mkdir(req, parent, name, mode);
    };
    ops.symlink = [](fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
        self(req, Request::Symlink).op_symlink(req, link, parent, name);
    };
    ops.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
        self(req, Request::Link).op_link(req, ino, parent, name);
    };
    ops.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
        self(req, Request::Unlink).op_unlink(req, parent, name, false);
    };
    ops.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
        self(req, Request::Rmdir).op_unlink(req, parent, name, true);
    };
    ops.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                    const char* newname, unsigned int flags) {
        self(req, Request::Rename).op_rename(req, parent, name, newparent, newname, flags);
    };
    ops.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                    fuse_file_info* fi) {
        self(req, Request::Create).op_create(req, parent, name, mode, fi);
    };
    ops.write = [](fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                   fuse_file_info* fi) {
        self(req, Request::Write).op_write(req, ino, buf, size, off, fi);
    };
    ops.fsync = [](fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
        self(req, Request::Fsync).op_fsync(req, ino, datasync, fi);
    };
    ops.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                      size_t size, int flags) {
        self(req, Request::Setxattr).op_setxattr(req, ino, name, value, size, flags);
    };
    ops.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) {
        self(req, Request::Removexattr).op_removexattr(req, ino, name);
    };
    return ops;
}

} // namespace fs::overlay
