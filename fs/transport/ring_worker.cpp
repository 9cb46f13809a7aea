#include "fs/transport/ring_worker.hpp"

#include "cachecore/util/log.hpp"

#include <cerrno>
#include <cstring>
#include <fuse_lowlevel.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <system_error>
#include <unistd.h>

namespace fs::transport {

namespace {

// The request is rebuilt in /dev/fuse layout (in header, op header, payload) right in front of
// the payload, so libfuse parses it without the payload being copied.
constexpr std::size_t k_prefix = 4096;
constexpr std::uint64_t k_entry_tag = 1;
constexpr std::uint64_t k_wake_tag = 2;

thread_local RingWorker* t_current = nullptr;

std::system_error sys_error(int err, const std::string& what) {
    return std::system_error(err, std::generic_category(), what);
}

} // namespace

Mapping::Mapping(std::size_t size) : m_size(size) {
    m_addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m_addr == MAP_FAILED) {
        m_addr = nullptr;
        throw sys_error(errno, "mmap of a ring buffer");
    }
}

Mapping::~Mapping() {
    if (m_addr) ::munmap(m_addr, m_size);
}

Mapping::Mapping(Mapping&& other) noexcept
    : m_addr(std::exchange(other.m_addr, nullptr)), m_size(std::exchange(other.m_size, 0)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
    if (this != &other) {
        if (m_addr) ::munmap(m_addr, m_size);
        m_addr = std::exchange(other.m_addr, nullptr);
        m_size = std::exchange(other.m_size, 0);
    }
    return *this;
}

RingWorker::RingWorker(int fuse_fd, unsigned qid) : m_fuse_fd(fuse_fd), m_qid(qid) {
    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128; // the FUSE command lives in the big SQE's command area
    if (int rc = io_uring_queue_init_params(4, &m_ring, &params); rc < 0)
        throw sys_error(-rc, "io_uring_setup");
    m_ring_ready = true;
    if (int rc = io_uring_register_files(&m_ring, &m_fuse_fd, 1); rc < 0)
        throw sys_error(-rc, "io_uring_register_files");
    m_wake.reset(::eventfd(0, EFD_CLOEXEC));
    if (!m_wake) throw sys_error(errno, "eventfd");
    m_header = Mapping(sizeof(abi::RingHeader));
}

RingWorker::~RingWorker() {
    stop();
    if (m_ring_ready) io_uring_queue_exit(&m_ring);
}

void RingWorker::allocate(std::size_t payload) {
    m_payload = payload;
    m_area = Mapping(k_prefix + payload);
    m_iov[0] = {m_header.data(), sizeof(abi::RingHeader)};
    m_iov[1] = {m_area.data() + k_prefix, payload};
}

void RingWorker::start(fuse_session* session) {
    m_session = session;
    m_thread = std::thread([this] { run(); });
}

void RingWorker::go() {
    std::lock_guard lock(m_phase_mutex);
    if (m_phase == Phase::Waiting) m_phase = Phase::Go;
    m_phase_cv.notify_all();
}

void RingWorker::stop() {
    {
        std::lock_guard lock(m_phase_mutex);
        m_phase = Phase::Stop;
        m_phase_cv.notify_all();
    }
    std::uint64_t one = 1;
    if (m_wake) (void)!::write(m_wake.get(), &one, sizeof one);
    if (m_thread.joinable()) m_thread.join();
}

io_uring_sqe* RingWorker::command_sqe(abi::Command command) {
    io_uring_sqe* sqe = io_uring_get_sqe(&m_ring);
    if (!sqe) return nullptr; // cannot happen: one entry, one wake poll, four SQ slots
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->fd = 0; // index into the registered files: the /dev/fuse fd
    sqe->cmd_op = command;
    m_last = command;
    sqe->user_data = k_entry_tag;
    auto* cmd = reinterpret_cast<abi::RingCmd*>(sqe->cmd);
    cmd->qid = std::uint16_t(m_qid);
    return sqe;
}

void RingWorker::arm_wake() {
    io_uring_sqe* sqe = io_uring_get_sqe(&m_ring);
    if (!sqe) return;
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
    io_uring_prep_poll_add(sqe, m_wake.get(), POLLIN);
    sqe->user_data = k_wake_tag;
}

void RingWorker::run() {
    {
        std::unique_lock lock(m_phase_mutex);
        m_phase_cv.wait(lock, [this] { return m_phase != Phase::Waiting; });
        if (m_phase == Phase::Stop) return;
    }
    pthread_setname_np(pthread_self(),
                       ("pcfs-ring-" + std::to_string(m_qid)).substr(0, 15).c_str());
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(m_qid, &cpus);
    // Outside our cpuset the pin fails; the queue is still served, only from another CPU.
    (void)pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);

    submit_register();
    arm_wake();
    bool running = true;
    bool consumed = false; // the kernel has taken the REGISTER command (it answers it either way)
    while (running) {
        int rc = io_uring_submit_and_wait(&m_ring, 1);
        if (rc < 0 && rc != -EINTR) {
            LOG_ERROR("io_uring queue " + std::to_string(m_qid) + ": " + std::strerror(-rc));
            break;
        }
        if (rc > 0) consumed = true;
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&m_ring, head, cqe) {
            ++seen;
            if (!handle(*cqe)) running = false;
        }
        io_uring_cq_advance(&m_ring, seen);
    }
    // An entry the kernel never saw leaves it waiting for this queue forever (requests block
    // until every queue has an entry): unmount (the daemon's SIGTERM handling) rather than hang
    // every process that touches the mount. A refused REGISTER needs nothing: the kernel then
    // falls back to /dev/fuse by itself.
    std::lock_guard lock(m_phase_mutex);
    if (!consumed && m_phase != Phase::Stop) {
        LOG_ERROR("io_uring queue " + std::to_string(m_qid) + " could not register; unmounting");
        ::kill(::getpid(), SIGTERM);
    }
}

void RingWorker::submit_register() {
    io_uring_sqe* sqe = command_sqe(abi::CmdRegister);
    if (!sqe) return;
    sqe->addr = reinterpret_cast<std::uintptr_t>(m_iov);
    sqe->len = 2;
}

bool RingWorker::handle(const io_uring_cqe& cqe) {
    if (cqe.user_data == k_wake_tag) {
        std::uint64_t value;
        (void)!::read(m_wake.get(), &value, sizeof value);
        {
            std::lock_guard lock(m_phase_mutex);
            if (m_phase == Phase::Stop) return false;
        }
        {
            std::lock_guard lock(m_mutex);
            if (m_awaiting && m_replied) {
                m_awaiting = false;
                commit();
            }
        }
        arm_wake();
        return true;
    }
    if (cqe.res == -EINTR || cqe.res == -EAGAIN) { // not taken: send the same command again
        if (m_last == abi::CmdRegister)
            submit_register();
        else
            commit();
        return true;
    }
    if (cqe.res < 0) {
        // ENOTCONN/ECANCELED: the mount is gone. Anything else is a kernel refusal we log.
        if (cqe.res != -ENOTCONN && cqe.res != -ECANCELED)
            LOG_ERROR("io_uring queue " + std::to_string(m_qid) +
                      " entry failed: " + std::strerror(-cqe.res));
        return false;
    }
    dispatch();
    return true;
}

void RingWorker::dispatch() {
    fuse_in_header in;
    std::memcpy(&in, header().in_out, sizeof in);
    const std::size_t payload = header().ent_in_out.payload_sz;
    m_commit_id = header().ent_in_out.commit_id;
    {
        std::lock_guard lock(m_mutex);
        m_replied = false;
        m_awaiting = false;
        m_unique = in.unique;
    }
    m_served.fetch_add(1, std::memory_order_relaxed);
    // in.len counts the in header, the op header and the payload, as on /dev/fuse.
    const std::size_t fixed = sizeof in + payload;
    if (in.len < fixed || in.len - fixed > abi::k_op_in_size || payload > m_payload) {
        LOG_ERROR("io_uring request with inconsistent sizes (opcode " + std::to_string(in.opcode) +
                  ")");
        reply_error(EIO);
        return;
    }
    const std::size_t op_size = in.len - fixed;
    char* start = m_area.data() + k_prefix - op_size - sizeof in;
    std::memcpy(start, &in, sizeof in);
    std::memcpy(start + sizeof in, header().op_in, op_size);
    fuse_buf buf{};
    buf.mem = start;
    buf.size = in.len;
    t_current = this;
    fuse_session_process_buf(m_session, &buf);
    t_current = nullptr;
    finish_request();
}

RingWorker* RingWorker::current() {
    return t_current;
}

void RingWorker::finish_request() {
    std::lock_guard lock(m_mutex);
    if (m_replied)
        commit();
    else
        m_awaiting = true;
}

void RingWorker::write_error_header(std::uint64_t unique, int error) {
    fuse_out_header out{};
    out.len = sizeof out;
    out.error = -error;
    out.unique = unique;
    std::memcpy(header().in_out, &out, sizeof out);
    header().ent_in_out.payload_sz = 0;
}

void RingWorker::reply_error(int error) {
    std::lock_guard lock(m_mutex);
    write_error_header(m_unique.load(), error);
    commit();
}

void RingWorker::commit() {
    m_unique = 0;
    m_replied = false;
    io_uring_sqe* sqe = command_sqe(abi::CmdCommitAndFetch);
    if (!sqe) return;
    reinterpret_cast<abi::RingCmd*>(sqe->cmd)->commit_id = m_commit_id;
}

bool RingWorker::take_reply(std::uint64_t unique, const iovec* iov, int count, ssize_t& written) {
    if (m_unique.load(std::memory_order_acquire) != unique) return false;
    std::unique_lock lock(m_mutex);
    if (m_unique.load() != unique || m_replied) return false;
    std::size_t payload = 0;
    for (int i = 1; i < count; ++i) payload += iov[i].iov_len;
    written = ssize_t(iov[0].iov_len + payload);
    if (iov[0].iov_len != sizeof(fuse_out_header) || payload > m_payload) {
        // Never happens with libfuse's replies; refuse the request rather than truncate it.
        write_error_header(unique, EIO);
        written = -1;
        errno = EINVAL;
    } else {
        std::memcpy(header().in_out, iov[0].iov_base, sizeof(fuse_out_header));
        char* dest = m_area.data() + k_prefix;
        for (int i = 1; i < count; ++i) {
            std::memcpy(dest, iov[i].iov_base, iov[i].iov_len);
            dest += iov[i].iov_len;
        }
        header().ent_in_out.payload_sz = std::uint32_t(payload);
    }
    m_replied = true;
    if (t_current == this) return true; // finish_request() commits on this thread
    if (m_awaiting) {
        lock.unlock();
        std::uint64_t one = 1;
        (void)!::write(m_wake.get(), &one, sizeof one);
    }
    return true;
}

} // namespace fs::transport
