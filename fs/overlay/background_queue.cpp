#include "fs/overlay/background_queue.hpp"

#include "cachecore/util/log.hpp"

#include <exception>
#include <pthread.h>
#include <sched.h>
#include <string>

namespace fs::overlay {

BackgroundQueue::BackgroundQueue(std::size_t limit) : m_limit(limit) {
    m_thread = std::thread([this] { run(); });
}

BackgroundQueue::~BackgroundQueue() {
    stop();
}

bool BackgroundQueue::post(std::function<void()> job) {
    {
        std::lock_guard lock(m_mutex);
        if (m_stopping || m_jobs.size() >= m_limit) return false;
        m_jobs.push_back(std::move(job));
    }
    m_cv.notify_one();
    return true;
}

void BackgroundQueue::stop() {
    {
        std::lock_guard lock(m_mutex);
        if (m_stopping && !m_thread.joinable()) return;
        m_stopping = true;
        m_jobs.clear();
    }
    m_cv.notify_all();
    if (m_thread.joinable()) m_thread.join();
}

void BackgroundQueue::run() {
    pthread_setname_np(pthread_self(), "pcfs-background"); // for top -H, perf, /proc
    // Walking sources for compiles ahead must not take CPU time from an importer.
    sched_param param{};
    ::sched_setscheduler(0, SCHED_IDLE, &param); // this thread only (0 = the caller)
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock lock(m_mutex);
            m_cv.wait(lock, [&] { return m_stopping || !m_jobs.empty(); });
            if (m_stopping) return;
            job = std::move(m_jobs.front());
            m_jobs.pop_front();
        }
        try {
            job();
        } catch (const std::exception& e) {
            LOG_WARN(std::string("background job failed: ") + e.what());
        }
    }
}

} // namespace fs::overlay
