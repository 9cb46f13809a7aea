#include "fs/overlay/change_watcher.hpp"

#include "cachecore/util/log.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/proc_path.hpp"

#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <set>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <vector>

namespace fs::overlay {
namespace {

constexpr std::uint32_t k_mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY |
                                 IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF |
                                 IN_ONLYDIR | IN_EXCL_UNLINK;

constexpr std::uint64_t k_fan_mask = FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO |
                                     FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_DELETE_SELF |
                                     FAN_MOVE_SELF | FAN_ONDIR;

// The identity fanotify reports for a directory: its file handle (type and bytes).
std::string handle_key(int fd) {
    struct {
        file_handle fh;
        unsigned char bytes[MAX_HANDLE_SZ];
    } h{};
    h.fh.handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    if (::name_to_handle_at(fd, "", &h.fh, &mount_id, AT_EMPTY_PATH) < 0) return {};
    std::string key(reinterpret_cast<const char*>(&h.fh.handle_type), sizeof h.fh.handle_type);
    key.append(reinterpret_cast<const char*>(h.fh.f_handle), h.fh.handle_bytes);
    return key;
}

} // namespace

ChangeWatcher::ChangeWatcher(OverlayFs& fs) : m_fs(fs) {
    m_wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    // fanotify watches the whole source filesystem with one mark (no per-directory limit), but
    // needs CAP_SYS_ADMIN; inotify watches each looked-up directory and works for everyone.
    const std::string& wanted = fs.m_config.watcher;
    if (wanted != "inotify")
        m_fanotify.reset(
            ::fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
                            O_RDONLY | O_CLOEXEC));
    if (m_fanotify && ::fanotify_mark(m_fanotify.get(), FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                                      k_fan_mask, AT_FDCWD, fs.m_config.source.c_str()) < 0) {
        LOG_INFO(std::string("fanotify mark refused (") + std::strerror(errno) +
                 "): watching directories with inotify");
        m_fanotify.reset();
    }
    if (!m_fanotify && wanted == "fanotify")
        LOG_WARN("fanotify is not permitted here (needs CAP_SYS_ADMIN): using inotify");
    if (m_fanotify) {
        m_thread = std::thread([this] { run(); });
        return;
    }
    m_inotify.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!m_inotify) {
        LOG_WARN(std::string("inotify unavailable (") + std::strerror(errno) +
                 "): changes beneath the mount show after the short kernel timeout");
        return;
    }
    m_thread = std::thread([this] { run(); });
}

ChangeWatcher::~ChangeWatcher() {
    stop();
}

void ChangeWatcher::stop() {
    if (m_stopping.exchange(true)) return;
    if (m_wake) {
        std::uint64_t one = 1;
        (void)!::write(m_wake.get(), &one, sizeof one);
    }
    if (m_thread.joinable()) m_thread.join();
}

int ChangeWatcher::watch(const Inode& dir) {
    if (m_fanotify) {
        std::string key = handle_key(dir.fd.get());
        if (key.empty()) return -1;
        std::lock_guard lock(m_mutex);
        int id = ++m_next_id;
        m_watches[id] = {dir.st_dev, dir.st_ino};
        m_handle_ids[key] = id;
        m_id_handles[id] = std::move(key);
        return id;
    }
    if (!m_inotify) return -1;
    int wd = ::inotify_add_watch(m_inotify.get(), ProcPath(dir.fd.get()).c_str(), k_mask);
    if (wd < 0) {
        if (!m_warned_limit.exchange(true))
            LOG_WARN(std::string("cannot watch more directories (") + std::strerror(errno) +
                     "; raise fs.inotify.max_user_watches): unwatched ones use short timeouts");
        return -1;
    }
    std::lock_guard lock(m_mutex);
    m_watches[wd] = {dir.st_dev, dir.st_ino};
    return wd;
}

void ChangeWatcher::unwatch(int wd) {
    {
        std::lock_guard lock(m_mutex);
        if (!m_watches.erase(wd)) return;
        if (m_fanotify) {
            if (auto it = m_id_handles.find(wd); it != m_id_handles.end()) {
                m_handle_ids.erase(it->second);
                m_id_handles.erase(it);
            }
            return;
        }
    }
    ::inotify_rm_watch(m_inotify.get(), wd);
}

void ChangeWatcher::reinvalidate(std::uint64_t parent, std::string name, std::uint64_t ino) {
    {
        std::lock_guard lock(m_mutex);
        m_reinvalidations.push_back({parent, std::move(name), ino});
    }
    std::uint64_t one = 1;
    (void)!::write(m_wake.get(), &one, sizeof one);
}

void ChangeWatcher::drain_reinvalidations() {
    std::vector<Reinvalidation> todo;
    {
        std::lock_guard lock(m_mutex);
        todo.swap(m_reinvalidations);
    }
    fuse_session* se = m_fs.m_session;
    m_fs.m_stats.reinvalidations += todo.size();
    for (const auto& r : todo) {
        if (r.ino) fuse_lowlevel_notify_inval_inode(se, r.ino, 0, 0);
        if (!r.name.empty())
            fuse_lowlevel_notify_inval_entry(se, r.parent, r.name.c_str(), r.name.size());
    }
}

std::string ChangeWatcher::describe() const {
    std::lock_guard lock(m_mutex);
    if (m_fanotify)
        return "fanotify (filesystem mark, " + std::to_string(m_watches.size()) + " directories)";
    return m_inotify ? "inotify (" + std::to_string(m_watches.size()) + " directories)" : "none";
}

void ChangeWatcher::run() {
    pthread_setname_np(pthread_self(), "pcfs-watcher"); // for top -H, perf, /proc
    alignas(inotify_event) char buf[64 * 1024];
    while (!m_stopping) {
        const int events_fd = m_fanotify ? m_fanotify.get() : m_inotify.get();
        pollfd fds[2] = {{events_fd, POLLIN, 0}, {m_wake.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            LOG_ERROR(std::string("watcher poll failed: ") + std::strerror(errno));
            return;
        }
        if (m_stopping) return;
        if (fds[1].revents) {
            std::uint64_t count;
            (void)!::read(m_wake.get(), &count, sizeof count);
            drain_reinvalidations();
        }
        if (!fds[0].revents) continue;

        // Drain everything available, then handle each (directory, name) once.
        std::set<std::pair<int, std::string>> changes;
        std::set<int> self_changes, lost;
        bool overflow = false;
        if (m_fanotify) read_fanotify(changes, self_changes, overflow);
        for (; !m_fanotify;) {
            ssize_t n = ::read(m_inotify.get(), buf, sizeof buf);
            if (n <= 0) break;
            for (char* p = buf; p < buf + n;) {
                auto* ev = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + ev->len;
                if (ev->mask & IN_Q_OVERFLOW)
                    overflow = true;
                else if (ev->mask & IN_IGNORED)
                    lost.insert(ev->wd);
                else if (ev->len > 0)
                    changes.emplace(ev->wd, ev->name);
                else
                    self_changes.insert(ev->wd);
            }
        }
        // A fanotify filesystem mark also reports the rest of the filesystem (our own store
        // commits, logs): a batch that touches no watched directory must not disturb replies.
        if (!overflow && changes.empty() && self_changes.empty() && lost.empty()) continue;
        // Every reply built from now on may predate what this batch invalidates.
        ++m_fs.m_change_epoch;
        auto resolve = [this](int wd) -> std::pair<dev_t, ino_t> {
            std::lock_guard lock(m_mutex);
            auto it = m_watches.find(wd);
            return it == m_watches.end() ? std::pair<dev_t, ino_t>{0, 0} : it->second;
        };
        auto with_dir = [&](int wd, auto&& fn) {
            auto [dev, ino] = resolve(wd);
            if (!ino) return;
            Inode* dir = m_fs.m_table.pin(dev, ino);
            if (!dir) return;
            fn(*dir);
            m_fs.m_table.unpin(*dir);
        };
        if (overflow) {
            LOG_WARN("change events were lost (queue overflow): invalidating everything");
            for (Inode* dir : m_fs.m_table.pin_all_dirs()) {
                m_fs.on_change(*dir, {}, true);
                m_fs.m_table.unpin(*dir);
            }
        }
        for (const auto& [wd, name] : changes) {
            with_dir(wd, [&](Inode& dir) { m_fs.on_change(dir, name, false); });
        }
        for (int wd : self_changes) {
            with_dir(wd, [&](Inode& dir) { m_fs.on_change(dir, {}, true); });
        }
        for (int wd : lost) {
            with_dir(wd, [&](Inode& dir) { m_fs.on_watch_lost(dir); });
            std::lock_guard lock(m_mutex);
            m_watches.erase(wd);
        }
    }
}

void ChangeWatcher::read_fanotify(std::set<std::pair<int, std::string>>& changes,
                                  std::set<int>& self_changes, bool& overflow) {
    alignas(fanotify_event_metadata) char buf[64 * 1024];
    for (;;) {
        ssize_t n = ::read(m_fanotify.get(), buf, sizeof buf);
        if (n <= 0) return;
        std::lock_guard lock(m_mutex); // m_handle_ids
        // Events are only 4-byte aligned after the first (DFID_NAME records are padded to 4)
        // while the metadata struct wants 8: copy each one out rather than dereference it in
        // place (UB; UBSan stops the daemon on it).
        std::size_t next = 0;
        while (std::size_t(n) - next >= FAN_EVENT_METADATA_LEN) {
            fanotify_event_metadata ev;
            std::memcpy(&ev, buf + next, sizeof ev);
            if (ev.event_len < FAN_EVENT_METADATA_LEN || ev.event_len > std::size_t(n) - next)
                break;
            char* const start = buf + next;
            next += ev.event_len;
            if (ev.mask & FAN_Q_OVERFLOW) {
                overflow = true;
                continue;
            }
            if (ev.fd >= 0) ::close(ev.fd); // not sent in FID mode; never leak one
            // Info records follow the metadata: the directory's handle, then the name.
            char* p = start + ev.metadata_len;
            char* end = start + ev.event_len;
            while (p + sizeof(fanotify_event_info_header) <= end) {
                auto* hdr = reinterpret_cast<fanotify_event_info_header*>(p);
                if (hdr->len == 0 || p + hdr->len > end) break;
                if (hdr->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME ||
                    hdr->info_type == FAN_EVENT_INFO_TYPE_DFID ||
                    hdr->info_type == FAN_EVENT_INFO_TYPE_FID) {
                    auto* info = reinterpret_cast<fanotify_event_info_fid*>(p);
                    auto* fh = reinterpret_cast<file_handle*>(info->handle);
                    std::string key(reinterpret_cast<const char*>(&fh->handle_type),
                                    sizeof fh->handle_type);
                    key.append(reinterpret_cast<const char*>(fh->f_handle), fh->handle_bytes);
                    auto it = m_handle_ids.find(key);
                    if (it != m_handle_ids.end()) {
                        const char* name =
                            reinterpret_cast<const char*>(fh->f_handle) + fh->handle_bytes;
                        bool named = hdr->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME &&
                                     name < p + hdr->len && *name && std::strcmp(name, ".") != 0;
                        if (named)
                            changes.emplace(it->second, name);
                        else
                            self_changes.insert(it->second);
                    }
                }
                p += hdr->len;
            }
        }
    }
}

} // namespace fs::overlay
