#pragma once

#include "cachecore/util/unique_fd.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
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
// cache for all of them, so threads of the daemon (one per CPU, each making one lookup at a
// time, together in the order given) make them, in parallel with the importer, which then
// finds them cached.
//
// Each lookup is made with the importer's credentials (file-system uid and gid, groups: a
// per-thread change), so the kernel's checks on the way and the daemon's own checks see the
// importer, never the daemon. Work for an importer that has exited is dropped: a lookup in
// flight holds the mount, and `umount` of a busy mount fails.
class LookAhead {
public:
    struct Requester {
        pid_t pid = 0; // the importer's thread (FUSE reports thread ids)
        uid_t uid = 0; // its file-system uid and gid, as the request carried them
        gid_t gid = 0;
        std::vector<gid_t> groups; // filled by post(), from /proc
        bool operator==(const Requester&) const = default;
    };

    // `own_requests`, when given, counts the requests this look-ahead's lookups caused (the
    // daemon counts them as it serves them): a stream whose lookups find everything cached is
    // walking a tree the kernel already knows (a hot mount), and is dropped.
    explicit LookAhead(std::string mountpoint,
                       const std::atomic<std::uint64_t>* own_requests = nullptr);
    ~LookAhead(); // stop(), then waits for the threads
    LookAhead(const LookAhead&) = delete;
    LookAhead& operator=(const LookAhead&) = delete;

    // A pidfd for the requester's thread, to be opened while its request is still unanswered:
    // the thread cannot exit (and its number cannot be reused) before the reply, so the pidfd
    // names the process that asked. Invalid when it cannot be had (a thread that does not lead
    // its process, before Linux 6.9): such a requester gets no look-ahead.
    static cachecore::util::UniqueFd open_requester(pid_t tid);

    // A name for post() and extend(): the file at `path` read into the page cache, not only
    // looked up.
    static std::string to_read(std::string path) { return path.push_back('\0'), path; }

    // Looks up `names` (paths relative to `dir`, a path relative to the mount point; a name
    // ending in '/' is a directory to list, one made by to_read() a file to read) in order. Newer
    // jobs go first: an importer works depth first, so the directory it entered last is where it
    // looks next. The requester's groups are read from /proc, and must come from the thread `pidfd`
    // names, with the same file-system uid and gid the request carried. False when refused: no
    // pidfd, the requester has exited or changed identity, an identity this process cannot take,
    // stopped.
    bool post(Requester who, cachecore::util::UniqueFd pidfd, std::string dir,
              std::vector<std::string> names);
    // As post(), for directories to list (names ending in '/') in a tree walker's order: each
    // listing's subdirectories, sorted, go next (depth first), found by the listing itself, so
    // the walk of the tree starts at once and reads nothing as the daemon; at most `limit`
    // names in all.
    bool post_tree(Requester who, cachecore::util::UniqueFd pidfd, std::string dir,
                   std::vector<std::string> names, std::size_t limit);
    // An ordered job that grows while it runs: the names an import will touch, in the order it
    // will touch them, appended by extend() as the import graph is walked (paths relative to
    // the mount point). Streams go before the jobs of post(), the newest stream first: they
    // follow the importer, post()'s guess only its surroundings. Checks as post(); `who.groups`
    // is filled in. 0 when refused.
    std::uint64_t open_stream(Requester& who, cachecore::util::UniqueFd pidfd);
    // Appends to a stream; `last` closes it. False when the stream is gone (its importer has
    // exited, it was dropped, stopped): the walk feeding it should end.
    bool extend(std::uint64_t stream, std::vector<std::string> names, bool last);
    // Held by a request handler from before its reply until it has posted the jobs the request
    // starts (or found there are none): stats() counts it as waiting, so that the look-ahead
    // never looks idle between an importer's answer and the work that answer sets off.
    [[nodiscard]] std::shared_ptr<void> preparing();
    // A request the kernel sent on behalf of one of our threads.
    bool is_own(pid_t tid) const;
    // No new lookups from now on (one in progress finishes); does not wait.
    void stop();

    // jobs, lookups, found (the name existed), files_read and bytes_read (to_read() names whose
    // reads were started), dropped (never made: the importer had exited,
    // or was superseded), waiting (not made yet, or in progress; a stream still being walked
    // counts one, and so does a request being prepared).
    nlohmann::json stats() const;

private:
    struct Job {
        Requester who;
        std::uint64_t id = 0; // its pidfd travels to the thread under this id (see run())
        std::string dir;      // under the mount point: "" or ending in '/'

        std::vector<std::string> names;
        std::size_t next = 0;
        std::chrono::steady_clock::time_point posted; // or last extended
        bool stream = false;
        bool open = false;          // a stream still being extended
        std::size_t tree_limit = 0; // post_tree(): listings add their subdirectories, up to this
        std::size_t in_flight = 0;  // names taken and not looked up yet (a listing may add more)
        std::size_t all_cached = 0; // lookups in a row that caused no request
        bool pending() const { return next < names.size(); }
    };
    // Validates and queues; returns the job's id (0: refused).
    std::uint64_t enqueue(Requester& who, cachecore::util::UniqueFd pidfd, std::string dir,
                          std::vector<std::string> names, bool stream, std::size_t tree_limit = 0);
    // The job to work on next, under m_mutex; drops finished and stale jobs on the way.
    std::shared_ptr<Job> pick();
    // Each thread has its own identity (fsuid, fsgid, groups are per thread).
    struct Identity {
        std::optional<Requester> taken;
        bool take(const Requester& who, bool root);
    };
    // The mount this look-ahead works on, recorded at its first lookup (an importer had just
    // used it): after a lazy unmount the mount point may lead somewhere else.
    struct MountId {
        std::uint64_t id = 0;
        bool known = false;
    };
    // The pidfds of jobs, in the lookers' own table (they arrive over the socket pair).
    struct Pidfds {
        int socket;
        std::mutex mutex;
        std::map<std::uint64_t, int> by_job;
        bool exited(std::uint64_t job); // or unknown
        void receive();                 // under `mutex`
        // Closes those of jobs no longer in `jobs` (finished, dropped, superseded).
        void forget_gone(const std::vector<std::shared_ptr<Job>>& jobs);
    };
    void run();
    void look(Pidfds& pidfds); // one looker's loop
    static bool exited(int pidfd);
    // `subdirs`, when given, receives a listed directory's subdirectories.
    bool look_up(const std::string& path, MountId& mount,
                 std::vector<std::string>* subdirs = nullptr);

    std::string m_mountpoint;
    const std::atomic<std::uint64_t>* m_own_requests;
    bool m_root;
    mutable std::mutex m_mutex;
    std::condition_variable m_cv;
    std::vector<std::shared_ptr<Job>> m_jobs; // back = newest
    bool m_stopping = false;
    // Lookups made at once (one per CPU): an import walk's names are looked up a few at a time,
    // so that the look-ahead gets ahead of the importer instead of racing it one round trip at
    // a time.
    static constexpr std::size_t k_max_lookers = 4;
    std::array<std::atomic<pid_t>, k_max_lookers> m_tids{};
    std::atomic<std::uint64_t> m_posted{0}, m_dropped{0}, m_lookups{0}, m_found{0};
    std::atomic<std::uint64_t> m_files_read{0}, m_bytes_read{0};
    std::size_t m_active = 0; // lookups in progress (guarded by m_mutex)
    std::atomic<std::size_t> m_preparing{0};
    // The threads work with a file table of their own, holding none of the daemon's descriptors
    // (above all not /dev/fuse): if the daemon dies (SIGKILL, a crash) while a thread waits for
    // an answer to its own lookup, the daemon's table still goes, /dev/fuse closes, the kernel
    // aborts the connection and the wait ends. Sharing the table, the thread would hold
    // /dev/fuse open while waiting for itself: an unkillable process and a hung mount. The
    // first thread unshares its table and starts the others, which share it; the pidfds of
    // jobs reach it over this socket pair (SCM_RIGHTS).
    cachecore::util::UniqueFd m_send;
    int m_receive = -1; // the thread's end (its number in the thread's own table)
    cachecore::util::UniqueFd m_receive_placeholder; // that number in this table (see the ctor)
    std::uint64_t m_next_id = 1;                     // guarded by m_mutex
    bool m_started = false; // the threads have their own table (guarded by m_mutex)
    bool m_usable = false;
    std::thread m_thread;
};

} // namespace fs::overlay
