#pragma once

#include "cachecore/util/unique_fd.hpp"
#include "fs/transport/uring_abi.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <liburing.h>
#include <mutex>
#include <sys/uio.h>
#include <thread>

struct fuse_session;

namespace fs::transport {

// An anonymous private mapping (buffers the kernel copies requests into and replies out of).
class Mapping {
public:
    Mapping() = default;
    explicit Mapping(std::size_t size); // throws std::system_error
    ~Mapping();
    Mapping(Mapping&& other) noexcept;
    Mapping& operator=(Mapping&& other) noexcept;
    char* data() const { return static_cast<char*>(m_addr); }
    std::size_t size() const { return m_size; }

private:
    void* m_addr = nullptr;
    std::size_t m_size = 0;
};

// One thread with its own io_uring holding one ring entry of FUSE queue `qid` (the queue of the
// CPU whose processes' requests it serves; the thread is pinned there, so a request wakes a
// thread on the requester's own CPU instead of a halted one). It fetches a request, runs it
// through libfuse on this thread, and commits the reply in the same submission that fetches the
// next request. One entry per thread: a handler that blocks (waiting on a compile) holds only its
// own entry, and the queue's other workers keep serving.
class RingWorker {
public:
    RingWorker(int fuse_fd, unsigned qid); // creates the io_uring; throws std::system_error
    ~RingWorker();                         // stop()
    RingWorker(const RingWorker&) = delete;
    RingWorker& operator=(const RingWorker&) = delete;

    // Before the kernel is told to use io_uring: buffers for requests of up to `payload` bytes.
    void allocate(std::size_t payload); // throws std::system_error
    // The thread waits for go() (the INIT reply enabled io_uring) or stop().
    void start(fuse_session* session);
    void go();
    void stop();

    // The reply to this worker's current request, from whatever thread produced it (libfuse's
    // writev hook). False when `unique` is not this worker's request.
    bool take_reply(std::uint64_t unique, const iovec* iov, int count, ssize_t& written);

    // The worker whose request this thread is running, if any (its reply is almost always next).
    static RingWorker* current();

    std::uint64_t served() const { return m_served.load(std::memory_order_relaxed); }

private:
    enum class Phase { Waiting, Go, Stop };
    void run();
    bool handle(const io_uring_cqe& cqe); // false: the entry is gone (unmount) or we stop
    void dispatch();
    void finish_request(); // commit now, or when the reply arrives from another thread
    void commit();
    void submit_register();
    void reply_error(int error);
    void write_error_header(std::uint64_t unique, int error); // a reply with no payload
    abi::RingHeader& header() const { return *reinterpret_cast<abi::RingHeader*>(m_header.data()); }
    io_uring_sqe* command_sqe(abi::Command command);
    void arm_wake();

    int m_fuse_fd;
    unsigned m_qid;
    fuse_session* m_session = nullptr;
    io_uring m_ring{};
    bool m_ring_ready = false;
    cachecore::util::UniqueFd m_wake; // eventfd: stop, or a reply made on another thread
    Mapping m_header;                 // abi::RingHeader, page-aligned
    Mapping m_area;                   // k_prefix bytes for the rebuilt headers, then the payload
    std::size_t m_payload = 0;
    iovec m_iov[2]{};

    std::mutex m_mutex; // the current request's reply state
    std::atomic<std::uint64_t> m_unique{0};
    std::uint64_t m_commit_id = 0;
    abi::Command m_last = abi::CmdRegister;
    bool m_replied = false;
    bool m_awaiting = false; // libfuse returned without replying; the reply comes from elsewhere

    std::mutex m_phase_mutex;
    std::condition_variable m_phase_cv;
    Phase m_phase = Phase::Waiting;
    std::atomic<std::uint64_t> m_served{0};
    std::thread m_thread;
};

} // namespace fs::transport
