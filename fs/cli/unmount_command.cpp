#include "fs/cli/commands.hpp"
#include "fs/cli/mount_stats.hpp"
#include "fs/cli/unmount.hpp"

#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <thread>
#include <time.h>

namespace fs::cli {

int run_unmount(const std::string& mountpoint, bool lazy, double wait_seconds) {
    // Learn the daemon's pid first so that we can wait for it to finish its store writes. Asked
    // through the mount, so it is asked aside: a hung daemon would hang the question, and the
    // unmount must go ahead then (without waiting for that daemon).
    pid_t pid = 0;
    auto answer = std::make_shared<std::promise<pid_t>>();
    auto future = answer->get_future();
    std::thread([answer, mountpoint] {
        pid_t found = 0;
        if (auto stats = read_mount_stats(mountpoint, nullptr)) {
            try {
                found = nlohmann::json::parse(*stats).value("pid", 0);
            } catch (const std::exception&) {
            }
        }
        answer->set_value(found);
    }).detach();
    if (future.wait_for(std::chrono::seconds(2)) == std::future_status::ready) pid = future.get();
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
