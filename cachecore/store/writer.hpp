#pragma once

#include "cachecore/store/environment.hpp"
#include "cachecore/store/store.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

namespace cachecore::store {

// The one thread that writes: callers queue and return at once; the thread gathers for
// `batch_interval` (or until the batch is big, or someone flushes) and commits it in one
// transaction, then evicts inside that same transaction if the store is over its limit.
// A failed batch is dropped as a whole: the store is a cache, and readers must never wait on a
// sick disk.
class Writer {
public:
    Writer(std::shared_ptr<Environment> env, std::uint64_t max_size,
           std::chrono::milliseconds batch_interval);
    ~Writer(); // commits what is queued, then stops
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    void put(std::string key, std::string value);
    void remove_if_corrupt(std::string key); // re-checked in the write txn before deleting
    void touch(std::string key);
    void add_counters(const std::string& tag, const Counters& delta);
    void put_stamp(std::string key, std::string value);   // see Store::get_stamp
    void put_imports(std::string key, std::string value); // see Store::get_imports
    void flush();

    // A write on the calling thread (clear, evict_to, ...), with the same failure reporting.
    int write_now(const std::function<void(MDB_txn*)>& body, const char* what);
    std::optional<std::string> last_error() const;

private:
    using SideTable = std::vector<std::pair<std::string, std::string>>; // key, value
    struct Batch {
        std::vector<std::pair<std::string, std::string>> puts;
        std::vector<std::string> corrupt;
        std::unordered_set<std::string> touches;
        std::map<std::string, Counters> counters;
        SideTable stamps;
        SideTable imports;
        std::size_t bytes = 0;
        std::size_t ops = 0;
        bool empty() const {
            return puts.empty() && corrupt.empty() && touches.empty() && counters.empty() &&
                   stamps.empty() && imports.empty();
        }
    };

    // Queues a put to a side table (stamps, import lists) of the next batch.
    void put_side(SideTable Batch::*table, std::size_t max_pending, std::string key,
                  std::string value);
    void run();
    void apply(const Batch& batch);
    void write_batch(MDB_txn* txn, const Batch& batch);
    void write_stamps(MDB_txn* txn, const std::vector<std::pair<std::string, std::string>>& stamps);
    void write_imports(MDB_txn* txn,
                       const std::vector<std::pair<std::string, std::string>>& imports);
    void note_result(int rc, const char* what);
    void enqueued(std::unique_lock<std::mutex>& lock);

    std::shared_ptr<Environment> m_env;
    std::uint64_t m_max_size;
    std::chrono::milliseconds m_interval;

    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::condition_variable m_done;
    Batch m_pending;
    std::uint64_t m_enqueued = 0;  // sequence of the last queued operation
    std::uint64_t m_committed = 0; // every operation up to this one is committed or dropped
    bool m_urgent = false;
    bool m_stop = false;

    mutable std::mutex m_error_mutex;
    std::optional<std::string> m_last_error;
    bool m_failing = false;
    std::chrono::steady_clock::time_point m_last_warning{};
    std::uint64_t m_dropped_since_warning = 0;

    std::thread m_thread; // last: starts after everything above exists
};

} // namespace cachecore::store
