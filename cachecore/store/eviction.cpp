#include "cachecore/store/eviction.hpp"

#include "cachecore/store/le_bytes.hpp"
#include "cachecore/store/lmdb_txn.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace cachecore::store {

std::uint64_t now_millis() {
    auto now = std::chrono::system_clock::now().time_since_epoch();
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
}

namespace {

struct Candidate {
    std::uint64_t atime;
    std::string key;
};

// Both databases are keyed by the same bytes, so one merge pass pairs every entry with its
// access time (0, i.e. oldest, when it has none) and finds access times without an entry.
void scan(Environment& env, MDB_txn* txn, std::vector<Candidate>& candidates,
          std::vector<std::string>& orphans) {
    lmdb::Cursor entries(txn, env.entries());
    lmdb::Cursor atimes(txn, env.atimes());
    MDB_val ek{}, ev{}, ak{}, av{};
    bool have_e = entries.move(ek, ev, MDB_FIRST);
    bool have_a = atimes.move(ak, av, MDB_FIRST);
    while (have_e) {
        std::string_view key = lmdb::view(ek);
        int cmp = have_a ? lmdb::view(ak).compare(key) : 1;
        if (cmp < 0) {
            orphans.emplace_back(lmdb::view(ak));
            have_a = atimes.move(ak, av, MDB_NEXT);
            continue;
        }
        std::uint64_t atime = 0;
        if (cmp == 0) {
            if (av.mv_size == 8) atime = detail::load_u64(static_cast<const char*>(av.mv_data));
            have_a = atimes.move(ak, av, MDB_NEXT);
        }
        candidates.push_back({atime, std::string(key)});
        have_e = entries.move(ek, ev, MDB_NEXT);
    }
    while (have_a) {
        orphans.emplace_back(lmdb::view(ak));
        have_a = atimes.move(ak, av, MDB_NEXT);
    }
}

void del(MDB_txn* txn, MDB_dbi dbi, const std::string& key) {
    MDB_val k = lmdb::to_val(key);
    int rc = mdb_del(txn, dbi, &k, nullptr);
    if (rc != MDB_NOTFOUND) lmdb::check(rc, "evict");
}

} // namespace

std::uint64_t evict_until(Environment& env, MDB_txn* txn, std::uint64_t target_bytes) {
    if (env.used_bytes(txn) <= target_bytes) return 0;
    std::vector<Candidate> candidates;
    std::vector<std::string> orphans;
    scan(env, txn, candidates, orphans);
    for (const auto& key : orphans) del(txn, env.atimes(), key);

    // Oldest first. Ties (same minute) are broken by the content-hash part of the key, which is
    // effectively random, rather than by the magic prefix (that would evict one interpreter's
    // entries before another's).
    auto tail = [](const std::string& k) {
        return std::string_view(k).substr(std::min<std::size_t>(6, k.size()));
    };
    std::sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) {
        if (a.atime != b.atime) return a.atime < b.atime;
        return tail(a.key) < tail(b.key);
    });
    std::uint64_t removed = 0;
    for (const auto& c : candidates) {
        if (env.used_bytes(txn) <= target_bytes) break; // O(1): the txn's own page counts
        del(txn, env.entries(), c.key);
        del(txn, env.atimes(), c.key);
        ++removed;
    }
    return removed;
}

} // namespace cachecore::store
