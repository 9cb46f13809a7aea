// `pycachefs mount`: validate everything the user can get wrong, then detach and serve.
#include "cachecore/bytecode_cache.hpp"
#include "cachecore/python/interpreter.hpp"
#include "cachecore/store/store.hpp"
#include "cachecore/util/log.hpp"
#include "fs/cli/commands.hpp"
#include "fs/cli/daemon.hpp"
#include "fs/cli/interpreter_choice.hpp"
#include "fs/cli/mount_table.hpp"
#include "fs/cli/unmount.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/transport/uring_transport.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <pthread.h>
#include <set>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace fs::cli {
namespace {

using cachecore::python::Interpreter;

std::string absolute(const std::string& path) {
    std::error_code ec;
    auto p = std::filesystem::absolute(path, ec);
    return ec ? path : p.lexically_normal().string();
}

bool dir_is_empty(const std::string& path) {
    DIR* d = ::opendir(path.c_str());
    if (!d) return false;
    bool empty = true;
    while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
            empty = false;
            break;
        }
    }
    ::closedir(d);
    return empty;
}

// A FUSE mount whose daemon is gone answers ENOTCONN (the kernel may still have the root's
// attributes cached, so a stat alone can succeed).
bool is_dead_mount(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) < 0) return errno == ENOTCONN;
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno == ENOTCONN;
    ::close(fd);
    DIR* d = ::opendir(path.c_str());
    if (!d) return errno == ENOTCONN;
    errno = 0;
    bool dead = !::readdir(d) && errno == ENOTCONN;
    ::closedir(d);
    return dead;
}

// Whether `path` is itself the mount point of a pycachefs mount.
bool is_pycachefs_mount(const std::string& path) {
    for (const auto& type : mount_types_at(path))
        if (type == "fuse.pycachefs") return true;
    return false;
}

// A daemon that served over io_uring releases its connection a moment after it dies (the
// kernel tears the rings down asynchronously): until then its mount still looks alive.
bool dies_soon(const std::string& path) {
    for (int i = 0; i < 40; ++i) {
        if (is_dead_mount(path)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
}

// Returns an error message, or empty when the paths are usable.
std::string check_paths(MountOptions& o) {
    o.source = absolute(o.source);
    o.mountpoint = absolute(o.mountpoint);
    struct stat st;
    if (::stat(o.source.c_str(), &st) < 0)
        return "source '" + o.source + "': " + std::strerror(errno);
    if (!S_ISDIR(st.st_mode)) return "source '" + o.source + "' is not a directory";
    const bool ours = is_pycachefs_mount(o.mountpoint);
    const bool dead = ours ? dies_soon(o.mountpoint) : is_dead_mount(o.mountpoint);
    if (dead) {
        // A daemon died without unmounting: detach the dead mount and reuse the directory.
        if (auto err = unmount_path(o.mountpoint, true); !err.empty())
            return "mount point '" + o.mountpoint +
                   "' is a stale mount that cannot be detached: " + err;
    }
    if (::stat(o.mountpoint.c_str(), &st) < 0)
        return "mount point '" + o.mountpoint + "': " + std::strerror(errno) +
               " (create it with mkdir)";
    if (!S_ISDIR(st.st_mode)) return "mount point '" + o.mountpoint + "' is not a directory";
    if (ours && !dead)
        return "'" + o.mountpoint + "' is already a live pycachefs mount (pycachefs unmount " +
               o.mountpoint + " first)";
    if (!o.nonempty && !dir_is_empty(o.mountpoint))
        return "mount point '" + o.mountpoint +
               "' is not empty (use an empty directory, or -o nonempty)";
    int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0 && ::geteuid() == 0)
        return std::string("/dev/fuse is unusable: ") + std::strerror(errno) +
               " (load the fuse module; in a container pass --device /dev/fuse --cap-add "
               "SYS_ADMIN)";
    if (fd < 0 && ::access("/usr/bin/fusermount3", X_OK) != 0 &&
        ::access("/bin/fusermount3", X_OK) != 0)
        return "/dev/fuse is not accessible and fusermount3 is missing (apt-get install fuse3)";
    if (fd >= 0) ::close(fd);
    return {};
}

void raise_fd_limit() {
    // Every inode the kernel remembers holds an O_PATH descriptor.
    rlimit lim;
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &lim);
    }
}

// SIGTERM/SIGINT/SIGHUP are blocked in every thread and taken here: the answer is a lazy unmount,
// after which the kernel ends the session and the request loop returns.
class SignalThread {
public:
    explicit SignalThread(std::string mountpoint) : m_mountpoint(std::move(mountpoint)) {
        m_thread = std::thread([this] { run(); });
    }
    ~SignalThread() {
        m_done = true;
        ::pthread_kill(m_thread.native_handle(), SIGUSR1);
        m_thread.join();
    }

private:
    void run() {
        sigset_t set;
        sigemptyset(&set);
        for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set, s);
        for (;;) {
            int sig = 0;
            if (::sigwait(&set, &sig) != 0 || m_done) return;
            if (sig == SIGUSR1) continue;
            LOG_INFO(std::string("received ") + ::strsignal(sig) + ", unmounting " + m_mountpoint);
            if (auto err = unmount_path(m_mountpoint, true); !err.empty()) LOG_WARN(err);
        }
    }
    std::string m_mountpoint;
    std::atomic<bool> m_done{false};
    std::thread m_thread;
};

} // namespace

int run_mount(MountOptions o) {
    using cachecore::util::LogLevel;
    LogLevel level = o.debug ? LogLevel::Debug : LogLevel::Warning;
    if (!o.log_level.empty() && !cachecore::util::parse_log_level(o.log_level, level)) {
        std::fprintf(stderr, "pycachefs: invalid log level '%s' (debug, info, warning, error)\n",
                     o.log_level.c_str());
        return 2;
    }
    cachecore::util::log_set_level(level);

    if (auto err = check_paths(o); !err.empty()) {
        std::fprintf(stderr, "pycachefs: %s\n", err.c_str());
        return 1;
    }
    std::vector<Interpreter> served;
    std::vector<std::string> listed;
    if (auto err = choose_interpreters(o.pythons, served, listed); !err.empty()) {
        std::fprintf(stderr, "pycachefs: %s\n", err.c_str());
        return 1;
    }
    if (o.store.empty()) o.store = default_store_dir();
    o.store = absolute(o.store);
    if (!o.pid_file.empty()) o.pid_file = absolute(o.pid_file);
    if (!o.log_file.empty()) o.log_file = absolute(o.log_file);

    // Signals go to the signal thread only: block them before any thread exists.
    sigset_t blocked;
    sigemptyset(&blocked);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&blocked, s);
    ::pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    DaemonHandshake handshake;
    if (!o.foreground) handshake.detach(); // LMDB and threads must start after the fork
    auto fail = [&](const std::string& why) {
        if (handshake.detached())
            handshake.report_failure(why);
        else
            std::fprintf(stderr, "pycachefs: %s\n", why.c_str());
        return 1;
    };
    if (!o.log_file.empty()) {
        if (!cachecore::util::log_to_file(o.log_file))
            return fail("cannot open log file '" + o.log_file + "': " + std::strerror(errno));
    } else if (!o.foreground) {
        cachecore::util::log_to_syslog("pycachefs");
    }
    raise_fd_limit();

    int root = ::open(o.source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat root_st;
    if (root < 0 || ::fstat(root, &root_st) < 0)
        return fail("source '" + o.source + "': " + std::strerror(errno));
    cachecore::util::UniqueFd root_fd(root);

    std::unique_ptr<cachecore::store::Store> store;
    try {
        cachecore::store::StoreOptions so;
        so.dir = o.store;
        if (o.max_size) so.max_size = *o.max_size;
        store = std::make_unique<cachecore::store::Store>(so);
    } catch (const std::exception& e) {
        return fail(e.what());
    }
    cachecore::BytecodeCacheOptions co;
    co.pool.workers = o.workers;
    co.pool.timeout = std::chrono::seconds(o.compile_timeout_s);
    co.prefetch = o.compile_ahead != "off";
    cachecore::BytecodeCache cache(*store, co);

    std::string no_uring;
    const bool use_uring =
        o.io_uring != "off" && fs::transport::UringTransport::kernel_allows(no_uring);
    if (o.io_uring == "on" && !use_uring) return fail("--io-uring on: " + no_uring);

    overlay::OverlayConfig config;
    config.source = o.source;
    config.mountpoint = o.mountpoint;
    config.rw = o.rw;
    config.hide_real_pycache = o.hide_real_pycache;
    config.watcher = o.watcher;
    config.compile_ahead_imports = o.compile_ahead == "all" || o.compile_ahead == "imports";
    config.compile_ahead_package = o.compile_ahead == "all" || o.compile_ahead == "package";
    config.look_ahead = o.look_ahead;
    config.look_ahead_imports = o.look_ahead_imports;
    config.pyc_mode = o.pyc_mode;
    // Files can carry every source's owner only with CAP_CHOWN; without it, they belong to this
    // user, which is right only while no one else may use the mount.
    const bool allow_other = std::any_of(o.fuse_options.begin(), o.fuse_options.end(),
                                         [](const std::string& f) { return f == "allow_other"; });
    config.pyc_files_exact_owner = ::geteuid() == 0;
    if (o.pyc_links != "off" && (config.pyc_files_exact_owner || !allow_other)) {
        if (o.pyc_links != "auto") {
            config.pyc_files_base = o.pyc_links;
        } else if (::geteuid() == 0) {
            config.pyc_files_base = "/run/pycachefs";
            config.pyc_files_create_base = true;
            config.pyc_files_need_memory_fs = true;
        } else if (const char* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime && *runtime) {
            config.pyc_files_base = std::string(runtime) + "/pycachefs";
            config.pyc_files_create_base = true;
            config.pyc_files_need_memory_fs = true;
        }
    }
    config.interpreters = served;
    config.listed_tags = listed;
    overlay::OverlayFs filesystem(config, std::move(root_fd), root_st, cache);

    std::string kernel_opts = "default_permissions,fsname=" + o.source + ",subtype=pycachefs";
    kernel_opts += o.rw ? ",rw" : ",ro";
    for (const auto& f : o.fuse_options) kernel_opts += "," + f;
    std::vector<std::string> arg_storage{"pycachefs", "-o", kernel_opts};
    if (o.fuse_debug) arg_storage.push_back("-d");
    std::vector<char*> argv;
    for (auto& a : arg_storage) argv.push_back(a.data());
    fuse_args args = FUSE_ARGS_INIT(int(argv.size()), argv.data());
    const fuse_lowlevel_ops ops = overlay::OverlayFs::operations();
    fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &filesystem);
    fuse_opt_free_args(&args); // fuse_session_new's option parsing may have copied argv
    if (!se)
        return fail("invalid mount options '" + kernel_opts + "' (see libfuse's message above)");
    struct SessionGuard {
        fuse_session* se;
        bool mounted = false;
        ~SessionGuard() {
            if (mounted) fuse_session_unmount(se);
            fuse_session_destroy(se);
        }
    } guard{se};

    if (fuse_session_mount(se, o.mountpoint.c_str()) != 0)
        return fail("cannot mount on '" + o.mountpoint +
                    "' (FUSE refused; allow_other needs user_allow_other in /etc/fuse.conf)");
    guard.mounted = true;
    // Declared after the guard: the rings stop before the session unmounts.
    std::unique_ptr<fs::transport::UringTransport> uring;
    if (use_uring) {
        try {
            uring = std::make_unique<fs::transport::UringTransport>(se, 2);
            filesystem.set_transport_stats([&t = *uring] { return t.stats(); });
        } catch (const std::exception& e) {
            if (o.io_uring == "on") return fail(std::string("--io-uring on: ") + e.what());
            LOG_WARN(std::string("FUSE over io_uring not used: ") + e.what());
        }
    }
    SignalThread signals(o.mountpoint);
    filesystem.start(se);
    if (!o.pid_file.empty()) {
        std::ofstream(o.pid_file) << ::getpid() << "\n";
    }
    LOG_INFO("mounted " + o.source + " on " + o.mountpoint + " (store " + o.store + ")");
    if (handshake.detached()) {
        ::chdir("/");
        handshake.report_ready();
    }

    fuse_loop_config* loop = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(loop, 64);
    fuse_loop_cfg_set_idle_threads(loop, 8);
    int rc = fuse_session_loop_mt(se, loop);
    fuse_loop_cfg_destroy(loop);
    if (uring) uring->stop();

    filesystem.stop();
    cache.push_counters();
    store->flush();
    if (!o.pid_file.empty()) ::unlink(o.pid_file.c_str());
    LOG_INFO("unmounted " + o.mountpoint);
    return rc == 0 ? 0 : 1;
}

} // namespace fs::cli
