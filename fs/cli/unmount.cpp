#include "fs/cli/unmount.hpp"

#include "fs/cli/mount_table.hpp"

#include <cerrno>
#include <cstring>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace fs::cli {
namespace {

bool is_fuse_mount(const std::string& path) {
    auto types = mount_types_at(path); // the topmost mount there is the one unmounted
    return !types.empty() && (types.back() == "fuse" || types.back().rfind("fuse.", 0) == 0);
}

std::string run_fusermount(const std::vector<const char*>& argv, const std::string& mountpoint) {
    pid_t pid;
    if (::posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char**>(argv.data()),
                       environ) != 0)
        return "cannot run fusermount3 (install the fuse3 package)";
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
    return "fusermount3 could not unmount " + mountpoint + " (busy? not mounted? try --lazy)";
}

} // namespace

std::string unmount_path(const std::string& mountpoint, bool lazy) {
    if (::geteuid() == 0) {
        // The daemon's look-ahead holds the mount for the moment of a lookup, and stops once
        // the importer it works for has exited: a mount that stays busy for a second is busy.
        int err = 0;
        for (int attempt = 0; attempt < 50; ++attempt) {
            if (::umount2(mountpoint.c_str(), lazy ? MNT_DETACH : 0) == 0) return {};
            err = errno;
            if (err != EBUSY) break;
            ::usleep(20'000);
        }
        if (err == EBUSY) return mountpoint + " is busy (use --lazy to detach it now)";
        if (err == EINVAL) return mountpoint + " is not a mount point";
        return mountpoint + ": " + std::strerror(err);
    }
    std::vector<const char*> argv{"fusermount3", "-u", "-q"};
    if (lazy) argv.push_back("-z");
    argv.push_back("--");
    argv.push_back(mountpoint.c_str());
    argv.push_back(nullptr);
    for (int attempt = 0;; ++attempt) {
        std::string error = run_fusermount(argv, mountpoint);
        // fusermount3 does not say why it failed: a FUSE mount still there was busy.
        if (error.empty() || error.rfind("cannot run", 0) == 0 || attempt == 9 ||
            !is_fuse_mount(mountpoint))
            return error;
        ::usleep(100'000);
    }
}

} // namespace fs::cli
