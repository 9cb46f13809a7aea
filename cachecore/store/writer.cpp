#include "cachecore/store/writer.hpp"

#include "cachecore/store/counters_codec.hpp"
#include "cachecore/store/entry.hpp"
#include "cachecore/store/eviction.hpp"
#include "cachecore/store/le_bytes.hpp"
#include "cachecore/store/lmdb_txn.hpp"
#include "cachecore/store/store.hpp"
#include "cachecore/util/log.hpp"

namespace cachecore::store {

namespace {

// A batch this big is committed without waiting for the interval to end.
constexpr std::size_t k_big_batch_bytes = 16u << 20;
constexpr std::size_t k_big_batch_ops = 4096;
// Touches are hints: past this many pending, new ones are dropped rather than grow memory.
constexpr std::size_t k_max_pending_touches = 1u << 16;
constexpr std::size_t k_max_pending_stamps = 1u << 16;
// Stamps kept (~100 bytes each); at the bound all go (each then costs one read of its source).
constexpr std::size_t k_max_stamps = 1u << 18;
// Import lists kept (a few hundred bytes each); at the bound all go (each then costs one read
// and scan of its source again). Queued ones past the pending bound are dropped.
constexpr std::size_t k_max_import_lists = 1u << 16;
constexpr std::size_t k_max_pending_imports = 1u << 14;
// Puts past this many queued bytes are dropped: a stalled disk must not grow memory unbounded.
constexpr std::size_t k_max_pending_bytes = 256u << 20;
constexpr auto k_warning_interval = std::chrono::minutes(5);

} // namespace

Writer::Writer(std::shared_ptr<Environment> env, std::uint64_t max_size,
               std::chrono::milliseconds batch_interval)
    : m_env(std::move(env)), m_max_size(max_size), m_interval(batch_interval),
      m_thread([this] { run(); }) {}

Writer::~Writer() {
    {
        std::lock_guard lock(m_mutex);
        m_stop = true;
    }
    m_wake.notify_all();
    m_thread.join();
}

void Writer::enqueued(std::unique_lock<std::mutex>& lock) {
    ++m_enqueued;
    ++m_pending.ops;
    bool wake = m_pending.ops == 1 || m_pending.bytes >= k_big_batch_bytes ||
                m_pending.ops >= k_big_batch_ops;
    lock.unlock();
    // The writer sleeps through the gathering interval; only the first operation of a batch
    // and a batch turning big need to wake it.
    if (wake) m_wake.notify_one();
}

void Writer::put(std::string key, std::string value) {
    std::unique_lock lock(m_mutex);
    if (m_pending.bytes >= k_max_pending_bytes) return;
    m_pending.bytes += key.size() + value.size();
    m_pending.puts.emplace_back(std::move(key), std::move(value));
    enqueued(lock);
}

void Writer::remove_if_corrupt(std::string key) {
    std::unique_lock lock(m_mutex);
    m_pending.corrupt.push_back(std::move(key));
    enqueued(lock);
}

void Writer::touch(std::string key) {
    std::unique_lock lock(m_mutex);
    if (m_pending.touches.size() >= k_max_pending_touches) return;
    m_pending.touches.insert(std::move(key));
    enqueued(lock);
}

void Writer::add_counters(const std::string& tag, const Counters& delta) {
    std::unique_lock lock(m_mutex);
    m_pending.counters[tag] += delta;
    enqueued(lock);
}

void Writer::put_stamp(std::string key, std::string value) {
    put_side(&Batch::stamps, k_max_pending_stamps, std::move(key), std::move(value));
}

void Writer::put_imports(std::string key, std::string value) {
    put_side(&Batch::imports, k_max_pending_imports, std::move(key), std::move(value));
}

void Writer::put_side(SideTable Batch::*table, std::size_t max_pending, std::string key,
                      std::string value) {
    std::unique_lock lock(m_mutex);
    auto& pending = m_pending.*table;
    if (pending.size() >= max_pending) return; // they only save work: dropped, not queued
    m_pending.bytes += key.size() + value.size();
    pending.emplace_back(std::move(key), std::move(value));
    enqueued(lock);
}

void Writer::flush() {
    std::unique_lock lock(m_mutex);
    std::uint64_t target = m_enqueued;
    if (m_committed >= target) return;
    m_urgent = true;
    m_wake.notify_all();
    m_done.wait(lock, [&] { return m_committed >= target; });
}

void Writer::run() {
    std::unique_lock lock(m_mutex);
    for (;;) {
        m_wake.wait(lock, [&] { return m_stop || !m_pending.empty(); });
        if (m_pending.empty()) break; // stopping with nothing left
        // Gather: later writes join this batch and share its one commit.
        m_wake.wait_for(lock, m_interval, [&] {
            return m_stop || m_urgent || m_pending.bytes >= k_big_batch_bytes ||
                   m_pending.ops >= k_big_batch_ops;
        });
        m_urgent = false;
        Batch batch = std::move(m_pending);
        m_pending = Batch{};
        std::uint64_t through = m_enqueued;
        lock.unlock();
        apply(batch);
        lock.lock();
        m_committed = through;
        m_done.notify_all();
    }
}

void Writer::write_batch(MDB_txn* txn, const Batch& batch) {
    MDB_dbi entries = m_env->entries();
    MDB_dbi atimes = m_env->atimes();
    std::string now;
    detail::append_u64(now, now_millis());
    MDB_val now_val = lmdb::to_val(now);

    for (const auto& [key, value] : batch.puts) {
        MDB_val k = lmdb::to_val(key);
        MDB_val v = lmdb::to_val(value);
        lmdb::check(mdb_put(txn, entries, &k, &v, 0), "put");
        lmdb::check(mdb_put(txn, atimes, &k, &now_val, 0), "put access time");
    }
    for (const auto& key : batch.corrupt) {
        // Another process may have replaced the bad value with a good one since it was read.
        MDB_val k = lmdb::to_val(key);
        MDB_val v{};
        if (mdb_get(txn, entries, &k, &v) != 0 || !entry_problem(lmdb::view(v))) continue;
        lmdb::check(mdb_del(txn, entries, &k, nullptr), "delete corrupt entry");
        int rc = mdb_del(txn, atimes, &k, nullptr);
        if (rc != MDB_NOTFOUND) lmdb::check(rc, "delete access time");
    }
    for (const auto& key : batch.touches) {
        MDB_val k = lmdb::to_val(key);
        MDB_val v{};
        if (mdb_get(txn, entries, &k, &v) != 0) continue; // evicted meanwhile
        lmdb::check(mdb_put(txn, atimes, &k, &now_val, 0), "touch");
    }
    for (const auto& [tag, delta] : batch.counters) {
        MDB_val k = lmdb::to_val(tag);
        MDB_val v{};
        Counters total;
        int rc = mdb_get(txn, m_env->counters(), &k, &v);
        if (rc == 0) {
            total = decode_counters(lmdb::view(v));
        } else if (rc != MDB_NOTFOUND) {
            lmdb::check(rc, "read counters");
        }
        total += delta;
        std::string encoded = encode_counters(total);
        MDB_val nv = lmdb::to_val(encoded);
        lmdb::check(mdb_put(txn, m_env->counters(), &k, &nv, 0), "write counters");
    }
    if (!batch.stamps.empty()) write_stamps(txn, batch.stamps);
    if (!batch.imports.empty()) write_imports(txn, batch.imports);
    // Evict in the same transaction: the committed store never sits above its limit. Down to 90%
    // so that the next few batches do not each pay for a scan.
    if (!batch.puts.empty() && m_env->used_bytes(txn) > m_max_size) {
        evict_until(*m_env, txn, m_max_size / 10 * 9);
    }
}

void Writer::write_stamps(MDB_txn* txn,
                          const std::vector<std::pair<std::string, std::string>>& stamps) {
    const MDB_dbi dbi = m_env->stamps();
    const std::string_view generation =
        std::string_view(stamps.front().first).substr(0, Store::k_stamp_generation_size);
    // Stamps of another generation (an earlier boot: inode numbers and times may repeat) are
    // worthless, and so is a full table: both are dropped whole.
    MDB_stat st{};
    lmdb::check(mdb_stat(txn, dbi, &st), "count stamps");
    bool drop = st.ms_entries >= k_max_stamps;
    if (!drop && st.ms_entries > 0) {
        MDB_cursor* cursor = nullptr;
        lmdb::check(mdb_cursor_open(txn, dbi, &cursor), "open stamps cursor");
        MDB_val k{}, v{};
        int rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST);
        mdb_cursor_close(cursor);
        drop = rc == 0 && lmdb::view(k).substr(0, generation.size()) != generation;
    }
    if (drop) lmdb::check(mdb_drop(txn, dbi, 0), "drop stamps");
    for (const auto& [key, value] : stamps) {
        if (std::string_view(key).substr(0, generation.size()) != generation) continue;
        MDB_val k = lmdb::to_val(key);
        MDB_val v = lmdb::to_val(value);
        lmdb::check(mdb_put(txn, dbi, &k, &v, 0), "put stamp");
    }
}

void Writer::write_imports(MDB_txn* txn,
                           const std::vector<std::pair<std::string, std::string>>& imports) {
    const MDB_dbi dbi = m_env->imports();
    MDB_stat st{};
    lmdb::check(mdb_stat(txn, dbi, &st), "count import lists");
    if (st.ms_entries >= k_max_import_lists) lmdb::check(mdb_drop(txn, dbi, 0), "drop imports");
    for (const auto& [key, value] : imports) {
        MDB_val k = lmdb::to_val(key);
        MDB_val v = lmdb::to_val(value);
        lmdb::check(mdb_put(txn, dbi, &k, &v, 0), "put imports");
    }
}

void Writer::apply(const Batch& batch) {
    auto body = [&](MDB_txn* txn) { write_batch(txn, batch); };
    int rc = m_env->write(body);
    if (rc == MDB_MAP_FULL) {
        // The map (not the limit) is exhausted: make room by eviction, then try once more.
        m_env->write([&](MDB_txn* txn) {
            std::uint64_t used = m_env->used_bytes(txn);
            evict_until(*m_env, txn, std::min(m_max_size / 10 * 9, used / 4 * 3));
        });
        rc = m_env->write(body);
    }
    note_result(rc, "batch commit");
}

int Writer::write_now(const std::function<void(MDB_txn*)>& body, const char* what) {
    int rc = m_env->write(body);
    note_result(rc, what);
    return rc;
}

void Writer::note_result(int rc, const char* what) {
    std::lock_guard lock(m_error_mutex);
    if (rc == 0) {
        if (m_failing) {
            LOG_INFO("store " + m_env->dir().string() + ": writes succeed again");
            m_failing = false;
        }
        return;
    }
    std::string message = std::string(what) + ": " + mdb_strerror(rc);
    m_last_error = message;
    ++m_dropped_since_warning;
    auto now = std::chrono::steady_clock::now();
    // One warning when writes start failing, then at most one per interval: a full disk must
    // not turn into a log line per compile.
    if (!m_failing || now - m_last_warning >= k_warning_interval) {
        LOG_WARN("store " + m_env->dir().string() + ": " + message + " (" +
                 std::to_string(m_dropped_since_warning) +
                 " write batch(es) dropped; reads continue)");
        m_last_warning = now;
        m_dropped_since_warning = 0;
    }
    m_failing = true;
}

std::optional<std::string> Writer::last_error() const {
    std::lock_guard lock(m_error_mutex);
    return m_last_error;
}

} // namespace cachecore::store
