#include "fs/cli/daemon.hpp"

#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace fs::cli {

void DaemonHandshake::detach() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) {
        std::perror("pycachefs: pipe");
        std::exit(1);
    }
    pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("pycachefs: fork");
        std::exit(1);
    }
    if (pid > 0) {
        ::close(fds[1]);
        std::string message;
        char buf[512];
        ssize_t n;
        while ((n = ::read(fds[0], buf, sizeof buf)) != 0) {
            if (n < 0) {
                if (errno == EINTR) continue;
                break;
            }
            message.append(buf, std::size_t(n));
        }
        if (message == "ok") std::_Exit(0);
        if (message.empty()) {
            int status = 0;
            ::waitpid(pid, &status, WNOHANG);
            message = "the daemon exited before the mount was live (run with -f to see why)";
        }
        std::fprintf(stderr, "pycachefs: %s\n", message.c_str());
        std::_Exit(1);
    }
    ::close(fds[0]);
    m_fd = fds[1];
    ::setsid();
}

void DaemonHandshake::report_ready() {
    if (m_fd < 0) return;
    (void)!::write(m_fd, "ok", 2);
    ::close(m_fd);
    m_fd = -1;
    // Nobody reads the terminal any more; the log goes to --log-file or syslog.
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
        ::dup2(null, 2);
        if (null > 2) ::close(null);
    }
}

void DaemonHandshake::report_failure(const std::string& why) {
    if (m_fd < 0) return;
    (void)!::write(m_fd, why.data(), why.size());
    ::close(m_fd);
    m_fd = -1;
}

} // namespace fs::cli
