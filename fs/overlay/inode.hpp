#pragma once

#include "cachecore/bytecode_cache.hpp"
#include "cachecore/pyc/pyc_file_dir.hpp"
#include "cachecore/python/interpreter.hpp"
#include "cachecore/util/unique_fd.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace fs::overlay {

enum class InodeKind : std::uint8_t { Real, PycacheDir, Pyc };

struct Inode;

// One name in a directory listing snapshot.
struct DirEntry {
    std::string name;
    ino_t ino = 0;
    unsigned char type = 0; // DT_*
    bool is_virtual_pycache = false;
};

// What a real directory knows about itself; rebuilt when its mtime changes.
struct DirState {
    std::mutex mutex;
    std::int64_t scanned_mtime_ns = -1;
    std::int64_t scanned_ctime_ns = -1;
    bool has_py = false;
    std::vector<std::string> py_modules; // module names of `*.py` files (for the virtual listing)
    std::shared_ptr<const std::vector<DirEntry>> listing;
    std::unique_ptr<Inode> pycache; // the virtual __pycache__, created on first lookup
    int watch = -1;                 // inotify watch descriptor, -1 when unwatched
    // (interpreter index, optimize) -> when last looked ahead of (look_ahead_jobs.cpp)
    std::map<std::pair<int, int>, std::chrono::steady_clock::time_point> looked_ahead;
};

// A served pyc: the complete file and the source version it was built from.
struct PycBlob {
    std::string bytes;
    bool compiled = false;                      // built by a compile (not from the store)
    mutable std::atomic<bool> pushed{false};    // placed in the kernel's page cache (at least once)
    mutable std::atomic<bool> delivered{false}; // counted in the served statistics
    cachecore::SourceStamp stamp;
    struct stat source_st {};
    // Link mode: the real file the pyc's symlink names; removed with the last blob holding it.
    mutable std::mutex file_mutex;
    mutable std::shared_ptr<cachecore::pyc::PycFile> file;
};

struct PycState {
    std::string module; // source = module + ".py" in the real directory
    const cachecore::python::Interpreter* interpreter = nullptr;
    int optimize = 0;
    // Shown as a symlink to a real file (PycFileDir) rather than as a regular file; fixed for
    // the inode's life (the kernel refuses an inode that changes type).
    bool as_link = false;
    std::mutex build_mutex;              // serializes rebuilds (a compile may run under it)
    std::mutex blob_mutex;               // guards `blob` only, held briefly
    std::shared_ptr<const PycBlob> blob; // what the kernel was last told (size and bytes agree)
    // Orders page-cache pushes against invalidations: a push made for an older generation
    // than the latest invalidation is skipped (it would put stale bytes back).
    std::mutex push_mutex;
    std::uint64_t generation = 0; // guarded by push_mutex
    // The world-readable blob last given in an entry reply and the generation it was built
    // under (guarded by push_mutex): what a later push may place in the page cache.
    std::shared_ptr<const PycBlob> served;
    std::uint64_t served_generation = 0;
    // Link mode: files of replaced versions the kernel may still link to (guarded by push_mutex);
    // released when the kernel reads the link again or forgets the pyc.
    std::vector<std::shared_ptr<cachecore::pyc::PycFile>> superseded;

    std::shared_ptr<const PycBlob> current() {
        std::lock_guard lock(blob_mutex);
        return blob;
    }
    void set(std::shared_ptr<const PycBlob> b) {
        std::lock_guard lock(blob_mutex);
        blob = std::move(b);
    }
};

struct PycacheState {
    Inode* real_dir = nullptr; // owner; outlives this inode
    std::mutex mutex;
    std::map<std::string, std::unique_ptr<Inode>> pycs;
    // Pycs replaced by one of the other kind (links turned off); kept while the kernel knows them.
    std::vector<std::unique_ptr<Inode>> retired;
    std::set<std::pair<int, int>> prefetched; // (interpreter index, optimize) compiled ahead
};

// fuse_ino_t is the address of an Inode (O(1) resolution, as in passthrough_hp).
struct Inode {
    InodeKind kind = InodeKind::Real;
    std::uint64_t nlookup = 0; // guarded by InodeTable's mutex
    std::uint32_t pins = 0;    // guarded by InodeTable's mutex: in use outside a request
    bool watched = false;      // changes to it are reported by the watcher (long timeouts)
    ino_t st_ino = 0;          // real: source inode; virtual: synthetic
    dev_t st_dev = 0;
    mode_t type = 0; // S_IFMT bits

    // Real inodes: an O_PATH|O_NOFOLLOW descriptor; every operation is relative to it.
    cachecore::util::UniqueFd fd;
    std::atomic<int> read_fd{-1};  // lazily opened O_RDONLY fd for reads without an open()
    std::unique_ptr<DirState> dir; // real directories only

    std::unique_ptr<PycacheState> pycache; // InodeKind::PycacheDir
    std::unique_ptr<PycState> pyc;         // InodeKind::Pyc
    Inode* parent = nullptr;               // virtual inodes: their directory

    ~Inode() {
        int rfd = read_fd.exchange(-1);
        if (rfd >= 0) ::close(rfd);
    }
};

} // namespace fs::overlay
