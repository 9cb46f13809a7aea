#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <lmdb.h>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace cachecore::store {

// Names of the databases inside the environment (tests open them raw to corrupt values).
inline constexpr const char* k_entries_db = "entries";   // StoreKey bytes -> encoded Entry
inline constexpr const char* k_atimes_db = "atimes";     // StoreKey bytes -> u64 LE ms
inline constexpr const char* k_counters_db = "counters"; // cache tag -> 7 x 8 bytes LE
// Source stamp (with a generation prefix) -> content hash: see Store::get_stamp.
inline constexpr const char* k_stamps_db = "stamps";
// Scanner version + content hash -> a source's import statements: see Store::get_imports.
inline constexpr const char* k_imports_db = "imports";

// One LMDB environment per directory per process: LMDB forbids opening an environment twice in
// a process (closing one would drop the other's POSIX locks), so Stores on one directory share
// it. Owns the DBI handles, a pool of reset read transactions, and the lock that keeps every
// transaction of this process out of the way while the map is re-adopted after another process
// grew it (MDB_MAP_RESIZED).
class Environment {
public:
    // Throws StoreError with a one-line reason naming the directory.
    static std::shared_ptr<Environment> open(const std::filesystem::path& dir,
                                             std::uint64_t map_size);
    ~Environment();
    Environment(const Environment&) = delete;
    Environment& operator=(const Environment&) = delete;

    // A read snapshot. Values it returns point into the map: copy them before it ends.
    class ReadLease {
    public:
        ReadLease(ReadLease&& other) noexcept;
        ReadLease& operator=(ReadLease&&) = delete;
        ~ReadLease();
        MDB_txn* txn() const { return m_txn; }

    private:
        friend class Environment;
        ReadLease(Environment* env, std::shared_lock<std::shared_mutex> lock, MDB_txn* txn)
            : m_env(env), m_lock(std::move(lock)), m_txn(txn) {}
        Environment* m_env;
        std::shared_lock<std::shared_mutex> m_lock;
        MDB_txn* m_txn;
    };

    ReadLease read(); // throws lmdb::Failure
    // Runs `body` in a write transaction and commits. Returns 0 or the LMDB/errno code of the
    // failure (the transaction is then aborted); `body` aborts by throwing lmdb::Failure.
    int write(const std::function<void(MDB_txn*)>& body);

    MDB_env* env() const { return m_env; }
    MDB_dbi entries() const { return m_entries; }
    MDB_dbi atimes() const { return m_atimes; }
    MDB_dbi counters() const { return m_counters; }
    MDB_dbi stamps() const { return m_stamps; }
    MDB_dbi imports() const { return m_imports; }
    const std::filesystem::path& dir() const { return m_dir; }
    // Pages of the entries and access-time databases, in bytes, as seen by `txn`: this is
    // LMDB's own accounting, so it is right with any number of processes writing.
    std::uint64_t used_bytes(MDB_txn* txn) const;

private:
    explicit Environment(std::filesystem::path dir);
    void adopt_map_size(); // after MDB_MAP_RESIZED
    void give_back(MDB_txn* txn);

    std::filesystem::path m_dir;
    MDB_env* m_env = nullptr;
    MDB_dbi m_entries = 0;
    MDB_dbi m_atimes = 0;
    MDB_dbi m_counters = 0;
    MDB_dbi m_stamps = 0;
    MDB_dbi m_imports = 0;
    std::shared_mutex m_map_lock; // shared by every live txn, exclusive to re-map
    std::mutex m_pool_mutex;
    std::vector<MDB_txn*> m_pool; // reset read transactions (MDB_NOTLS: any thread may renew)
};

} // namespace cachecore::store
