#include "fs/overlay/look_ahead.hpp"

#include "cachecore/util/open_beneath.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace fs::overlay {
namespace {

// An importer that takes longer than this between touching a directory and importing from it
// gains nothing from lookups made this early (the kernel has them anyway, or they were wasted).
constexpr auto k_max_job_age = std::chrono::seconds(5);
// Jobs waiting; the oldest go first when full (an importer has left those directories).
constexpr std::size_t k_max_jobs = 64;

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

int open_pidfd(pid_t tid) {
    // FUSE reports thread ids: a thread pidfd (Linux 6.9+) follows exactly that thread; else a
    // process pidfd, which works when the thread leads its process (a single-threaded importer).
    long fd = ::syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
    if (fd < 0) fd = ::syscall(SYS_pidfd_open, tid, 0);
    return int(fd);
}

// The supplementary groups of a thread, as the kernel checks them (libfuse reads them the same
// way for fuse_req_getgroups).
std::optional<std::vector<gid_t>> groups_of(pid_t tid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/task/%d/status", int(tid), int(tid));
    std::FILE* f = std::fopen(path, "re");
    if (!f) return std::nullopt;
    std::optional<std::vector<gid_t>> groups;
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
        if (std::strncmp(line, "Groups:", 7) != 0) continue;
        groups.emplace();
        char* p = line + 7;
        for (;;) {
            char* end;
            unsigned long g = std::strtoul(p, &end, 10);
            if (end == p) break;
            groups->push_back(gid_t(g));
            p = end;
        }
        break;
    }
    std::fclose(f);
    return groups;
}

std::vector<gid_t> own_groups() {
    int n = ::getgroups(0, nullptr);
    std::vector<gid_t> groups(std::size_t(std::max(n, 0)));
    if (n > 0 && ::getgroups(n, groups.data()) < 0) groups.clear();
    return groups;
}

} // namespace

LookAhead::LookAhead(std::string mountpoint, unsigned threads)
    : m_mountpoint(std::move(mountpoint)), m_root(::geteuid() == 0) {
    threads = std::clamp(threads, 1u, unsigned(k_max_threads));
    for (std::size_t i = 0; i < threads; ++i) m_threads.emplace_back([this, i] { run(i); });
}

void LookAhead::stop() {
    {
        std::lock_guard lock(m_mutex);
        m_stopping = true;
        m_jobs.clear();
    }
    m_cv.notify_all();
}

LookAhead::~LookAhead() {
    stop();
    // A thread may be inside a lookup on the mount: it returns once the FUSE session is gone
    // (closing /dev/fuse aborts what nobody will answer), which is why the owner destroys this
    // only after the session.
    for (auto& t : m_threads)
        if (t.joinable()) t.join();
}

bool LookAhead::is_own(pid_t tid) const {
    if (tid == 0) return false;
    for (const auto& t : m_tids)
        if (t.load(std::memory_order_relaxed) == tid) return true;
    return false;
}

bool LookAhead::post(Requester who, std::string dir, std::vector<std::string> names) {
    if (names.empty()) return false;
    // Without the right to change identity only the daemon's own user is looked ahead for, and
    // only with exactly the daemon's groups (the daemon's checks then see what the importer is).
    if (!m_root && (who.uid != ::geteuid() || who.gid != ::getegid())) return false;
    if (!m_root) {
        auto mine = own_groups();
        std::sort(mine.begin(), mine.end());
        std::sort(who.groups.begin(), who.groups.end());
        if (mine != who.groups) return false;
    }
    auto job = std::make_shared<Job>();
    // The pidfd first, then the groups, then the pidfd again: the groups read are those of the
    // thread the pidfd follows, not of a process that took its number after it exited.
    job->pidfd = cachecore::util::UniqueFd(open_pidfd(who.pid));
    auto groups = groups_of(who.pid);
    if (!groups || exited(*job)) return false;
    who.groups = std::move(*groups);
    job->who = std::move(who);
    job->dir = dir.empty() ? std::string() : dir + "/";
    job->names = std::move(names);
    job->posted = std::chrono::steady_clock::now();
    {
        std::lock_guard lock(m_mutex);
        if (m_stopping) return false;
        if (m_jobs.size() >= k_max_jobs) {
            m_dropped += m_jobs.front()->names.size() - m_jobs.front()->next;
            m_jobs.erase(m_jobs.begin());
        }
        m_jobs.push_back(std::move(job));
    }
    ++m_posted;
    m_cv.notify_one();
    return true;
}

bool LookAhead::look_up(const std::string& path) const {
    // The mount is held only for the moment of a lookup (a held descriptor would make every
    // unmount fail as busy). The walk stays beneath the mount point: a symlink in the tree
    // that leads elsewhere (absolute, or `..` above the top) ends it, so nothing outside is
    // touched on anybody's behalf. A pyc that is a symlink has its text read, which the kernel
    // keeps, and is not followed (the importer's own open of the file costs no round trip).
    // A name ending in '/' is a directory to list: the kernel keeps the listing (and the
    // entries READDIRPLUS brings), and the importer's own listing is then served from it.
    cachecore::util::UniqueFd root(::open(m_mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return false;
    if (!path.empty() && path.back() == '/') {
        auto dir = cachecore::util::open_beneath(root.get(), path.substr(0, path.size() - 1),
                                                 O_RDONLY | O_DIRECTORY);
        if (!dir) return false;
        alignas(8) char buf[16384];
        while (::syscall(SYS_getdents64, dir.get(), buf, sizeof buf) > 0) {
        }
        return true;
    }
    auto fd = cachecore::util::open_beneath(root.get(), path, O_PATH);
    if (!fd) return false;
    char text[PATH_MAX];
    (void)::readlinkat(fd.get(), "", text, sizeof text); // EINVAL when not a symlink
    return true;
}

bool LookAhead::exited(const Job& job) {
    if (!job.pidfd) return false;
    pollfd p{job.pidfd.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
}

bool LookAhead::Identity::take(const Requester& who, bool root) {
    if (taken && *taken == who) return true;
    if (!root) return true; // post() accepted only the daemon's own identity
    // Raw system calls: glibc's setgroups would change every thread of the daemon. Order: the
    // groups first (needs CAP_SETGID, which a changed fsuid keeps), then fsgid, fsuid.
    taken.reset();
    if (::syscall(SYS_setgroups, who.groups.size(), who.groups.data()) != 0) return false;
    ::setfsgid(who.gid);
    ::setfsuid(who.uid);
    // setfsuid/setfsgid report the previous value, never an error: read them back.
    if (uid_t(::setfsuid(uid_t(-1))) != who.uid || gid_t(::setfsgid(gid_t(-1))) != who.gid)
        return false;
    taken = who;
    return true;
}

void LookAhead::run(std::size_t slot) {
    m_tids[slot] = pid_t(::syscall(SYS_gettid));
    Identity identity;
    std::unique_lock lock(m_mutex);
    for (;;) {
        m_cv.wait(lock, [&] { return m_stopping || !m_jobs.empty(); });
        if (m_stopping) return;
        std::shared_ptr<Job> job = m_jobs.back();
        const bool stale = std::chrono::steady_clock::now() - job->posted > k_max_job_age;
        if (stale || job->next >= job->names.size()) {
            m_dropped += job->names.size() - job->next;
            m_jobs.pop_back();
            continue;
        }
        const std::string path = job->dir + job->names[job->next++];
        ++m_active;
        lock.unlock();
        bool dead = exited(*job);
        bool usable = !dead && identity.take(job->who, m_root);
        if (usable) {
            ++m_lookups;
            if (look_up(path)) ++m_found;
        }
        lock.lock();
        --m_active;
        if (!usable) {
            // The importer is gone (or its identity cannot be taken): all its jobs go.
            ++m_dropped; // this lookup
            const pid_t pid = job->who.pid;
            for (auto it = m_jobs.begin(); it != m_jobs.end();) {
                if ((*it)->who.pid == pid) {
                    m_dropped += (*it)->names.size() - (*it)->next;
                    it = m_jobs.erase(it);
                } else {
                    ++it;
                }
            }
        }
    }
}

nlohmann::json LookAhead::stats() const {
    std::size_t waiting = 0;
    {
        std::lock_guard lock(m_mutex);
        waiting = m_active;
        for (const auto& job : m_jobs) waiting += job->names.size() - job->next;
    }
    return {{"jobs", m_posted.load()},
            {"lookups", m_lookups.load()},
            {"found", m_found.load()},
            {"dropped", m_dropped.load()},
            {"waiting", waiting}};
}

} // namespace fs::overlay
