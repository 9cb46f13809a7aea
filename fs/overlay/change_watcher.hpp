#pragma once

#include "cachecore/util/unique_fd.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace fs::overlay {

class OverlayFs;
struct Inode;

// Watches every directory the kernel has looked up (fanotify or inotify) and turns changes made
// beneath the mount into kernel cache invalidations, from a thread of its own (never inside a
// request handler: a notification can wait on locks the kernel holds for that request). Worst-case
// delay: one batch (events are drained, deduplicated and handled at once).
class ChangeWatcher {
public:
    explicit ChangeWatcher(OverlayFs& fs);
    ~ChangeWatcher();
    ChangeWatcher(const ChangeWatcher&) = delete;
    ChangeWatcher& operator=(const ChangeWatcher&) = delete;

    // Returns the watch descriptor, or -1 (the caller then uses short kernel timeouts).
    int watch(const Inode& dir);
    void unwatch(int wd);
    void stop();

    // Drops a name and an inode from the kernel's caches once more, from the watcher thread: a
    // reply built before a change but delivered after that change's invalidation would otherwise
    // leave stale attributes or a stale negative entry behind. `ino` 0 = the name only.
    void reinvalidate(std::uint64_t parent, std::string name, std::uint64_t ino);
    std::string describe() const;

private:
    void run();
    void drain_reinvalidations();
    void read_fanotify(std::set<std::pair<int, std::string>>& changes, std::set<int>& self_changes,
                       bool& overflow);

    struct Reinvalidation {
        std::uint64_t parent;
        std::string name;
        std::uint64_t ino;
    };

    OverlayFs& m_fs;
    cachecore::util::UniqueFd m_fanotify; // one filesystem-wide mark, when permitted
    cachecore::util::UniqueFd m_inotify;  // otherwise: one watch per looked-up directory
    cachecore::util::UniqueFd m_wake;     // eventfd that ends run()
    mutable std::mutex m_mutex;
    std::map<int, std::pair<dev_t, ino_t>> m_watches; // watch id -> directory
    std::map<std::string, int> m_handle_ids;          // fanotify: directory handle -> watch id
    std::map<int, std::string> m_id_handles;
    int m_next_id = 0;
    std::vector<Reinvalidation> m_reinvalidations; // guarded by m_mutex
    std::atomic<bool> m_warned_limit{false};
    std::atomic<bool> m_stopping{false};
    std::thread m_thread;
};

} // namespace fs::overlay
