#include "fs/cli/commands.hpp"
#include "fs/cli/mount_stats.hpp"
#include "fs/cli/unmount.hpp"

#include <cstdio>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace fs::cli {

int run_unmount(const std::string& mountpoint, bool lazy, double wait_seconds) {
    // Learn the daemon's pid first so that we can wait for it to finish its store writes. Asked
    // through the mount, so asked by a child: a hung daemon would hang the question (over FUSE
    // io_uring even uninterruptibly, the request being in the daemon's ring at once), and the
    // unmount must go ahead then, without waiting for that daemon. This process is still
    // single-threaded here, so the child may run ordinary code.
    pid_t pid = 0;
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) == 0) {
        pid_t child = ::fork();
        if (child == 0) {
            int null = ::open("/dev/null", O_RDWR);
            for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd); // never hold the caller's pipes
            pid_t found = 0;
            if (auto stats = read_mount_stats(mountpoint, nullptr)) {
                try {
                    found = nlohmann::json::parse(*stats).value("pid", 0);
                } catch (const std::exception&) {
                }
            }
            (void)!::write(pipe_fds[1], &found, sizeof found);
            ::_exit(0);
        }
        ::close(pipe_fds[1]);
        pollfd p{pipe_fds[0], POLLIN, 0};
        bool answered = child > 0 && ::poll(&p, 1, 2000) > 0;
        if (answered && ::read(pipe_fds[0], &pid, sizeof pid) != ssize_t(sizeof pid)) pid = 0;
        ::close(pipe_fds[0]);
        // A child that answered exits at once; one still waiting on the mount is left behind (it
        // ends with the daemon or its connection).
        if (answered) ::waitpid(child, nullptr, 0);
    }
    if (auto err = unmount_path(mountpoint, lazy); !err.empty()) {
        std::fprintf(stderr, "pycachefs: %s\n", err.c_str());
        return 1;
    }
    if (pid > 0) {
        timespec start;
        ::clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
            if (::kill(pid, 0) < 0 && errno == ESRCH) break;
            timespec now;
            ::clock_gettime(CLOCK_MONOTONIC, &now);
            double elapsed =
                double(now.tv_sec - start.tv_sec) + double(now.tv_nsec - start.tv_nsec) / 1e9;
            if (elapsed > wait_seconds) {
                if (!lazy)
                    std::fprintf(stderr, "pycachefs: daemon %d still running after unmount\n",
                                 int(pid));
                break;
            }
            timespec pause{0, 10'000'000};
            ::nanosleep(&pause, nullptr);
        }
    }
    return 0;
}

} // namespace fs::cli
