#include "fs/transport/uring_transport.hpp"

#include "cachecore/util/log.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <fuse_lowlevel.h>
#include <sys/sysinfo.h>
#include <system_error>
#include <unistd.h>

namespace fs::transport {

namespace {

// libfuse hands its custom-I/O hooks the filesystem's userdata, not ours; a process serves one
// mount, so the transport is found here.
std::atomic<UringTransport*> g_transport{nullptr};

std::string read_first_line(const char* path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

} // namespace

bool UringTransport::kernel_allows(std::string& why) {
    const std::string enabled = read_first_line("/sys/module/fuse/parameters/enable_uring");
    if (enabled.empty()) {
        why = "this kernel has no FUSE over io_uring (needs 6.14+ with CONFIG_FUSE_IO_URING)";
        return false;
    }
    if (enabled != "Y" && enabled != "1") {
        why = "FUSE over io_uring is switched off: as root, "
              "echo Y > /sys/module/fuse/parameters/enable_uring";
        return false;
    }
    const std::string disabled = read_first_line("/proc/sys/kernel/io_uring_disabled");
    if (disabled == "2" || (disabled == "1" && ::geteuid() != 0)) {
        why = "io_uring is disabled by /proc/sys/kernel/io_uring_disabled";
        return false;
    }
    return true;
}

UringTransport::UringTransport(fuse_session* session, unsigned threads_per_queue)
    : m_queues(unsigned(std::max(1, get_nprocs_conf()))) {
    const int fd = fuse_session_fd(session);
    // The kernel has one queue per possible CPU and uses the ring only once every queue has an
    // entry, so all of them get workers, online or not.
    for (unsigned q = 0; q < m_queues; ++q)
        for (unsigned t = 0; t < threads_per_queue; ++t)
            m_workers.push_back(std::make_unique<RingWorker>(fd, q));
    UringTransport* expected = nullptr;
    if (!g_transport.compare_exchange_strong(expected, this))
        throw std::system_error(EBUSY, std::generic_category(), "a second io_uring transport");
    static const fuse_custom_io io{io_writev, io_read, nullptr, nullptr};
    if (int rc = fuse_session_custom_io(session, &io, fd); rc < 0) {
        g_transport = nullptr;
        throw std::system_error(-rc, std::generic_category(), "fuse_session_custom_io");
    }
    for (auto& w : m_workers) w->start(session);
}

UringTransport::~UringTransport() {
    stop();
    g_transport = nullptr;
}

void UringTransport::stop() {
    for (auto& w : m_workers) w->stop();
}

nlohmann::json UringTransport::stats() const {
    std::vector<std::uint64_t> per_queue(m_queues, 0);
    const std::size_t per = m_workers.size() / m_queues;
    for (std::size_t i = 0; i < m_workers.size(); ++i) per_queue[i / per] += m_workers[i]->served();
    std::uint64_t served = 0;
    for (auto n : per_queue) served += n;
    return {{"transport", m_active.load() ? "io_uring" : "/dev/fuse"},
            {"ring_queues", m_queues},
            {"ring_workers", m_workers.size()},
            {"ring_requests", served},
            {"ring_requests_per_queue", per_queue}};
}

ssize_t UringTransport::io_read(int fd, void* buf, std::size_t len, void*) {
    ssize_t n = ::read(fd, buf, len);
    if (n > 0) {
        if (auto* self = g_transport.load()) self->note_request(buf, std::size_t(n));
    }
    return n;
}

ssize_t UringTransport::io_writev(int fd, iovec* iov, int count, void*) {
    if (auto* self = g_transport.load()) return self->writev(fd, iov, count);
    return ::writev(fd, iov, count);
}

void UringTransport::note_request(const void* buf, std::size_t size) {
    const auto* in = static_cast<const fuse_in_header*>(buf);
    if (size < sizeof *in + offsetof(fuse_init_in, flags2) + 4 || in->opcode != FUSE_INIT) return;
    fuse_init_in init;
    std::memcpy(&init, static_cast<const char*>(buf) + sizeof *in, sizeof init);
    const std::uint64_t flags =
        init.flags | ((init.flags & abi::k_init_ext) ? std::uint64_t(init.flags2) << 32 : 0);
    if (flags & abi::k_over_io_uring) {
        m_init_unique = in->unique;
    } else {
        LOG_WARN("the kernel did not offer FUSE over io_uring; serving through /dev/fuse");
    }
}

ssize_t UringTransport::writev(int fd, iovec* iov, int count) {
    const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
    if (out->unique != 0 && m_active.load(std::memory_order_relaxed)) {
        ssize_t written = 0;
        if (auto* w = RingWorker::current(); w && w->take_reply(out->unique, iov, count, written))
            return written;
        for (auto& w : m_workers)
            if (w->take_reply(out->unique, iov, count, written)) return written;
    }
    if (out->unique != 0 && out->unique == m_init_unique.load())
        return write_init_reply(fd, iov, count);
    return ::writev(fd, iov, count);
}

ssize_t UringTransport::write_init_reply(int fd, iovec* iov, int count) {
    m_init_unique = 0;
    const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
    if (out->error != 0 || count != 2 || iov[1].iov_len < offsetof(fuse_init_out, flags2) + 4)
        return ::writev(fd, iov, count);
    fuse_init_out init{};
    std::memcpy(&init, iov[1].iov_base, std::min(iov[1].iov_len, sizeof init));
    // The kernel requires every entry's payload buffer to hold its largest request.
    const std::uint32_t pages = (init.flags & abi::k_max_pages) && init.max_pages
                                    ? init.max_pages
                                    : abi::k_default_max_pages;
    const std::size_t payload =
        std::max({abi::k_min_read_buffer, std::size_t(init.max_write),
                  std::size_t(pages) * std::size_t(::sysconf(_SC_PAGESIZE))});
    try {
        for (auto& w : m_workers) w->allocate(payload);
    } catch (const std::exception& e) {
        LOG_WARN(std::string("FUSE over io_uring not used: ") + e.what());
        return ::writev(fd, iov, count);
    }
    init.flags |= abi::k_init_ext;
    init.flags2 |= std::uint32_t(abi::k_over_io_uring >> 32);
    iovec patched[2] = {iov[0], {&init, iov[1].iov_len}};
    const ssize_t n = ::writev(fd, patched, 2);
    if (n < 0) return n;
    // The kernel has processed INIT by now; requests wait until every queue has an entry.
    m_active = true;
    for (auto& w : m_workers) w->go();
    LOG_INFO("serving through FUSE over io_uring: " + std::to_string(m_queues) + " queues, " +
             std::to_string(m_workers.size()) + " workers");
    return n;
}

} // namespace fs::transport
