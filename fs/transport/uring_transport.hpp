#pragma once

#include "fs/transport/ring_worker.hpp"

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

struct fuse_session;

namespace fs::transport {

// FUSE over io_uring (kernel 6.14+) driven beside Debian's libfuse 3.14, which predates it.
// libfuse still decodes requests and encodes replies; this class only moves them. It installs
// itself as the session's custom I/O: the INIT request arrives on /dev/fuse as usual, and if the
// kernel offers io_uring, the INIT reply is amended to accept it. Ring workers then register one
// entry each on every CPU's queue, and from then on requests arrive through the rings (FORGET
// and notifications keep using /dev/fuse, whose reader threads stay).
class UringTransport {
public:
    // Whether the kernel will offer io_uring to a new mount; `why` says what is missing.
    static bool kernel_allows(std::string& why);

    // Creates the rings (threads_per_queue workers per possible CPU) and installs the custom
    // I/O; call after fuse_session_mount and before the session loop. Throws std::system_error.
    UringTransport(fuse_session* session, unsigned threads_per_queue);
    ~UringTransport(); // stop()
    UringTransport(const UringTransport&) = delete;
    UringTransport& operator=(const UringTransport&) = delete;

    void stop();
    bool active() const { return m_active.load(); }
    nlohmann::json stats() const;

private:
    static ssize_t io_read(int fd, void* buf, std::size_t len, void* userdata);
    static ssize_t io_writev(int fd, iovec* iov, int count, void* userdata);
    void note_request(const void* buf, std::size_t size);
    ssize_t writev(int fd, iovec* iov, int count);
    ssize_t write_init_reply(int fd, iovec* iov, int count);

    unsigned m_queues;
    std::vector<std::unique_ptr<RingWorker>> m_workers;
    std::atomic<std::uint64_t> m_init_unique{0}; // the INIT request, when it offered io_uring
    std::atomic<bool> m_active{false};
};

} // namespace fs::transport
