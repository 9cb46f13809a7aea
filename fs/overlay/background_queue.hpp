#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace fs::overlay {

// A bounded queue of low-priority jobs run by one thread in the idle scheduling class: finding
// and queueing compiles ahead (a package's modules, the import graph). Work here never delays a
// request; when the queue is full, new jobs are dropped (they are only optimisations).
class BackgroundQueue {
public:
    explicit BackgroundQueue(std::size_t limit = 1024);
    ~BackgroundQueue(); // drops pending jobs, finishes the running one
    BackgroundQueue(const BackgroundQueue&) = delete;
    BackgroundQueue& operator=(const BackgroundQueue&) = delete;

    bool post(std::function<void()> job);
    void stop();

private:
    void run();

    std::size_t m_limit;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<std::function<void()>> m_jobs;
    bool m_stopping = false;
    std::thread m_thread;
};

} // namespace fs::overlay
