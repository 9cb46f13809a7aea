#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include "cachecore/bytecode_cache.hpp"
#include "cachecore/imports/module_resolver.hpp"
#include "fs/overlay/inode_table.hpp"
#include "fs/overlay/live_stats.hpp"
#include "fs/overlay/overlay_config.hpp"

#include <array>
#include <functional>
#include <fuse_lowlevel.h>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>

namespace fs::overlay {

class ChangeWatcher;
class BackgroundQueue;
class LookAhead;

// The filesystem: real files pass through (passthrough_hp's design), every directory holding a
// `*.py` shows a virtual `__pycache__` whose pycs come from the BytecodeCache.
// Operations live in: real_ops.cpp (lookup, attributes, reads, listings), pycache_ops.cpp (the
// virtual directory and its pycs), pyc_links.cpp (pycs as symlinks to real files),
// write_ops.cpp (--rw), change_handling.cpp (invalidation).
class OverlayFs {
public:
    OverlayFs(OverlayConfig config, cachecore::util::UniqueFd root_fd, const struct stat& root_st,
              cachecore::BytecodeCache& cache);
    ~OverlayFs();
    OverlayFs(const OverlayFs&) = delete;
    OverlayFs& operator=(const OverlayFs&) = delete;

    static fuse_lowlevel_ops operations();
    // Starts watching for changes beneath the mount; notifications go to `session`.
    void start(fuse_session* session);
    void stop();
    std::string stats_json();
    // Adds the transport's counters (FUSE over io_uring or /dev/fuse) to stats_json().
    // Also says the session is served over FUSE io_uring, where the look-ahead stays off: a
    // request queued to a ring entry counts as read by the daemon at once, and whether a
    // daemon killed while its own lookup sits there is released has not been proven here.
    void set_transport_stats(std::function<nlohmann::json()> json_object) {
        m_transport_stats = std::move(json_object);
        m_over_uring = true;
    }

    // ---- operations (called through the trampolines in overlay_fs.cpp) ----
    void op_init(fuse_conn_info* conn);
    void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
    void op_forget(fuse_ino_t ino, std::uint64_t n);
    void op_getattr(fuse_req_t req, fuse_ino_t ino);
    void op_readlink(fuse_req_t req, fuse_ino_t ino);
    void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
    void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus);
    void op_statfs(fuse_req_t req, fuse_ino_t ino);
    void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
    void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
    void op_access(fuse_req_t req, fuse_ino_t ino, int mask);
    void op_ioctl(fuse_req_t req, fuse_ino_t ino);
    void count_request(fuse_req_t req, Request kind) {
        m_stats.requests[std::size_t(kind)].fetch_add(1, std::memory_order_relaxed);
        if (is_look_ahead(req)) {
            m_stats.look_ahead_requests[std::size_t(kind)].fetch_add(1, std::memory_order_relaxed);
            m_stats.look_ahead_total.fetch_add(1, std::memory_order_relaxed);
        }
    }

    void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                    fuse_file_info* fi);
    void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
    void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
    void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
    void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
    void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir);
    void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                   const char* newname, unsigned int flags);
    void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                   fuse_file_info* fi);
    void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                  fuse_file_info* fi);
    void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
    void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                     size_t size, int flags);
    void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

    // ---- change handling (change_handling.cpp), called by the watcher thread ----
    void on_change(Inode& dir, const std::string& name, bool dir_itself);
    void on_watch_lost(Inode& dir);

private:
    friend class ChangeWatcher;

    Inode& inode(fuse_ino_t ino) { return m_table.from_fuse(ino); }
    double timeout_for(const Inode& dir) const;
    void after_reply(std::uint64_t epoch, fuse_ino_t parent, const char* name, fuse_ino_t ino);
    bool is_pycache_name(const char* name) const;
    int writable_dir_error(const Inode& parent, const char* name) const; // write_ops.cpp

    // real_ops.cpp
    int lookup_real(Inode& parent, const char* name, fuse_entry_param& e);
    bool refresh_dir(Inode& dir); // rescans when the directory changed; false on error
    std::shared_ptr<const std::vector<DirEntry>> dir_listing(Inode& dir);
    int reader_fd(Inode& inode);

    // pycache_ops.cpp
    Inode& pycache_of(Inode& dir);
    // Replies; returns the inode given to the kernel (0 for an error).
    fuse_ino_t lookup_pycache_entry(fuse_req_t req, Inode& pycache, const char* name);
    int pyc_blob(fuse_req_t req, Inode& pyc, std::shared_ptr<const PycBlob>& out);
    fuse_ino_t reply_link_entry(fuse_req_t req, Inode& pycache, const char* name, Inode& pyc,
                                const PycBlob& blob);
    void fill_pycache_attr(const Inode& pycache, struct stat& st);
    void fill_pyc_attr(const Inode& pyc, const PycBlob& blob, struct stat& st) const;
    double pyc_timeout(const Inode& pyc, const PycBlob& blob) const;
    void readdir_pycache(fuse_req_t req, Inode& pycache, size_t size, off_t off, bool plus);
    void read_pyc(fuse_req_t req, Inode& pyc, size_t size, off_t off);
    void prefetch_siblings(Inode& pycache, const PycState& state);
    // import_prefetch.cpp
    void prefetch_imports(Inode& pycache, const PycState& state);
    void walk_imports(const std::string& dir, const std::string& file,
                      const cachecore::python::Interpreter& interpreter, int optimize);
    void push_to_page_cache(Inode& pyc, bool again);
    // pyc_links.cpp
    void start_links();
    bool links_for(fuse_req_t req);
    bool shares_view(pid_t pid); // resolves paths as this daemon does (namespace, root)
    int pyc_link(const Inode& pyc, const PycBlob& blob, std::string& target);
    void supersede_link(Inode& pyc, PycState& state);
    std::string source_path(const Inode& pyc) const;
    void fill_link_attr(const Inode& pyc, const PycBlob& blob, struct stat& st,
                        std::size_t size) const;
    void turn_links_off(const std::string& why);
    nlohmann::json pyc_files_json() const;
    void count_delivery(const Inode& pyc, const PycBlob& blob);
    int interpreter_index(const std::string& tag) const;
    // look_ahead_jobs.cpp. Who asked, taken before the reply (which frees the request).
    struct Asker {
        pid_t pid = 0;
        uid_t uid = 0;
        gid_t gid = 0;
        bool own = false; // our own look-ahead
        // Opened before the reply by prepare_look_ahead when a job is likely: names the asker.
        std::shared_ptr<cachecore::util::UniqueFd> pidfd;
        // With the pidfd: the look-ahead counts this request as waiting until it is done with.
        std::shared_ptr<void> preparing;
    };
    bool is_look_ahead(fuse_req_t req) const;
    Asker asker_of(fuse_req_t req) const;
    // index < 0: the asker's known interpreter (a listing).
    void prepare_look_ahead(Asker& asker, Inode& dir, int index, int optimize);
    bool looked_ahead_recently(Inode& dir, int index, int optimize);
    // `walk_imports`: also along the module's imports (not for a module just compiled: its
    // imports are being compiled ahead, and a look-ahead never waits for a compile).
    void look_ahead_after_pyc(const Asker& asker, Inode& dir, int index, int optimize,
                              const std::string& module, bool walk_imports);
    void look_ahead_after_listing(const Asker& asker, Inode& dir);
    // True when this made the asker a walker (its first __pycache__ listing).
    bool importer_is_walker(const Asker& asker);
    void post_look_ahead(const Asker& asker, Inode& dir, int index, int optimize,
                         const std::string& served);
    // A walker's look-ahead: the listings of `dir`'s subdirectories.
    void post_listings_ahead(const Asker& asker, Inode& dir);
    // Directories are looked ahead of at most once in a while per interpreter and optimize
    // level (or k_listings_index): false when it was done recently.
    static constexpr int k_listings_index = -2;
    bool mark_looked_ahead(Inode& dir, int index, int optimize);
    void unmark_looked_ahead(Inode& dir, int index, int optimize);
    std::optional<std::string> path_in_tree(Inode& dir); // "" for the root
    // import_look_ahead.cpp
    struct ImportsAhead; // the modules an importer's walks have covered
    void look_ahead_imports(const Asker& asker, Inode& dir, int index, int optimize,
                            const std::string& module);
    // The importer's __main__ (its command line's -c code, or its script when under the mount),
    // whose imports are walked after the first module's: CPython asks for no pyc of it.
    struct MainProgramAhead {
        std::string code;        // -c
        std::string script_path; // a script's path in the tree
        int optimize = 0;
    };
    // A process's first listing (a sys.path entry, before its first pyc): its __main__'s
    // imports are walked from there at once, as imports of the interpreter its binary is.
    void walk_main_early(const Asker& asker, Inode& dir);
    // Opens the importer's stream and walks from `from` (its file "": only __main__'s imports)
    // on the background thread.
    void start_walk(const Asker& asker, std::shared_ptr<ImportsAhead> seen,
                    const cachecore::imports::ModuleFile& from,
                    std::optional<MainProgramAhead> main, int index, int optimize);
    std::optional<MainProgramAhead> main_program_ahead(const Asker& asker);
    void walk_ahead(std::uint64_t stream, const std::vector<gid_t>& groups, uid_t uid, gid_t gid,
                    ImportsAhead& seen, const cachecore::imports::ModuleFile& from,
                    const std::optional<MainProgramAhead>& main, int index, int optimize);

    OverlayConfig m_config;
    std::function<nlohmann::json()> m_transport_stats;
    bool m_over_uring = false;
    std::string m_source_real; // realpath of the source (to name co_filename under the mount)
    cachecore::BytecodeCache& m_cache;
    InodeTable m_table;
    LiveStats m_stats;
    std::map<std::string, int> m_tag_index;
    fuse_session* m_session = nullptr;
    std::unique_ptr<ChangeWatcher> m_watcher;
    std::unique_ptr<BackgroundQueue> m_background;
    std::unique_ptr<cachecore::imports::ModuleResolver> m_resolver;
    std::mutex m_imports_mutex;
    std::unordered_set<std::string> m_imports_seen; // (module path, tag, optimize) walked
    std::atomic<std::uint64_t> m_next_virtual_ino{1};
    // Stopped by stop(), joined when destroyed: the mount command destroys this filesystem
    // after the FUSE session, whose end releases a lookup still in flight.
    std::unique_ptr<LookAhead> m_look_ahead;
    // Recent importers (thread ids) and the pyc kind they ask for: their listings are looked
    // ahead of too. A few slots, least recently used replaced.
    struct Importer {
        pid_t pid = 0;
        int index = -1;
        int optimize = 0;
        std::uint64_t used = 0;
        bool walker = false; // listed a __pycache__ (CPython never does): not an importer
        // Directories listed before the first pyc (a sys.path entry): looked ahead of then.
        std::array<std::pair<dev_t, ino_t>, 4> listed{};
        std::size_t n_listed = 0;
        std::shared_ptr<ImportsAhead> imports_ahead;
        bool main_tried = false; // its __main__'s imports walked from its first listing
    };
    std::mutex m_importers_mutex;
    std::array<Importer, 16> m_importers{};
    Importer& importer_slot(pid_t pid); // under m_importers_mutex
    std::uint64_t m_importer_clock = 0;
    // Bumped by the watcher before each batch of invalidations; a reply whose data was gathered
    // under an older epoch is invalidated again once the kernel has it (see after_reply).
    std::atomic<std::uint64_t> m_change_epoch{0};
    bool m_chown_new_files = false; // running as root: new files go to the requester
    std::shared_ptr<cachecore::pyc::PycFileDir> m_pyc_files; // link mode (pyc_links.cpp)
    std::atomic<bool> m_links{false};
    std::string m_links_off_reason;
    mutable std::mutex m_links_mutex; // guards m_links_off_reason and the switch
    // What a process's paths resolve against: its mount namespace and its root (the mount and
    // the directory). Links work for processes that share this daemon's.
    struct FsView {
        dev_t ns_dev = 0;
        ino_t ns_ino = 0;
        std::uint64_t root_mount = 0;
        dev_t root_dev = 0;
        ino_t root_ino = 0;
        bool read(pid_t pid); // from /proc/<pid>; false when it cannot be read
        bool operator==(const FsView&) const = default;
    };
    FsView m_view; // this daemon's
    bool m_view_known = false;
    std::thread m_links_off_thread;
    // (pid << 32 | second) of the last requester seen to share m_view
    std::atomic<std::uint64_t> m_same_view{0};
};

} // namespace fs::overlay
