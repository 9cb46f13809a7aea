#pragma once

#include "cachecore/util/unique_fd.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace cachecore::python {

// The environment every interpreter we start gets: nothing inherited (no PYTHON* variables, no
// locale surprises), so results never depend on who started the daemon.
std::vector<std::string> minimal_environment();

// A child process with pipes on its stdin and stdout, stderr on /dev/null, cwd "/", every other
// fd closed, in its own process group, and SIGKILLed when the thread that spawned it dies
// (PR_SET_PDEATHSIG fires on the exit of the spawning *thread*, so long-lived children must be
// spawned from threads that live as long as their owner). The destructor kills and reaps.
class ChildProcess {
public:
    static std::optional<ChildProcess> spawn(const std::vector<std::string>& argv,
                                             const std::vector<std::string>& env,
                                             std::string* error);
    ChildProcess(ChildProcess&& other) noexcept;
    ChildProcess& operator=(ChildProcess&& other) noexcept;
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ~ChildProcess();

    pid_t pid() const { return m_pid; }
    // Parent ends, non-blocking.
    int stdin_fd() const { return m_stdin.get(); }
    int stdout_fd() const { return m_stdout.get(); }
    void close_stdin() { m_stdin.reset(); }

    // Never reaps: while a ChildProcess lives its pid cannot be recycled, so other threads may
    // safely kill(pid) it (the pool's destructor and tests do).
    bool has_exited();
    void kill(); // SIGKILL without reaping
    void kill_and_reap();
    // Waits up to `timeout` for exit, then reaps (killing it first when the time is up).
    // Returns the wait status, or -1 when it had to be killed.
    int wait_for(std::chrono::milliseconds timeout);

private:
    ChildProcess() = default;
    void reap_blocking();

    pid_t m_pid = -1;
    bool m_reaped = true;
    int m_status = -1;
    util::UniqueFd m_stdin;
    util::UniqueFd m_stdout;
};

enum class IoStatus { Ok, Eof, Broken, TimedOut, Error };

// Non-blocking pipe I/O against a deadline, EINTR-safe. write_all never raises SIGPIPE: the
// calling thread's SIGPIPE is blocked around the write and a pending one is consumed, so the
// process-wide disposition is left alone.
IoStatus write_all(int fd, std::string_view data, std::chrono::steady_clock::time_point deadline);
IoStatus read_exact(int fd, char* out, std::size_t size,
                    std::chrono::steady_clock::time_point deadline);
// Appends to `out` until EOF (Ok) or `limit` bytes (Error).
IoStatus read_to_eof(int fd, std::string& out, std::size_t limit,
                     std::chrono::steady_clock::time_point deadline);

} // namespace cachecore::python
