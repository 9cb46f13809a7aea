#include "fs/cli/commands.hpp"
#include "fs/cli/mount_stats.hpp"
#include "fs/cli/unmount.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <time.h>

namespace fs::cli {

int run_unmount(const std::string& mountpoint, bool lazy, double wait_seconds) {
    // Learn the daemon's pid first so that we can wait for it to finish its store writes.
    pid_t pid = 0;
    if (auto stats = read_mount_stats(mountpoint, nullptr)) {
        try {
            pid = nlohmann::json::parse(*stats).value("pid", 0);
        } catch (const std::exception&) {
        }
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
