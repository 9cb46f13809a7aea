#include "cachecore/python/child_process.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace cachecore::python {
namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return 0;
    return int(std::min<long long>(left.count() + 1, 1 << 30));
}

// Waits until fd is ready for `events`. Returns false on timeout.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        int ms = remaining_ms(deadline);
        pollfd p{fd, events, 0};
        int r = ::poll(&p, 1, ms);
        if (r > 0) return true;
        if (r < 0 && errno != EINTR) return true; // the next read/write reports the error
        if (r == 0 && ms == 0) return false;
    }
}

bool set_nonblocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

// Only async-signal-safe calls from here on: the parent may be multi-threaded.
[[noreturn]] void child_after_fork(pid_t parent, int in_fd, int out_fd, int null_fd, int err_fd,
                                   char* const* argv, char* const* envp, int max_fd) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
        if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
    }
    int code = 0;
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) code = errno;
    if (::getppid() != parent) ::_exit(127); // the owner died before prctl took effect
    // Out of the terminal's process group: a Ctrl-C reaches the daemon, which then cleans up.
    ::setpgid(0, 0);

    // Move everything out of 0..3 first so the dup2 calls below cannot clobber each other.
    int in2 = ::fcntl(in_fd, F_DUPFD_CLOEXEC, 10);
    int out2 = ::fcntl(out_fd, F_DUPFD_CLOEXEC, 10);
    int null2 = ::fcntl(null_fd, F_DUPFD_CLOEXEC, 10);
    int err2 = ::fcntl(err_fd, F_DUPFD_CLOEXEC, 10);
    if (in2 < 0 || out2 < 0 || null2 < 0 || err2 < 0 || ::dup2(in2, 0) < 0 || ::dup2(out2, 1) < 0 ||
        ::dup2(null2, 2) < 0 || ::dup3(err2, 3, O_CLOEXEC) < 0) {
        code = errno;
    }
    if (code == 0 && ::chdir("/") != 0) code = errno;
    if (code == 0) {
        if (::syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
            for (int fd = 4; fd < max_fd; ++fd) ::close(fd);
        }
        ::execve(argv[0], argv, envp);
        code = errno;
    }
    ssize_t ignored = ::write(3, &code, sizeof code);
    (void)ignored;
    ::_exit(127);
}

} // namespace

std::vector<std::string> minimal_environment() {
    return {"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8", "LANG=C.UTF-8"};
}

std::optional<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv,
                                                const std::vector<std::string>& env,
                                                std::string* error) {
    auto fail = [&](const std::string& what) -> std::optional<ChildProcess> {
        if (error) *error = what + ": " + std::strerror(errno);
        return std::nullopt;
    };
    if (argv.empty()) {
        errno = EINVAL;
        return fail("spawn");
    }
    int in_pipe[2], out_pipe[2], err_pipe[2];
    if (::pipe2(in_pipe, O_CLOEXEC) != 0) return fail("pipe");
    util::UniqueFd in_r(in_pipe[0]), in_w(in_pipe[1]);
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return fail("pipe");
    util::UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) return fail("pipe");
    util::UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
    util::UniqueFd null_fd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    if (!null_fd) return fail("open /dev/null");
    if (!set_nonblocking(in_w.get()) || !set_nonblocking(out_r.get())) return fail("fcntl");

    // Everything the child needs is prepared before fork: no allocation after it.
    std::vector<char*> c_argv, c_env;
    for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
    c_argv.push_back(nullptr);
    for (const auto& e : env) c_env.push_back(const_cast<char*>(e.c_str()));
    c_env.push_back(nullptr);
    rlimit lim{};
    int max_fd = ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY
                     ? int(std::min<rlim_t>(lim.rlim_cur, 1 << 20))
                     : 65536;

    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) return fail("fork");
    if (pid == 0) {
        child_after_fork(parent, in_r.get(), out_w.get(), null_fd.get(), err_w.get(), c_argv.data(),
                         c_env.data(), max_fd);
    }
    ChildProcess child;
    child.m_pid = pid;
    child.m_reaped = false;
    child.m_stdin = std::move(in_w);
    child.m_stdout = std::move(out_r);
    err_w.reset();
    in_r.reset();
    out_w.reset();

    // The error pipe closes on a successful exec; otherwise it carries the child's errno.
    int code = 0;
    ssize_t n;
    do {
        n = ::read(err_r.get(), &code, sizeof code);
    } while (n < 0 && errno == EINTR);
    if (n == ssize_t(sizeof code)) {
        child.reap_blocking();
        errno = code;
        return fail("exec " + argv[0]);
    }
    return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : m_pid(std::exchange(other.m_pid, -1)), m_reaped(std::exchange(other.m_reaped, true)),
      m_status(other.m_status), m_stdin(std::move(other.m_stdin)),
      m_stdout(std::move(other.m_stdout)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        m_pid = std::exchange(other.m_pid, -1);
        m_reaped = std::exchange(other.m_reaped, true);
        m_status = other.m_status;
        m_stdin = std::move(other.m_stdin);
        m_stdout = std::move(other.m_stdout);
    }
    return *this;
}

ChildProcess::~ChildProcess() {
    kill_and_reap();
}

void ChildProcess::reap_blocking() {
    if (m_reaped) return;
    int status = 0;
    pid_t r;
    do {
        r = ::waitpid(m_pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    // ECHILD: somebody else (SIGCHLD=SIG_IGN) reaped it; nothing is left either way.
    m_status = r == m_pid ? status : -1;
    m_reaped = true;
}

bool ChildProcess::has_exited() {
    if (m_reaped) return true;
    siginfo_t info{};
    int r;
    do {
        r = ::waitid(P_PID, id_t(m_pid), &info, WEXITED | WNOHANG | WNOWAIT);
    } while (r < 0 && errno == EINTR);
    return r < 0 || info.si_pid != 0;
}

void ChildProcess::kill() {
    if (!m_reaped) ::kill(m_pid, SIGKILL);
}

void ChildProcess::kill_and_reap() {
    m_stdin.reset();
    m_stdout.reset();
    if (m_reaped) return;
    ::kill(m_pid, SIGKILL); // the pid cannot be recycled before we reap it
    reap_blocking();
}

int ChildProcess::wait_for(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (!has_exited()) {
        if (Clock::now() >= deadline) {
            kill_and_reap();
            return -1;
        }
        ::usleep(2000);
    }
    reap_blocking();
    return m_status;
}

IoStatus write_all(int fd, std::string_view data, Clock::time_point deadline) {
    sigset_t pipe_set, old_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    sigemptyset(&pending);
    ::sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);

    IoStatus status = IoStatus::Ok;
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n > 0) {
            data.remove_prefix(std::size_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            if (!wait_ready(fd, POLLOUT, deadline)) {
                status = IoStatus::TimedOut;
                break;
            }
            continue;
        }
        status = n < 0 && errno == EPIPE ? IoStatus::Broken : IoStatus::Error;
        break;
    }
    if (status == IoStatus::Broken && !was_pending) {
        timespec zero{0, 0};
        while (::sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
        }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
    return status;
}

IoStatus read_exact(int fd, char* out, std::size_t size, Clock::time_point deadline) {
    while (size > 0) {
        ssize_t n = ::read(fd, out, size);
        if (n > 0) {
            out += n;
            size -= std::size_t(n);
            continue;
        }
        if (n == 0) return IoStatus::Eof;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return IoStatus::Error;
        if (!wait_ready(fd, POLLIN, deadline)) return IoStatus::TimedOut;
    }
    return IoStatus::Ok;
}

IoStatus read_to_eof(int fd, std::string& out, std::size_t limit, Clock::time_point deadline) {
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            out.append(buf, std::size_t(n));
            if (out.size() > limit) return IoStatus::Error;
            continue;
        }
        if (n == 0) return IoStatus::Ok;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return IoStatus::Error;
        if (!wait_ready(fd, POLLIN, deadline)) return IoStatus::TimedOut;
    }
}

} // namespace cachecore::python
