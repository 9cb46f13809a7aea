#include "fs/overlay/look_ahead.hpp"

#include "fs/overlay/thread_status.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <map>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <string_view>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace fs::overlay {
namespace {

// An importer that takes longer than this between touching a directory and importing from it
// gains nothing from lookups made this early (the kernel has them anyway, or they were wasted).
constexpr auto k_max_job_age = std::chrono::seconds(5);
// Jobs waiting; the oldest go first when full (an importer has left those directories).
constexpr std::size_t k_max_jobs = 64;
// Names one stream may hold (an import of a whole framework touches a few thousand).
constexpr std::size_t k_max_stream_names = 16384;
// A stream whose lookups found this many names in a row in the kernel's cache is walking a tree
// the kernel already knows (a hot mount, where an importer asked for one reclaimed name): the
// rest would only cost CPU time next to the importer.
constexpr std::size_t k_max_all_cached = 64;
// Larger files are left to the importer's own page faults (a big extension module uses a part
// of its pages; reading it all would cost the daemon more than the faults save).
constexpr off_t k_max_read_ahead = 16 << 20;

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

std::vector<gid_t> own_groups() {
    int n = ::getgroups(0, nullptr);
    std::vector<gid_t> groups(std::size_t(std::max(n, 0)));
    if (n > 0 && ::getgroups(n, groups.data()) < 0) groups.clear();
    return groups;
}

// Capabilities that bypass the kernel's permission checks on files.
constexpr std::uint64_t k_dac_caps = (1ull << 1) | (1ull << 2); // DAC_OVERRIDE, DAC_READ_SEARCH

// The calling thread's effective capabilities (low 64 bits).
std::uint64_t effective_caps() {
    struct {
        std::uint32_t version;
        int pid;
    } header{0x20080522, 0}; // _LINUX_CAPABILITY_VERSION_3
    struct {
        std::uint32_t effective, permitted, inheritable;
    } data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) return ~0ull; // unknown: assume the worst
    return std::uint64_t(data[1].effective) << 32 | data[0].effective;
}

// openat2 beneath `root`, on the same mount only: a mount stacked inside the tree (another
// user's FUSE filesystem that never answers) is not entered.
cachecore::util::UniqueFd open_here(int root, const std::string& path, int flags) {
    open_how how{};
    how.flags = std::uint64_t(flags | O_CLOEXEC | O_NOFOLLOW);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    long fd = ::syscall(SYS_openat2, root, path.empty() ? "." : path.c_str(), &how, sizeof how);
    return cachecore::util::UniqueFd{fd < 0 ? -1 : int(fd)};
}

// Replaces every descriptor of a copied file table but `keep` by /dev/null, number for number,
// and fills the next k_reserved_fds numbers the same way. The copies go (/dev/fuse above all);
// standard input and output too: the table was copied before the daemon detached from its
// caller's, and a pipe kept open here would hold `$(pycachefs mount ...)` forever. The numbers
// stay taken so that the lookers' own descriptors never share a number the daemon's table uses
// now or soon after: ThreadSanitizer keys descriptors by number per process, and a looker's
// close of the number /dev/fuse has in the daemon's table would cut its view of the ordering
// between a reply and the next request (a false race on every inode handed to the kernel).
constexpr int k_reserved_fds = 256;

void forget_copied_fds(int keep) {
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    int highest = -1;
    if (DIR* d = ::opendir("/proc/thread-self/fd"); d && null >= 0) {
        const int own = ::dirfd(d);
        while (const dirent* e = ::readdir(d)) {
            char* end = nullptr;
            const long fd = std::strtol(e->d_name, &end, 10);
            if (end != e->d_name && *end == '\0' && fd != own) highest = std::max(highest, int(fd));
        }
        ::closedir(d);
    }
    if (highest < 0) {
        // No listing: close everything instead (the numbers are then free to collide).
        if (keep > 0) ::close_range(0, unsigned(keep - 1), 0);
        ::close_range(unsigned(keep + 1), ~0u, 0);
        return;
    }
    for (int fd = 0; fd <= highest + k_reserved_fds; ++fd) {
        if (fd == keep || fd == null) continue;
        if (::dup3(null, fd, O_CLOEXEC) < 0 && errno == EBADF) break; // beyond RLIMIT_NOFILE
    }
}

} // namespace

cachecore::util::UniqueFd LookAhead::open_requester(pid_t tid) {
    // A thread pidfd (Linux 6.9+) follows exactly that thread; a process pidfd does when the
    // thread leads its process (pidfd_open refuses any other thread).
    long fd = ::syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
    if (fd < 0) fd = ::syscall(SYS_pidfd_open, tid, 0);
    return cachecore::util::UniqueFd{fd < 0 ? -1 : int(fd)};
}

LookAhead::LookAhead(std::string mountpoint, const std::atomic<std::uint64_t>* own_requests)
    : m_mountpoint(std::move(mountpoint)), m_own_requests(own_requests), m_root(::geteuid() == 0) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return;
    m_send = cachecore::util::UniqueFd(sv[0]);
    m_receive = sv[1];
    m_thread = std::thread([this] { run(); });
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_started; });
    // The thread has its copy; this table's is not needed. Its number stays taken here (by
    // /dev/null) so that no descriptor of this table, opened and closed while the lookers use
    // theirs, ever has the same number (sanitizers track descriptors by number, per process).
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0 && ::dup3(null, m_receive, O_CLOEXEC) == m_receive) {
        m_receive_placeholder = cachecore::util::UniqueFd(m_receive);
    } else {
        ::close(m_receive);
    }
    if (null >= 0) ::close(null);
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
    if (m_thread.joinable()) m_thread.join();
}

bool LookAhead::is_own(pid_t tid) const {
    if (tid == 0) return false;
    for (const auto& own : m_tids)
        if (own.load(std::memory_order_relaxed) == tid) return true;
    return false;
}

bool LookAhead::post(Requester who, cachecore::util::UniqueFd pidfd, std::string dir,
                     std::vector<std::string> names) {
    if (names.empty()) return false;
    return enqueue(who, std::move(pidfd), std::move(dir), std::move(names), false) != 0;
}

bool LookAhead::post_tree(Requester who, cachecore::util::UniqueFd pidfd, std::string dir,
                          std::vector<std::string> names, std::size_t limit) {
    if (names.empty() || limit == 0) return false;
    if (names.size() > limit) names.resize(limit);
    return enqueue(who, std::move(pidfd), std::move(dir), std::move(names), false, limit) != 0;
}

std::uint64_t LookAhead::open_stream(Requester& who, cachecore::util::UniqueFd pidfd) {
    return enqueue(who, std::move(pidfd), {}, {}, true);
}

bool LookAhead::extend(std::uint64_t stream, std::vector<std::string> names, bool last) {
    {
        std::lock_guard lock(m_mutex);
        auto it = std::find_if(m_jobs.begin(), m_jobs.end(),
                               [&](const auto& job) { return job->id == stream; });
        if (it == m_jobs.end() || m_stopping) return false;
        Job& job = **it;
        std::size_t room = k_max_stream_names - std::min(k_max_stream_names, job.names.size());
        if (names.size() > room) {
            names.resize(room);
            last = true;
        }
        for (auto& name : names) job.names.push_back(std::move(name));
        job.open = !last;
        job.posted = std::chrono::steady_clock::now();
    }
    m_cv.notify_all();
    return true;
}

std::uint64_t LookAhead::enqueue(Requester& who, cachecore::util::UniqueFd pidfd, std::string dir,
                                 std::vector<std::string> names, bool stream,
                                 std::size_t tree_limit) {
    if (!pidfd) return 0;
    {
        std::lock_guard lock(m_mutex);
        if (m_stopping) return 0;
    }
    // The status read after the pidfd was opened, and the thread still alive after the read:
    // it is the status of the thread that asked, not of one that took its number since.
    auto status = read_thread_status(who.pid);
    if (!status || exited(pidfd.get())) return 0;
    // The identity the request was made with (the thread may have changed it since).
    if (status->fsuid != who.uid || status->fsgid != who.gid) return 0;
    // A root importer that has given up the right to bypass permission checks keeps it given
    // up: this thread would regain it with fsuid 0.
    if (who.uid == 0 && (status->cap_effective & k_dac_caps) != k_dac_caps) return 0;
    who.groups = std::move(status->groups);
    // Without the right to change identity only the daemon's own user is looked ahead for, and
    // only with exactly the daemon's groups (the daemon's checks then see what the importer is).
    if (!m_root) {
        if (who.uid != ::geteuid() || who.gid != ::getegid()) return 0;
        auto mine = own_groups();
        auto theirs = who.groups;
        std::sort(mine.begin(), mine.end());
        std::sort(theirs.begin(), theirs.end());
        if (mine != theirs) return 0;
    }
    auto job = std::make_shared<Job>();
    job->who = who;
    job->stream = stream;
    job->open = stream;
    job->tree_limit = tree_limit;
    job->dir = dir.empty() ? std::string() : dir + "/";
    job->names = std::move(names);
    job->posted = std::chrono::steady_clock::now();
    std::uint64_t id = 0;
    {
        std::lock_guard lock(m_mutex);
        if (!m_usable || m_stopping) return 0;
        job->id = m_next_id++;
        // The pidfd goes to the thread's own table; the message is queued before the job is
        // visible, so the thread finds it when it takes the job.
        char control[CMSG_SPACE(sizeof(int))] = {};
        iovec iov{&job->id, sizeof job->id};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        const int fd = pidfd.get();
        std::memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
        if (::sendmsg(m_send.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL) != ssize_t(sizeof job->id))
            return 0;
        if (m_jobs.size() >= k_max_jobs) {
            m_dropped += m_jobs.front()->names.size() - m_jobs.front()->next;
            m_jobs.erase(m_jobs.begin());
        }
        id = job->id;
        m_jobs.push_back(std::move(job));
    }
    ++m_posted;
    m_cv.notify_all();
    return id;
}

bool LookAhead::look_up(const std::string& path, MountId& mount,
                        std::vector<std::string>* subdirs) {
    // The mount is held only for the moment of a lookup (a held descriptor would make every
    // unmount fail as busy). The walk stays beneath the mount point and on its mount: a symlink
    // in the tree that leads elsewhere (absolute, or `..` above the top) ends it, and so does a
    // mount inside the tree, so nothing else is touched on anybody's behalf. A pyc that is a
    // symlink has its text read, which the kernel keeps, and is not followed (the importer's
    // own open of the file costs no round trip). A name ending in '/' is a directory to list:
    // the kernel keeps the listing (and the entries READDIRPLUS brings), and the importer's own
    // listing is then served from it. A name ending in '\0' is a file to read into the page
    // cache (an extension module: dlopen maps it, and each page fault on a fresh mount would
    // otherwise wait for a READ).
    cachecore::util::UniqueFd root(::open(m_mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return false;
    struct statx sx {};
    // AT_STATX_DONT_SYNC: the mount id comes from the VFS, no request needed.
    if (::statx(root.get(), "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID, &sx) != 0 ||
        !(sx.stx_mask & STATX_MNT_ID))
        return false;
    if (!mount.known) {
        mount = MountId{sx.stx_mnt_id, true};
    } else if (mount.id != sx.stx_mnt_id) {
        return false; // unmounted (lazily) and something else is there now
    }
    if (!path.empty() && path.back() == '/') {
        auto dir = open_here(root.get(), path.substr(0, path.size() - 1), O_RDONLY | O_DIRECTORY);
        if (!dir) return false;
        alignas(8) char buf[16384];
        for (long n; (n = ::syscall(SYS_getdents64, dir.get(), buf, sizeof buf)) > 0;) {
            if (!subdirs) continue;
            // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, then the name.
            for (long at = 0; at + 19 < n;) {
                std::uint16_t reclen;
                std::memcpy(&reclen, buf + at + 16, sizeof reclen);
                const std::string_view name(buf + at + 19);
                if (reclen == 0) break;
                if (static_cast<unsigned char>(buf[at + 18]) == DT_DIR && name != "." &&
                    name != "..")
                    subdirs->emplace_back(name);
                at += reclen;
            }
        }
        return true;
    }
    if (!path.empty() && path.back() == '\0') {
        // Reads ahead without waiting: the kernel sends the READs in the background and the
        // importer's own read (dlopen's mmap) finds the pages, or waits for them in flight.
        auto file = open_here(root.get(), path.substr(0, path.size() - 1), O_RDONLY | O_NONBLOCK);
        struct stat st;
        if (!file || ::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
        if (st.st_size <= 0 || st.st_size > k_max_read_ahead) return true;
        // One window per call: the kernel caps a readahead() at the device's readahead size.
        constexpr off_t k_window = 128 << 10;
        for (off_t off = 0; off < st.st_size; off += k_window) {
            if (::readahead(file.get(), off, std::size_t(k_window)) != 0) return true;
        }
        ++m_files_read;
        m_bytes_read += std::uint64_t(st.st_size);
        return true;
    }
    auto fd = open_here(root.get(), path, O_PATH);
    if (!fd) return false;
    char text[PATH_MAX];
    (void)::readlinkat(fd.get(), "", text, sizeof text); // EINVAL when not a symlink
    return true;
}

bool LookAhead::exited(int pidfd) {
    if (pidfd < 0) return true;
    pollfd p{pidfd, POLLIN, 0};
    return ::poll(&p, 1, 0) != 0; // readable, or an error: gone
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
    // A non-root fsuid must have cleared the capabilities that bypass permission checks (it
    // does not under SECBIT_NO_SETUID_FIXUP).
    if (who.uid != 0 && (effective_caps() & k_dac_caps)) return false;
    taken = who;
    return true;
}

std::shared_ptr<LookAhead::Job> LookAhead::pick() {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = m_jobs.begin(); it != m_jobs.end();) {
        Job& job = **it;
        const bool stale = now - job.posted > k_max_job_age;
        if (stale || (!job.pending() && !job.open && !job.in_flight)) {
            m_dropped += job.names.size() - job.next;
            it = m_jobs.erase(it);
        } else {
            ++it;
        }
    }
    for (auto it = m_jobs.rbegin(); it != m_jobs.rend(); ++it)
        if ((*it)->stream && (*it)->pending()) return *it;
    for (auto it = m_jobs.rbegin(); it != m_jobs.rend(); ++it)
        if ((*it)->pending()) return *it;
    return nullptr; // only open streams waiting for names
}

void LookAhead::run() {
    m_tids[0] = pid_t(::syscall(SYS_gettid));
    pthread_setname_np(pthread_self(), "pcfs-lookahead"); // for top -H, perf, /proc
    // A file table of its own with nothing of the daemon's in it but its end of the socket pair.
    const int receive = m_receive;
    bool usable = ::unshare(CLONE_FILES) == 0;
    if (usable) forget_copied_fds(receive);
    {
        std::lock_guard lock(m_mutex);
        m_started = true;
        m_usable = usable;
    }
    m_cv.notify_all();
    if (!usable) return;

    // The other lookers are started from here, after the unshare: they share this table, and
    // only this one.
    Pidfds pidfds{receive, {}, {}};
    std::vector<std::thread> others;
    // One per CPU: interleaved A/B runs (11 rounds, fresh mounts, 2 CPUs) with 1 / 2 / 3
    // lookers: `import sympy` 281 / 253 / 278 ms, the stdlib mix 106 / 101 / 113 ms. Beyond one
    // per CPU they take the importer's.
    const std::size_t n_lookers =
        std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, k_max_lookers);
    for (std::size_t i = 1; i < n_lookers; ++i) {
        try {
            others.emplace_back([this, i, &pidfds] {
                m_tids[i] = pid_t(::syscall(SYS_gettid));
                pthread_setname_np(pthread_self(), "pcfs-lookahead");
                look(pidfds);
            });
        } catch (const std::system_error&) {
            break; // fewer lookers
        }
    }
    look(pidfds);
    for (auto& t : others) t.join();
    for (const auto& [id, fd] : pidfds.by_job) ::close(fd);
    // This thread's table (the socket end) goes with the thread.
}

bool LookAhead::Pidfds::exited(std::uint64_t job) {
    std::lock_guard lock(mutex);
    receive();
    auto it = by_job.find(job);
    return it == by_job.end() || LookAhead::exited(it->second);
}

void LookAhead::Pidfds::receive() {
    for (;;) {
        std::uint64_t id = 0;
        char control[CMSG_SPACE(sizeof(int))] = {};
        iovec iov{&id, sizeof id};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        if (::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) <= 0) return;
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        if (cmsg && cmsg->cmsg_type == SCM_RIGHTS) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
            by_job[id] = fd;
        }
    }
}

void LookAhead::Pidfds::forget_gone(const std::vector<std::shared_ptr<Job>>& jobs) {
    std::lock_guard lock(mutex);
    for (auto it = by_job.begin(); it != by_job.end();) {
        bool live = std::any_of(jobs.begin(), jobs.end(),
                                [&](const auto& job) { return job->id == it->first; });
        if (live) {
            ++it;
        } else {
            ::close(it->second);
            it = by_job.erase(it);
        }
    }
}

void LookAhead::look(Pidfds& pidfds) {
    Identity identity;
    MountId mount;
    std::unique_lock lock(m_mutex);
    for (;;) {
        pidfds.forget_gone(m_jobs);
        std::shared_ptr<Job> job;
        m_cv.wait(lock, [&] { return m_stopping || (job = pick()); });
        if (m_stopping) break;
        const std::string path = job->dir + job->names[job->next++];
        ++m_active;
        ++job->in_flight;
        lock.unlock();
        bool usable_now = !pidfds.exited(job->id) && identity.take(job->who, m_root);
        bool cached = false;
        const bool expand = job->tree_limit && path.back() == '/';
        std::vector<std::string> subdirs;
        if (usable_now) {
            ++m_lookups;
            const std::uint64_t before = m_own_requests ? m_own_requests->load() : 0;
            if (look_up(path, mount, expand ? &subdirs : nullptr)) ++m_found;
            cached = m_own_requests && m_own_requests->load() == before;
        }
        lock.lock();
        --m_active;
        --job->in_flight;
        if (!subdirs.empty() && job->names.size() < job->tree_limit) {
            // Depth first: they go before whatever comes after this listing (another looker may
            // have taken the next name meanwhile).
            std::sort(subdirs.begin(), subdirs.end());
            const std::string listed = path.substr(job->dir.size());
            subdirs.resize(std::min(subdirs.size(), job->tree_limit - job->names.size()));
            for (auto& sub : subdirs) sub = listed + sub + "/";
            job->names.insert(job->names.begin() + std::ptrdiff_t(job->next),
                              std::make_move_iterator(subdirs.begin()),
                              std::make_move_iterator(subdirs.end()));
            m_cv.notify_all();
        }
        if (job->stream) {
            job->all_cached = cached ? job->all_cached + 1 : 0;
            if (job->all_cached >= k_max_all_cached) {
                auto it = std::find(m_jobs.begin(), m_jobs.end(), job);
                if (it != m_jobs.end()) {
                    m_dropped += job->names.size() - job->next;
                    m_jobs.erase(it); // its walk ends at its next extend()
                }
            }
        }
        if (!usable_now) {
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

std::shared_ptr<void> LookAhead::preparing() {
    m_preparing.fetch_add(1);
    return {this, [](LookAhead* self) { self->m_preparing.fetch_sub(1); }};
}

nlohmann::json LookAhead::stats() const {
    std::size_t waiting = m_preparing.load();
    {
        std::lock_guard lock(m_mutex);
        waiting += m_active;
        // A stream still being extended counts as one: its walk is not done.
        for (const auto& job : m_jobs) waiting += job->names.size() - job->next + job->open;
    }
    return {{"jobs", m_posted.load()},
            {"lookups", m_lookups.load()},
            {"found", m_found.load()},
            {"files_read", m_files_read.load()},
            {"bytes_read", m_bytes_read.load()},
            {"dropped", m_dropped.load()},
            {"waiting", waiting}};
}

} // namespace fs::overlay
