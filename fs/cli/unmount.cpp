#include "fs/cli/unmount.hpp"

#include <cerrno>
#include <cstring>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace fs::cli {

std::string unmount_path(const std::string& mountpoint, bool lazy) {
    if (::geteuid() == 0) {
        if (::umount2(mountpoint.c_str(), lazy ? MNT_DETACH : 0) == 0) return {};
        int err = errno;
        if (err == EBUSY) return mountpoint + " is busy (use --lazy to detach it now)";
        if (err == EINVAL) return mountpoint + " is not a mount point";
        return mountpoint + ": " + std::strerror(err);
    }
    std::vector<const char*> argv{"fusermount3", "-u", "-q"};
    if (lazy) argv.push_back("-z");
    argv.push_back("--");
    argv.push_back(mountpoint.c_str());
    argv.push_back(nullptr);
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

} // namespace fs::cli
