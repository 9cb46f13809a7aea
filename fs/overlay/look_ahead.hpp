#pragma once

#include "cachecore/util/unique_fd.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace fs::overlay {

// Looks names up through the mount itself, ahead of an importer, so that the kernel already
// holds their entries (and link texts) when the importer gets there.
//
// On a fresh mount every name an import touches costs the importer one FUSE round trip, one at
// a time: for `import sympy` about 700 LOOKUPs and a READLINK per pyc, each waiting for a
// wake-up of the daemon and then of the importer. The names are predictable (a package's pycs,
// its subpackages' `__init__` probes), and a lookup made by any process fills the kernel's
// cache for all of them, so a thread of the daemon makes them, in parallel with the importer,
// which then finds them cached.
//
// Each lookup is made with the importer's credentials (file-system uid and gid, groups: a
// per-thread change), so the kernel's checks on the way and the daemon's own checks see the
// importer, never the daemon. Work for an importer that has exited is dropped: a lookup in
// flight holds the mount, and `umount` of a busy mount fails.
class LookAhead {
public:
    struct Requester {
        pid_t pid = 0; // the importer's thread (FUSE reports thread ids)
        uid_t uid = 0;
        gid_t gid = 0;
        std::vector<gid_t> groups; // filled by post(), from /proc
        bool operator==(const Requester&) const = default;
    };

    explicit LookAhead(std::string mountpoint, unsigned threads = 1);
    ~LookAhead(); // stop(), then waits for the threads
    LookAhead(const LookAhead&) = delete;
    LookAhead& operator=(const LookAhead&) = delete;

    // Looks up `names` (paths relative to `dir`, a path relative to the mount point; a name
    // ending in '/' is a directory to list) in order.
    // Newer jobs go first: an importer works depth first, so the directory it entered last is where
    // it looks next. False when refused (credentials this process cannot take, an importer whose
    // groups cannot be read, stopping).
    bool post(Requester who, std::string dir, std::vector<std::string> names);
    // A request the kernel sent on behalf of one of our threads.
    bool is_own(pid_t tid) const;
    // No new lookups from now on (one in progress finishes); does not wait.
    void stop();
    // jobs, lookups, found (the name existed), dropped (never made: the importer had exited,
    // or was superseded), waiting (not made yet, or in progress).
    nlohmann::json stats() const;

private:
    struct Job {
        Requester who;
        cachecore::util::UniqueFd pidfd; // readable once the importer's thread has exited
        std::string dir;                 // under the mount point: "" or ending in '/'

        std::vector<std::string> names;
        std::size_t next = 0;
        std::chrono::steady_clock::time_point posted;
    };
    // Each thread has its own identity (fsuid, fsgid, groups are per thread).
    struct Identity {
        std::optional<Requester> taken;
        bool take(const Requester& who, bool root);
    };
    void run(std::size_t slot);
    static bool exited(const Job& job);
    bool look_up(const std::string& path) const;

    std::string m_mountpoint;
    bool m_root;
    mutable std::mutex m_mutex;
    std::condition_variable m_cv;
    std::vector<std::shared_ptr<Job>> m_jobs; // back = newest
    bool m_stopping = false;
    static constexpr std::size_t k_max_threads = 16;
    std::array<std::atomic<pid_t>, k_max_threads> m_tids{};
    std::atomic<std::uint64_t> m_posted{0}, m_dropped{0}, m_lookups{0}, m_found{0};
    std::size_t m_active = 0; // lookups in progress (guarded by m_mutex)
    std::vector<std::thread> m_threads;
};

} // namespace fs::overlay
