#pragma once

#include "cachecore/store/entry.hpp"
#include "cachecore/store/store_key.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cachecore::store {

struct StoreError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct StoreOptions {
    std::filesystem::path dir;           // created 0700 if missing; files are 0600
    std::uint64_t max_size = 2ull << 30; // bytes of entries kept by approximate-LRU eviction
    std::chrono::milliseconds batch_interval{20}; // how long the writer gathers a batch
};

// Counters persisted in the store, per cache tag (e.g. "cpython-312"), for `pycachefs stats`.
struct Counters {
    std::uint64_t hits = 0;           // served from the store
    std::uint64_t misses = 0;         // not in the store
    std::uint64_t compiles = 0;       // successful compiles
    std::uint64_t compile_errors = 0; // sources that did not compile
    std::uint64_t pycs_served = 0;
    std::uint64_t bytes_served = 0;
    double compile_seconds = 0;

    Counters& operator+=(const Counters& o);
};

struct Usage {
    std::uint64_t entries = 0;
    std::uint64_t error_entries = 0; // negative entries among `entries`
    std::uint64_t bytes = 0;         // pages used by entries (what the limit applies to)
    std::uint64_t limit = 0;
    std::uint64_t file_bytes = 0; // size of data.mdb on disk
};

struct VerifyReport {
    std::uint64_t checked = 0;
    std::uint64_t removed = 0;
    std::vector<std::string> problems; // one line per bad entry: key hex and why
};

// The LMDB store: one environment per process per directory (opened with MDB_NOTLS, stale
// readers cleared). Reads never take the write lock; writes are queued to one writer thread that
// commits in batches. Safe to share between threads and between processes.
class Store {
public:
    explicit Store(StoreOptions options); // throws StoreError with a one-line reason
    ~Store();                             // commits what is queued
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    // A corrupt value is queued for deletion and reported as a miss. Records the access for LRU.
    std::optional<Entry> get(const StoreKey& key);
    // Queued; never blocks on disk. A full disk drops the write and logs one warning.
    void put(const StoreKey& key, Entry entry);
    void add_counters(const std::string& cache_tag, const Counters& delta); // queued
    // What a source's stamp (its file identity, size and times) was found to hash to, so that
    // a new process need not read an unchanged source again. Keys are opaque here except for
    // their first k_stamp_generation_size bytes, a generation (the boot the stamp belongs to):
    // a put of another generation drops every stamp stored so far. Bounded in number (all are
    // dropped at the bound: each costs one read of its source again). A failed read is a miss.
    static constexpr std::size_t k_stamp_generation_size = 16;
    std::optional<std::string> get_stamp(std::string_view key);
    void put_stamp(std::string key, std::string value); // queued
    // The import statements found in a source (imports::encode_import_list), by scanner version
    // and content hash: a walk of the import graph need not read a source scanned before.
    // Bounded in number like the stamps; kept across boots (content does not change).
    std::optional<std::string> get_imports(std::string_view key);
    void put_imports(std::string key, std::string value); // queued
    void flush(); // blocks until everything queued so far is committed (or dropped)

    Usage usage();
    std::map<std::string, Counters> counters();
    void zero_counters();
    VerifyReport verify();                              // checks every entry, deletes bad ones
    std::uint64_t evict_to(std::uint64_t target_bytes); // returns entries removed
    void clear(); // removes every entry, stamp and import list (counters kept)
    // Visits every key (for stats per interpreter); stops when `visit` returns false.
    void for_each_key(const std::function<bool(const StoreKey&, EntryKind, std::size_t)>& visit);

    const StoreOptions& options() const;
    // Set when a write failed (e.g. ENOSPC): the last error, for logs and stats.
    std::optional<std::string> last_write_error() const;

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

} // namespace cachecore::store
