#include "cachecore/python/compiler_pool.hpp"

#include "cachecore/python/frame_protocol.hpp"
#include "cachecore/python/worker.hpp"
#include "cachecore/util/log.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <linux/capability.h>
#include <mutex>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

// Threading model: one long-lived pool thread per worker slot owns that slot's subprocess and is
// the only thread that spawns, talks to or reaps it. Workers must be spawned from threads that
// live as long as the pool, because PR_SET_PDEATHSIG fires when the spawning *thread* exits
// (a FUSE thread that comes and goes would take the workers with it).
//
// SIGPIPE: nothing process-wide is changed. Writes to a worker block SIGPIPE in the writing
// thread and consume a pending one after EPIPE (child_process.cpp write_all).
//
// Pids: a worker's pid is published in m_pids only while its process is unreaped, and is
// unpublished under the mutex before the owning thread reaps it, so kill() from another thread
// (the destructor, tests) can never hit a recycled pid.
namespace cachecore::python {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto k_startup_timeout = std::chrono::seconds(10);
constexpr int k_max_deaths = 2; // a source that kills this many workers is Crashed
constexpr int k_max_start_failures = 2;

struct FlightKey {
    hash::ContentHash key;
    int optimize;
    bool operator==(const FlightKey&) const = default;
};

struct FlightKeyHasher {
    std::size_t operator()(const FlightKey& k) const noexcept {
        return hash::ContentHashHasher{}(k.key) * 3 + std::size_t(k.optimize);
    }
};

// Compiles ahead run in the idle scheduling class so they only use CPU time nobody else wants
// (the importer and foreground compiles come first). That is only safe if the worker can be
// raised back when an importer starts waiting on its compile, which needs CAP_SYS_NICE or an
// RLIMIT_NICE that allows nice 0 (sched(7)); otherwise compiles ahead keep the normal class.
bool may_raise_priority() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NICE, &limit) == 0 &&
        (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= 20))
        return true;
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) return false;
    return data[CAP_TO_INDEX(CAP_SYS_NICE)].effective & CAP_TO_MASK(CAP_SYS_NICE);
}

bool set_idle_class(pid_t pid, bool idle) {
    sched_param param{};
    return ::sched_setscheduler(pid, idle ? SCHED_IDLE : SCHED_OTHER, &param) == 0;
}

CompileResult failure(CompileResult::Status status, std::string type, std::string message) {
    CompileResult r;
    r.status = status;
    r.error_type = std::move(type);
    r.error_message = std::move(message);
    return r;
}

} // namespace

struct Job {
    FlightKey flight;
    std::string frame; // the encoded request
    bool background = false;
    bool running = false;
    int slot = -1; // the slot running it, once running
    bool done = false;
    CompileResult result;
    std::vector<std::function<void(const CompileResult&)>> callbacks;
};

struct CompilerPool::Impl {
    Interpreter interpreter;
    PoolOptions options;
    unsigned slots = 1;

    mutable std::mutex mutex;
    std::condition_variable work_cv;
    std::condition_variable done_cv;
    std::deque<std::shared_ptr<Job>> foreground;
    std::deque<std::shared_ptr<Job>> background;
    std::unordered_map<FlightKey, std::shared_ptr<Job>, FlightKeyHasher> in_flight;
    // Finished jobs stay joinable for a while: a caller that looked in the store just before a
    // compile of the same source finished (e.g. a compile-ahead) must not compile it again.
    std::deque<std::shared_ptr<Job>> recently_done;
    std::size_t recently_done_bytes = 0;
    static constexpr std::size_t k_recent_jobs = 256;
    static constexpr std::size_t k_recent_bytes = 64u << 20;

    std::shared_ptr<Job> find_recent_locked(const FlightKey& flight) const {
        for (auto it = recently_done.rbegin(); it != recently_done.rend(); ++it) {
            if ((*it)->flight == flight) return *it;
        }
        return nullptr;
    }

    void remember_locked(const std::shared_ptr<Job>& job) {
        if (job->result.status != CompileResult::Status::Ok &&
            job->result.status != CompileResult::Status::CompileError)
            return; // transient failures may be retried at once
        recently_done.push_back(job);
        recently_done_bytes += job->result.code.size();
        while (recently_done.size() > k_recent_jobs || recently_done_bytes > k_recent_bytes) {
            recently_done_bytes -= recently_done.front()->result.code.size();
            recently_done.pop_front();
        }
    }
    std::vector<pid_t> pids;     // per slot, 0 = none
    std::vector<bool> slot_idle; // per slot: its worker is in the idle scheduling class
    bool idle_class = may_raise_priority();
    unsigned running_background = 0; // slots busy with compiles ahead
    std::vector<std::thread> threads;
    bool stopping = false;
    PoolStats stats;

    // Slot threads start on whatever thread first needs a compile, and a thread inherits its
    // creator's CPU affinity and name: a FUSE io_uring worker is pinned to one CPU, and the
    // compile workers forked from these threads would all have been confined to that CPU too.
    // They take the process's own affinity (its main thread's) instead.
    static void detach_from_starter() {
        pthread_setname_np(pthread_self(), "pcfs-compile");
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        if (::sched_getaffinity(::getpid(), sizeof cpus, &cpus) == 0)
            (void)::sched_setaffinity(0, sizeof cpus, &cpus);
    }

    void start_threads_locked() {
        if (!threads.empty()) return;
        pids.assign(slots, 0);
        slot_idle.assign(slots, false);
        for (unsigned i = 0; i < slots; ++i) threads.emplace_back([this, i] { slot_main(i); });
    }

    std::shared_ptr<Job> make_job(const hash::ContentHash& key, const CompileRequest& request) {
        auto job = std::make_shared<Job>();
        job->flight = FlightKey{key, std::clamp(request.optimize, 0, 2)};
        job->frame = frame::encode_request(job->flight.optimize, request.filename, request.source);
        return job;
    }

    void publish(unsigned slot, pid_t pid) {
        std::lock_guard lock(mutex);
        pids[slot] = pid;
    }

    void set_slot_class_locked(unsigned slot, bool idle) {
        idle = idle && idle_class;
        if (slot_idle[slot] == idle || pids[slot] <= 0) return;
        if (set_idle_class(pids[slot], idle)) {
            slot_idle[slot] = idle;
        } else if (!idle) {
            // Cannot raise it back after all: stop using the idle class for this pool.
            idle_class = false;
            LOG_WARN("compiler pool: cannot restore a worker's scheduling class; compiles ahead "
                     "now run at normal priority");
        }
    }

    // Unpublishes, then destroys (kills and reaps) the worker.
    void retire(unsigned slot, std::unique_ptr<Worker>& worker) {
        publish(slot, 0);
        worker.reset();
    }

    CompileResult run(Job& job, unsigned slot, std::unique_ptr<Worker>& worker) {
        int deaths = 0;
        int start_failures = 0;
        std::string start_error;
        for (;;) {
            {
                std::lock_guard lock(mutex);
                if (stopping) {
                    return failure(CompileResult::Status::Failed, "",
                                   "the compiler pool is shutting down");
                }
            }
            // A worker that died while idle is replaced without blaming this source.
            if (worker && worker->has_exited()) retire(slot, worker);
            if (!worker) {
                worker = Worker::start(interpreter.path, k_startup_timeout, &start_error);
                if (!worker) {
                    LOG_WARN("compiler pool: " + start_error);
                    if (++start_failures >= k_max_start_failures) {
                        return failure(CompileResult::Status::Failed, "", start_error);
                    }
                    continue;
                }
                std::lock_guard lock(mutex);
                pids[slot] = worker->pid();
                slot_idle[slot] = false; // a new worker has the daemon's class
                ++stats.worker_starts;
                stats.last_startup_seconds = worker->startup_seconds();
                continue; // re-checks `stopping` now that the destructor can see this pid
            }
            {
                std::lock_guard lock(mutex);
                job.slot = int(slot);
                set_slot_class_locked(slot, job.background);
            }
            frame::Reply reply;
            auto outcome = worker->exchange(job.frame, reply, Clock::now() + options.timeout);
            if (outcome == Worker::Outcome::Ok) {
                CompileResult r;
                if (reply.kind == frame::ReplyKind::Code) {
                    r.status = CompileResult::Status::Ok;
                    r.code = std::move(reply.code);
                } else {
                    r.status = CompileResult::Status::CompileError;
                    r.error_type = std::move(reply.error_type);
                    r.error_message = std::move(reply.error_message);
                    r.error_line = reply.error_line;
                }
                return r;
            }
            retire(slot, worker);
            if (outcome == Worker::Outcome::TimedOut) {
                std::lock_guard lock(mutex);
                ++stats.timed_out;
                return failure(CompileResult::Status::TimedOut, "TimedOut",
                               "compile took longer than " +
                                   std::to_string(options.timeout.count()) + " ms");
            }
            if (++deaths >= k_max_deaths) {
                std::lock_guard lock(mutex);
                ++stats.crashed;
                return failure(CompileResult::Status::Crashed, "Crashed",
                               "the source killed " + std::to_string(deaths) +
                                   " compile workers of " + interpreter.path);
            }
            std::lock_guard lock(mutex);
            ++stats.retries;
        }
    }

    void finish(const std::shared_ptr<Job>& job, CompileResult result) {
        std::vector<std::function<void(const CompileResult&)>> callbacks;
        {
            std::lock_guard lock(mutex);
            job->result = std::move(result);
            job->done = true;
            auto it = in_flight.find(job->flight);
            if (it != in_flight.end() && it->second == job) in_flight.erase(it);
            remember_locked(job);
            callbacks.swap(job->callbacks);
        }
        done_cv.notify_all();
        for (auto& cb : callbacks) {
            try {
                cb(job->result);
            } catch (const std::exception& e) {
                LOG_ERROR(std::string("compiler pool: a completion callback threw: ") + e.what());
            }
        }
    }

    void slot_main(unsigned slot) {
        detach_from_starter();
        std::unique_ptr<Worker> worker;
        for (;;) {
            std::shared_ptr<Job> job;
            bool picked_background = false;
            {
                std::unique_lock lock(mutex);
                // Background work only runs when no foreground job waits, and never on the
                // last free slot: an importer's compile must not queue behind a compile ahead.
                const unsigned background_slots = slots > 1 ? slots - 1 : 1;
                work_cv.wait(lock, [&] {
                    return stopping || !foreground.empty() ||
                           (!background.empty() && running_background < background_slots);
                });
                if (stopping) break;
                picked_background = foreground.empty();
                auto& queue = picked_background ? background : foreground;
                job = std::move(queue.front());
                queue.pop_front();
                job->running = true;
                if (picked_background) ++running_background;
                ++stats.compiles;
            }
            auto begin = Clock::now();
            CompileResult result = run(*job, slot, worker);
            result.seconds = std::chrono::duration<double>(Clock::now() - begin).count();
            finish(job, std::move(result));
            if (picked_background) {
                {
                    std::lock_guard lock(mutex);
                    --running_background;
                }
                work_cv.notify_one();
            }
        }
        retire(slot, worker);
    }
};

CompilerPool::CompilerPool(Interpreter interpreter, PoolOptions options)
    : m_impl(std::make_unique<Impl>()) {
    m_impl->interpreter = std::move(interpreter);
    m_impl->options = options;
    m_impl->slots =
        options.workers ? options.workers : std::max(1U, std::thread::hardware_concurrency()) + 1;
}

CompilerPool::~CompilerPool() {
    std::deque<std::shared_ptr<Job>> abandoned;
    {
        std::lock_guard lock(m_impl->mutex);
        m_impl->stopping = true;
        // Interrupts compiles in flight; their threads see EOF, then `stopping`.
        for (pid_t pid : m_impl->pids) {
            if (pid > 0) ::kill(pid, SIGKILL);
        }
        abandoned.swap(m_impl->foreground);
        for (auto& j : m_impl->background) abandoned.push_back(std::move(j));
        m_impl->background.clear();
    }
    m_impl->work_cv.notify_all();
    for (auto& t : m_impl->threads) t.join();
    for (auto& job : abandoned) {
        m_impl->finish(
            job, failure(CompileResult::Status::Failed, "", "the compiler pool is shutting down"));
    }
}

CompileResult CompilerPool::compile(const hash::ContentHash& key, const CompileRequest& request,
                                    Priority priority) {
    auto fresh = m_impl->make_job(key, request); // encoded outside the lock
    auto& impl = *m_impl;
    std::unique_lock lock(impl.mutex);
    if (impl.stopping) {
        return failure(CompileResult::Status::Failed, "", "the compiler pool is shutting down");
    }
    impl.start_threads_locked();
    std::shared_ptr<Job> job;
    bool joined = false;
    if (auto done = impl.find_recent_locked(fresh->flight)) {
        ++impl.stats.joined;
        CompileResult result = done->result;
        result.joined = true;
        return result;
    }
    auto it = impl.in_flight.find(fresh->flight);
    if (it != impl.in_flight.end()) {
        joined = true;
        // Single flight: the code is the same for every requester of this (content, level); its
        // co_filename is the first requester's, which importlib rewrites on load anyway.
        job = it->second;
        ++impl.stats.joined;
        if (priority == Priority::Foreground && job->background && !job->running) {
            auto pos = std::find(impl.background.begin(), impl.background.end(), job);
            if (pos != impl.background.end()) {
                impl.background.erase(pos);
                job->background = false;
                impl.foreground.push_back(job);
            }
        } else if (priority == Priority::Foreground && job->background && job->running) {
            // An importer now waits on a compile ahead: no longer idle-class work.
            job->background = false;
            if (job->slot >= 0) impl.set_slot_class_locked(unsigned(job->slot), false);
        }
    } else {
        job = std::move(fresh);
        job->background = priority == Priority::Background;
        impl.in_flight.emplace(job->flight, job);
        (job->background ? impl.background : impl.foreground).push_back(job);
        impl.work_cv.notify_one();
    }
    impl.done_cv.wait(lock, [&] { return job->done; });
    CompileResult result = job->result;
    result.joined = joined;
    return result;
}

bool CompilerPool::compile_async(const hash::ContentHash& key, CompileRequest request,
                                 std::function<void(const CompileResult&)> done) {
    auto& impl = *m_impl;
    FlightKey flight{key, std::clamp(request.optimize, 0, 2)};
    {
        std::lock_guard lock(impl.mutex);
        if (impl.stopping || impl.in_flight.count(flight) || impl.find_recent_locked(flight) ||
            impl.background.size() >= impl.options.background_queue_limit) {
            return false;
        }
    }
    auto job = impl.make_job(key, request);
    std::lock_guard lock(impl.mutex);
    // Re-checked: the lock was dropped while encoding.
    if (impl.stopping || impl.in_flight.count(flight) || impl.find_recent_locked(flight) ||
        impl.background.size() >= impl.options.background_queue_limit) {
        return false;
    }
    impl.start_threads_locked();
    job->background = true;
    if (done) job->callbacks.push_back(std::move(done));
    impl.in_flight.emplace(flight, job);
    impl.background.push_back(job);
    impl.work_cv.notify_one();
    return true;
}

const Interpreter& CompilerPool::interpreter() const {
    return m_impl->interpreter;
}

std::vector<pid_t> CompilerPool::worker_pids() const {
    std::lock_guard lock(m_impl->mutex);
    std::vector<pid_t> out;
    for (pid_t pid : m_impl->pids) {
        if (pid > 0) out.push_back(pid);
    }
    return out;
}

PoolStats CompilerPool::stats() const {
    std::lock_guard lock(m_impl->mutex);
    return m_impl->stats;
}

} // namespace cachecore::python
