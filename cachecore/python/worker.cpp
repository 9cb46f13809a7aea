#include "cachecore/python/worker.hpp"

#include "cachecore/python/driver_source.hpp"

namespace cachecore::python {
namespace {

using Clock = std::chrono::steady_clock;

// Reads one frame; the reply body lands in `body`.
IoStatus read_frame(int fd, std::string& body, Clock::time_point deadline) {
    char header[frame::k_header_size];
    IoStatus s = read_exact(fd, header, sizeof header, deadline);
    if (s != IoStatus::Ok) return s;
    std::uint32_t length = frame::read_length({header, sizeof header});
    if (length > frame::k_max_body) return IoStatus::Error;
    body.resize(length);
    return read_exact(fd, body.data(), length, deadline);
}

} // namespace

std::unique_ptr<Worker> Worker::start(const std::string& python,
                                      std::chrono::milliseconds startup_timeout,
                                      std::string* error) {
    auto begin = Clock::now();
    // -W ignore: a compile-time warning would have CPython read the line it names back from the
    // file, by the name we gave (often under our own mount); the driver denies every other open.
    std::vector<std::string> argv{
        python, "-I", "-S", "-W", "ignore", "-c", std::string(driver_source())};
    auto child = ChildProcess::spawn(argv, minimal_environment(), error);
    if (!child) return nullptr;
    auto worker = std::make_unique<Worker>(std::move(*child));
    std::string body;
    IoStatus s = read_frame(worker->m_child.stdout_fd(), body, begin + startup_timeout);
    auto hello = s == IoStatus::Ok ? frame::decode_reply_body(body) : std::nullopt;
    if (!hello || hello->kind != frame::ReplyKind::Hello) {
        if (error) {
            *error = python + ": the compile worker did not start (" +
                     (s == IoStatus::TimedOut ? "no greeting within the start-up timeout"
                      : s == IoStatus::Ok     ? "unexpected greeting"
                                              : "exited at start-up") +
                     ")";
        }
        return nullptr; // the destructor kills and reaps it
    }
    worker->m_startup_seconds = std::chrono::duration<double>(Clock::now() - begin).count();
    return worker;
}

Worker::Outcome Worker::exchange(std::string_view request_frame, frame::Reply& reply,
                                 Clock::time_point deadline) {
    ++m_requests;
    IoStatus s = write_all(m_child.stdin_fd(), request_frame, deadline);
    std::string body;
    if (s == IoStatus::Ok) s = read_frame(m_child.stdout_fd(), body, deadline);
    if (s == IoStatus::TimedOut) {
        m_child.kill();
        return Outcome::TimedOut;
    }
    if (s == IoStatus::Ok) {
        auto decoded = frame::decode_reply_body(body);
        if (decoded && decoded->kind != frame::ReplyKind::Hello) {
            reply = std::move(*decoded);
            return Outcome::Ok;
        }
    }
    m_child.kill(); // a worker that broke protocol cannot be trusted with the next job
    return Outcome::Died;
}

} // namespace cachecore::python
