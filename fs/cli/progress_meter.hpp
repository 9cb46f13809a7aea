#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

namespace fs::cli {

// Reports done/total, items per second and ETA from a thread of its own while work runs: a bar
// redrawn in place on a terminal, a plain line every few seconds otherwise (logs, CI).
class ProgressMeter {
public:
    ProgressMeter(std::uint64_t total, std::string unit, FILE* out, bool terminal);
    ~ProgressMeter(); // stops, clears the bar
    ProgressMeter(const ProgressMeter&) = delete;
    ProgressMeter& operator=(const ProgressMeter&) = delete;

    void advance(std::uint64_t n = 1) { m_done.fetch_add(n, std::memory_order_relaxed); }
    void finish();          // stops reporting (idempotent)
    double elapsed() const; // seconds since construction

    // "1234/5678 files  456 files/s  ETA 0:09" (without the bar), for tests and plain lines.
    static std::string describe(std::uint64_t done, std::uint64_t total, double seconds,
                                const std::string& unit);

private:
    void run();
    void draw();

    std::uint64_t m_total;
    std::string m_unit;
    FILE* m_out;
    bool m_terminal;
    std::chrono::steady_clock::time_point m_start;
    std::atomic<std::uint64_t> m_done{0};
    std::mutex m_mutex;
    std::condition_variable m_wake;
    bool m_stop = false;
    bool m_drawn = false;
    std::thread m_thread;
};

} // namespace fs::cli
