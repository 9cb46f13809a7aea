#pragma once

#include "cachecore/python/child_process.hpp"
#include "cachecore/python/frame_protocol.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace cachecore::python {

// One `python -I -S -c <driver>` subprocess speaking the frame protocol. Not thread-safe: one
// owner thread at a time. The destructor kills and reaps it.
class Worker {
public:
    // Spawns the interpreter and waits (up to `startup_timeout`) for the driver's greeting.
    static std::unique_ptr<Worker>
    start(const std::string& python, std::chrono::milliseconds startup_timeout, std::string* error);

    enum class Outcome {
        Ok,       // `reply` holds the decoded answer
        Died,     // EOF, EPIPE or garbage: the worker is gone (or SIGKILLed); replace it
        TimedOut, // no answer before the deadline: the worker has been SIGKILLed
    };
    // After Died/TimedOut the process is killed but not reaped: destroying the Worker reaps.
    Outcome exchange(std::string_view request_frame, frame::Reply& reply,
                     std::chrono::steady_clock::time_point deadline);

    pid_t pid() const { return m_child.pid(); }
    bool has_exited() { return m_child.has_exited(); }
    void kill() { m_child.kill(); }
    std::uint64_t requests() const { return m_requests; }
    double startup_seconds() const { return m_startup_seconds; }

    explicit Worker(ChildProcess child) : m_child(std::move(child)) {}

private:
    ChildProcess m_child;
    std::uint64_t m_requests = 0;
    double m_startup_seconds = 0;
};

} // namespace cachecore::python
