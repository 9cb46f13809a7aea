#include "cachecore/store/environment.hpp"

#include "cachecore/store/lmdb_txn.hpp"
#include "cachecore/store/store.hpp"
#include "cachecore/util/log.hpp"

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <sys/stat.h>

namespace cachecore::store {

namespace {

constexpr unsigned k_max_readers = 1024;
constexpr std::size_t k_max_pooled_readers = 64;
// No MDB_WRITEMAP: a full disk must show up as an error from commit, not as SIGBUS on a store
// into the map. MDB_NOMETASYNC keeps the file consistent across a crash (only the last commit
// can be lost, which a cache does not mind) at one fsync per batch.
constexpr unsigned k_env_flags = MDB_NOTLS | MDB_NOMETASYNC | MDB_NORDAHEAD;

using DirId = std::pair<dev_t, ino_t>;

// Process-wide: directory -> its environment. An entry whose environment is closing stays until
// the close is done, so a new open never overlaps the old environment's locks.
struct Registry {
    std::mutex mutex;
    std::condition_variable closed;
    std::map<DirId, std::weak_ptr<Environment>> open;
};

Registry& registry() {
    static Registry r;
    return r;
}

[[noreturn]] void fail(const std::filesystem::path& dir, const std::string& problem) {
    throw StoreError("cannot open store " + dir.string() + ": " + problem);
}

void make_directory(const std::filesystem::path& dir) {
    // Missing parents (e.g. ~/.cache) are created 0700 too, whatever the umask: they hold the
    // store, which reveals sources.
    std::filesystem::path partial;
    for (const auto& part : dir.parent_path()) {
        partial /= part;
        if (::mkdir(partial.c_str(), 0700) == 0) ::chmod(partial.c_str(), 0700);
    }
    if (::mkdir(dir.c_str(), 0700) == 0) {
        ::chmod(dir.c_str(), 0700); // exact mode whatever the umask
    } else if (errno != EEXIST) {
        fail(dir, std::strerror(errno));
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) fail(dir, std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) fail(dir, "not a directory");
}

} // namespace

Environment::Environment(std::filesystem::path dir) : m_dir(std::move(dir)) {}

std::shared_ptr<Environment> Environment::open(const std::filesystem::path& dir,
                                               std::uint64_t map_size) {
    make_directory(dir);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) fail(dir, std::strerror(errno));
    DirId id{st.st_dev, st.st_ino};

    Registry& reg = registry();
    std::unique_lock lock(reg.mutex);
    for (;;) {
        auto it = reg.open.find(id);
        if (it == reg.open.end()) break;
        if (auto env = it->second.lock()) return env;
        reg.closed.wait(lock); // the previous environment is still closing
    }

    std::unique_ptr<Environment> env(new Environment(dir));
    auto check = [&](int rc) {
        if (rc != 0) fail(dir, mdb_strerror(rc));
    };
    check(mdb_env_create(&env->m_env));
    check(mdb_env_set_maxreaders(env->m_env, k_max_readers));
    check(mdb_env_set_maxdbs(env->m_env, 8));
    // Virtual only: the file grows as pages are used. Fixed up front so resizing is rare (only
    // when another process opened with a larger map).
    check(mdb_env_set_mapsize(env->m_env, static_cast<std::size_t>(map_size)));
    check(mdb_env_open(env->m_env, dir.c_str(), k_env_flags, 0600));
    int dead = 0;
    check(mdb_reader_check(env->m_env, &dead));
    if (dead > 0) {
        LOG_INFO("store " + dir.string() + ": cleared " + std::to_string(dead) + " stale readers");
    }

    int rc = env->write([&](MDB_txn* txn) {
        lmdb::check(mdb_dbi_open(txn, k_entries_db, MDB_CREATE, &env->m_entries), "open entries");
        lmdb::check(mdb_dbi_open(txn, k_atimes_db, MDB_CREATE, &env->m_atimes), "open atimes");
        lmdb::check(mdb_dbi_open(txn, k_counters_db, MDB_CREATE, &env->m_counters),
                    "open counters");
        lmdb::check(mdb_dbi_open(txn, k_stamps_db, MDB_CREATE, &env->m_stamps), "open stamps");
        lmdb::check(mdb_dbi_open(txn, k_imports_db, MDB_CREATE, &env->m_imports), "open imports");
    });
    check(rc);

    // The deleter closes first, then unregisters, so a concurrent open waits for the close.
    std::shared_ptr<Environment> shared(env.release(), [id](Environment* e) {
        delete e;
        Registry& r = registry();
        std::lock_guard l(r.mutex);
        r.open.erase(id);
        r.closed.notify_all();
    });
    reg.open[id] = shared;
    return shared;
}

Environment::~Environment() {
    for (MDB_txn* txn : m_pool) mdb_txn_abort(txn);
    if (m_env) mdb_env_close(m_env);
}

Environment::ReadLease::ReadLease(ReadLease&& other) noexcept
    : m_env(other.m_env), m_lock(std::move(other.m_lock)),
      m_txn(std::exchange(other.m_txn, nullptr)) {}

Environment::ReadLease::~ReadLease() {
    if (m_txn) m_env->give_back(m_txn); // before the map lock is released
}

Environment::ReadLease Environment::read() {
    for (;;) {
        std::shared_lock lock(m_map_lock);
        MDB_txn* txn = nullptr;
        {
            std::lock_guard pool(m_pool_mutex);
            if (!m_pool.empty()) {
                txn = m_pool.back();
                m_pool.pop_back();
            }
        }
        int rc;
        if (txn) {
            rc = mdb_txn_renew(txn);
            if (rc != 0) mdb_txn_abort(txn);
        } else {
            rc = mdb_txn_begin(m_env, nullptr, MDB_RDONLY, &txn);
        }
        if (rc == 0) return ReadLease(this, std::move(lock), txn);
        if (rc != MDB_MAP_RESIZED) throw lmdb::Failure(rc, "read transaction");
        lock.unlock();
        adopt_map_size();
    }
}

void Environment::give_back(MDB_txn* txn) {
    mdb_txn_reset(txn);
    std::lock_guard pool(m_pool_mutex);
    if (m_pool.size() < k_max_pooled_readers) {
        m_pool.push_back(txn);
    } else {
        mdb_txn_abort(txn);
    }
}

void Environment::adopt_map_size() {
    // Exclusive: no transaction of this process is live while the map is replaced.
    std::unique_lock lock(m_map_lock);
    int rc = mdb_env_set_mapsize(m_env, 0);
    if (rc != 0)
        LOG_WARN("store " + m_dir.string() + ": cannot adopt map size: " + mdb_strerror(rc));
}

int Environment::write(const std::function<void(MDB_txn*)>& body) {
    for (;;) {
        std::shared_lock lock(m_map_lock);
        MDB_txn* raw = nullptr;
        int rc = mdb_txn_begin(m_env, nullptr, 0, &raw);
        if (rc == MDB_MAP_RESIZED) {
            lock.unlock();
            adopt_map_size();
            continue;
        }
        if (rc != 0) return rc;
        lmdb::Txn txn(raw);
        try {
            body(txn.get());
        } catch (const lmdb::Failure& e) {
            return e.code;
        }
        return txn.commit();
    }
}

std::uint64_t Environment::used_bytes(MDB_txn* txn) const {
    std::uint64_t pages = 0;
    unsigned page_size = 0;
    for (MDB_dbi dbi : {m_entries, m_atimes}) {
        MDB_stat st{};
        if (mdb_stat(txn, dbi, &st) != 0) continue;
        page_size = st.ms_psize;
        pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    }
    return pages * page_size;
}

} // namespace cachecore::store
