#include "fs/cli/progress_meter.hpp"

#include <cmath>

namespace fs::cli {
namespace {

std::string clock_text(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    auto s = std::uint64_t(seconds + 0.5);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", (unsigned long long)(s / 3600),
                      (unsigned long long)(s / 60 % 60), (unsigned long long)(s % 60));
    else
        std::snprintf(buf, sizeof buf, "%llu:%02llu", (unsigned long long)(s / 60),
                      (unsigned long long)(s % 60));
    return buf;
}

} // namespace

ProgressMeter::ProgressMeter(std::uint64_t total, std::string unit, FILE* out, bool terminal)
    : m_total(total), m_unit(std::move(unit)), m_out(out), m_terminal(terminal),
      m_start(std::chrono::steady_clock::now()) {
    m_thread = std::thread([this] { run(); });
}

ProgressMeter::~ProgressMeter() {
    finish();
}

double ProgressMeter::elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count();
}

std::string ProgressMeter::describe(std::uint64_t done, std::uint64_t total, double seconds,
                                    const std::string& unit) {
    const double rate = seconds > 0 ? double(done) / seconds : 0;
    const double eta = rate > 0 ? double(total - std::min(done, total)) / rate : -1;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%llu/%llu %s  %.0f %s/s  ETA %s", (unsigned long long)done,
                  (unsigned long long)total, unit.c_str(), rate, unit.c_str(),
                  clock_text(eta).c_str());
    return buf;
}

void ProgressMeter::finish() {
    {
        std::lock_guard lock(m_mutex);
        if (m_stop) return;
        m_stop = true;
    }
    m_wake.notify_all();
    if (m_thread.joinable()) m_thread.join();
    if (m_terminal && m_drawn) {
        std::fputs("\r\033[K", m_out);
        std::fflush(m_out);
    }
}

void ProgressMeter::run() {
    // A terminal gets a live bar; a log gets a line now and then, not a flood.
    const auto interval =
        m_terminal ? std::chrono::milliseconds(100) : std::chrono::milliseconds(2000);
    std::unique_lock lock(m_mutex);
    while (!m_wake.wait_for(lock, interval, [this] { return m_stop; })) draw();
}

void ProgressMeter::draw() {
    const auto done = m_done.load(std::memory_order_relaxed);
    const auto text = describe(done, m_total, elapsed(), m_unit);
    if (!m_terminal) {
        std::fprintf(m_out, "warm: %s\n", text.c_str());
        std::fflush(m_out);
        return;
    }
    constexpr int k_width = 30;
    const int filled = m_total ? int(double(k_width) * double(done) / double(m_total)) : k_width;
    std::string bar(std::size_t(filled), '#');
    bar.resize(k_width, '-');
    std::fprintf(m_out, "\r\033[K[%s] %s", bar.c_str(), text.c_str());
    std::fflush(m_out);
    m_drawn = true;
}

} // namespace fs::cli
