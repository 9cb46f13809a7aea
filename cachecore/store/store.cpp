#include "cachecore/store/store.hpp"

#include "cachecore/store/counters_codec.hpp"
#include "cachecore/store/environment.hpp"
#include "cachecore/store/eviction.hpp"
#include "cachecore/store/le_bytes.hpp"
#include "cachecore/store/lmdb_txn.hpp"
#include "cachecore/store/writer.hpp"
#include "cachecore/util/hex.hpp"
#include "cachecore/util/log.hpp"

#include <algorithm>
#include <cstdint>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cachecore::store {

namespace {

// A get re-records an access only when the stored one is older than this: hot entries cost no
// writes, and LRU order at this resolution is plenty for eviction.
constexpr std::uint64_t k_touch_granularity_ms = 15 * 60 * 1000;
constexpr std::uint64_t k_min_map_size = 16ull << 30;

std::string key_string(const StoreKey& key) {
    auto bytes = key.bytes();
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

} // namespace

namespace {

// The map is opened without read-ahead (MDB_NORDAHEAD: B-tree pages are read at random), so a
// value that is not in memory would come in one page per fault, each a synchronous read: 25
// reads in a row for a 100 KiB module, ~10 ms on a virtual disk. Its pages are asked for at
// once instead (they are contiguous overflow pages), one read the copy then waits for.
void read_ahead(const MDB_val& v) {
    static const std::uintptr_t page = std::uintptr_t(::sysconf(_SC_PAGESIZE));
    if (v.mv_size <= page) return;
    const auto begin = reinterpret_cast<std::uintptr_t>(v.mv_data) & ~(page - 1);
    const auto end = reinterpret_cast<std::uintptr_t>(v.mv_data) + v.mv_size;
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
}

// A value of one of the side tables (stamps, import lists): a copy, or nullopt when missing or
// unreadable (they only save work, so a failure is a miss).
std::optional<std::string> get_side(Environment& env, const std::filesystem::path& dir, MDB_dbi dbi,
                                    std::string_view key, const char* what) {
    MDB_val kv{key.size(), const_cast<char*>(key.data())};
    try {
        auto lease = env.read();
        MDB_val v{};
        int rc = mdb_get(lease.txn(), dbi, &kv, &v);
        if (rc == MDB_NOTFOUND) return std::nullopt;
        lmdb::check(rc, what);
        return std::string(lmdb::view(v));
    } catch (const lmdb::Failure& e) {
        LOG_DEBUG("store " + dir.string() + ": " + e.what());
        return std::nullopt;
    }
}

} // namespace

struct Store::Impl {
    StoreOptions options;
    std::shared_ptr<Environment> env;
    std::unique_ptr<Writer> writer;
};

Store::Store(StoreOptions options) : m_impl(std::make_unique<Impl>()) {
    m_impl->options = std::move(options);
    const auto& o = m_impl->options;
    if (o.dir.empty()) throw StoreError("cannot open store: no directory given");
    m_impl->env = Environment::open(o.dir, std::max(k_min_map_size, 2 * o.max_size));
    m_impl->writer = std::make_unique<Writer>(m_impl->env, o.max_size, o.batch_interval);
}

Store::~Store() = default; // the writer commits its queue, then the environment may close

std::optional<Entry> Store::get(const StoreKey& key) {
    std::string k = key_string(key);
    MDB_val kv = lmdb::to_val(k);
    std::optional<Entry> entry;
    bool touch = false;
    try {
        auto lease = m_impl->env->read();
        MDB_val v{};
        int rc = mdb_get(lease.txn(), m_impl->env->entries(), &kv, &v);
        if (rc == MDB_NOTFOUND) return std::nullopt;
        lmdb::check(rc, "get");
        read_ahead(v);
        entry = decode_entry(lmdb::view(v)); // copies out of the map
        if (entry) {
            MDB_val a{};
            rc = mdb_get(lease.txn(), m_impl->env->atimes(), &kv, &a);
            touch =
                rc != 0 || a.mv_size != 8 ||
                detail::load_u64(static_cast<const char*>(a.mv_data)) + k_touch_granularity_ms <=
                    now_millis();
        }
    } catch (const lmdb::Failure& e) {
        // A read that cannot be done is a miss: the caller compiles instead.
        LOG_DEBUG("store " + m_impl->options.dir.string() + ": " + e.what());
        return std::nullopt;
    }
    if (!entry) {
        LOG_WARN("store " + m_impl->options.dir.string() + ": corrupt entry " + util::to_hex(k) +
                 " removed");
        m_impl->writer->remove_if_corrupt(std::move(k));
        return std::nullopt;
    }
    if (touch) m_impl->writer->touch(std::move(k));
    return entry;
}

std::optional<std::string> Store::get_stamp(std::string_view key) {
    return get_side(*m_impl->env, m_impl->options.dir, m_impl->env->stamps(), key, "get stamp");
}

std::optional<std::string> Store::get_imports(std::string_view key) {
    return get_side(*m_impl->env, m_impl->options.dir, m_impl->env->imports(), key, "get imports");
}

void Store::put_imports(std::string key, std::string value) {
    m_impl->writer->put_imports(std::move(key), std::move(value));
}

void Store::put_stamp(std::string key, std::string value) {
    if (key.size() < k_stamp_generation_size) return;
    m_impl->writer->put_stamp(std::move(key), std::move(value));
}

void Store::put(const StoreKey& key, Entry entry) {
    m_impl->writer->put(key_string(key), encode_entry(entry));
}

void Store::add_counters(const std::string& cache_tag, const Counters& delta) {
    m_impl->writer->add_counters(cache_tag, delta);
}

void Store::flush() {
    m_impl->writer->flush();
}

Usage Store::usage() {
    flush();
    Usage u;
    u.limit = m_impl->options.max_size;
    try {
        auto lease = m_impl->env->read();
        u.bytes = m_impl->env->used_bytes(lease.txn());
        lmdb::Cursor cursor(lease.txn(), m_impl->env->entries());
        MDB_val k{}, v{};
        for (bool ok = cursor.move(k, v, MDB_FIRST); ok; ok = cursor.move(k, v, MDB_NEXT)) {
            ++u.entries;
            if (peek_entry_kind(lmdb::view(v)) == EntryKind::CompileError) ++u.error_entries;
        }
    } catch (const lmdb::Failure& e) {
        LOG_WARN("store " + m_impl->options.dir.string() + ": usage: " + e.what());
    }
    struct stat st {};
    if (::stat((m_impl->options.dir / "data.mdb").c_str(), &st) == 0) {
        u.file_bytes = static_cast<std::uint64_t>(st.st_size);
    }
    return u;
}

std::map<std::string, Counters> Store::counters() {
    flush();
    std::map<std::string, Counters> out;
    try {
        auto lease = m_impl->env->read();
        lmdb::Cursor cursor(lease.txn(), m_impl->env->counters());
        MDB_val k{}, v{};
        for (bool ok = cursor.move(k, v, MDB_FIRST); ok; ok = cursor.move(k, v, MDB_NEXT)) {
            out.emplace(std::string(lmdb::view(k)), decode_counters(lmdb::view(v)));
        }
    } catch (const lmdb::Failure& e) {
        LOG_WARN("store " + m_impl->options.dir.string() + ": counters: " + e.what());
    }
    return out;
}

void Store::zero_counters() {
    flush();
    m_impl->writer->write_now(
        [&](MDB_txn* txn) {
            lmdb::check(mdb_drop(txn, m_impl->env->counters(), 0), "zero counters");
        },
        "zero counters");
}

VerifyReport Store::verify() {
    flush();
    VerifyReport report;
    std::vector<std::string> bad;
    try {
        auto lease = m_impl->env->read();
        lmdb::Cursor cursor(lease.txn(), m_impl->env->entries());
        MDB_val k{}, v{};
        for (bool ok = cursor.move(k, v, MDB_FIRST); ok; ok = cursor.move(k, v, MDB_NEXT)) {
            ++report.checked;
            std::optional<std::string> why;
            if (k.mv_size != StoreKey::k_size) {
                why = "key of " + std::to_string(k.mv_size) + " bytes";
            } else {
                why = entry_problem(lmdb::view(v));
            }
            if (!why) continue;
            bad.emplace_back(lmdb::view(k));
            report.problems.push_back(util::to_hex(bad.back()) + ": " + *why);
        }
    } catch (const lmdb::Failure& e) {
        report.problems.push_back(std::string("cannot read the store: ") + e.what());
        return report;
    }
    if (bad.empty()) return report;
    std::uint64_t removed = 0;
    int rc = m_impl->writer->write_now(
        [&](MDB_txn* txn) {
            removed = 0;
            for (const auto& key : bad) {
                MDB_val k = lmdb::to_val(key);
                MDB_val v{};
                // Re-checked: another process may have rewritten it since the walk.
                if (mdb_get(txn, m_impl->env->entries(), &k, &v) != 0) continue;
                if (key.size() == StoreKey::k_size && !entry_problem(lmdb::view(v))) continue;
                lmdb::check(mdb_del(txn, m_impl->env->entries(), &k, nullptr), "delete");
                int drc = mdb_del(txn, m_impl->env->atimes(), &k, nullptr);
                if (drc != MDB_NOTFOUND) lmdb::check(drc, "delete access time");
                ++removed;
            }
        },
        "verify");
    if (rc != 0) {
        report.problems.push_back(std::string("could not delete bad entries: ") + mdb_strerror(rc));
    } else {
        report.removed = removed;
    }
    return report;
}

std::uint64_t Store::evict_to(std::uint64_t target_bytes) {
    flush();
    std::uint64_t removed = 0;
    int rc = m_impl->writer->write_now(
        [&](MDB_txn* txn) { removed = evict_until(*m_impl->env, txn, target_bytes); }, "evict");
    return rc == 0 ? removed : 0;
}

void Store::clear() {
    flush();
    m_impl->writer->write_now(
        [&](MDB_txn* txn) {
            lmdb::check(mdb_drop(txn, m_impl->env->entries(), 0), "clear entries");
            lmdb::check(mdb_drop(txn, m_impl->env->atimes(), 0), "clear access times");
            lmdb::check(mdb_drop(txn, m_impl->env->stamps(), 0), "clear stamps");
            lmdb::check(mdb_drop(txn, m_impl->env->imports(), 0), "clear imports");
        },
        "clear");
}

void Store::for_each_key(
    const std::function<bool(const StoreKey&, EntryKind, std::size_t)>& visit) {
    try {
        auto lease = m_impl->env->read();
        lmdb::Cursor cursor(lease.txn(), m_impl->env->entries());
        MDB_val k{}, v{};
        for (bool ok = cursor.move(k, v, MDB_FIRST); ok; ok = cursor.move(k, v, MDB_NEXT)) {
            auto key = StoreKey::from_bytes(lmdb::view(k));
            auto kind = peek_entry_kind(lmdb::view(v));
            if (!key || !kind) continue; // another format version, or garbage verify will find
            if (!visit(*key, *kind, v.mv_size)) break;
        }
    } catch (const lmdb::Failure& e) {
        LOG_WARN("store " + m_impl->options.dir.string() + ": listing keys: " + e.what());
    }
}

const StoreOptions& Store::options() const {
    return m_impl->options;
}

std::optional<std::string> Store::last_write_error() const {
    return m_impl->writer->last_error();
}

} // namespace cachecore::store
