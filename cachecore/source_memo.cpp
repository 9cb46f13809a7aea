#include "cachecore/source_memo.hpp"

#include <algorithm>
#include <time.h>

namespace cachecore {

namespace {

constexpr std::int64_t k_ns = 1'000'000'000;

std::int64_t to_ns(const struct timespec& ts) {
    return std::int64_t(ts.tv_sec) * k_ns + ts.tv_nsec;
}

std::int64_t now_ns() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return to_ns(ts);
}

} // namespace

SourceStamp SourceStamp::of(const struct stat& st) {
    SourceStamp s;
    s.dev = st.st_dev;
    s.ino = st.st_ino;
    s.size = st.st_size;
    s.mtime_ns = to_ns(st.st_mtim);
    s.ctime_ns = to_ns(st.st_ctim);
    return s;
}

std::int64_t SourceStamp::mtime_sec() const {
    // CPython's int(st_mtime): os.stat builds the float as `sec + nsec * 1e-9` in double precision
    // and int() truncates toward zero. Reproduce that exactly, double rounding included (an
    // mtime of X.999999999 is X+1 in CPython's eyes for present-day X; -100.5 gives -100).
    std::int64_t sec = mtime_ns / k_ns;
    std::int64_t nsec = mtime_ns % k_ns;
    if (nsec < 0) {
        nsec += k_ns;
        sec -= 1;
    }
    const double seconds = double(sec) + double(nsec) * 1e-9;
    return std::int64_t(seconds); // truncation toward zero, like int(float)
}

SourceMemo::SourceMemo(std::size_t capacity, std::int64_t racy_window_ns)
    : m_capacity_per_shard(std::max<std::size_t>(1, capacity / k_shards)),
      m_racy_window_ns(racy_window_ns) {}

std::optional<hash::ContentHash> SourceMemo::find(const SourceStamp& stamp) const {
    const Key key{stamp.dev, stamp.ino};
    Shard& s = shard(key);
    std::lock_guard lock(s.mutex);
    auto it = s.map.find(key);
    if (it == s.map.end() || !(it->second.stamp == stamp)) return std::nullopt;
    return it->second.content;
}

bool SourceMemo::remember(const SourceStamp& stamp, const hash::ContentHash& content) {
    const Key key{stamp.dev, stamp.ino};
    // A stamp from the last racy_window (or the future) may be followed by another write that
    // keeps the same size and timestamps; trusting it could pin the old content forever.
    const std::int64_t now = now_ns();
    if (now - stamp.mtime_ns < m_racy_window_ns || now - stamp.ctime_ns < m_racy_window_ns) {
        Shard& s = shard(key);
        std::lock_guard lock(s.mutex);
        s.map.erase(key); // whatever we knew about this inode is older still
        return false;
    }
    Shard& s = shard(key);
    std::lock_guard lock(s.mutex);
    auto it = s.map.find(key);
    if (it != s.map.end()) {
        it->second = Value{stamp, content};
        return true;
    }
    if (s.map.size() >= m_capacity_per_shard) {
        // Arbitrary eviction: a forgotten stamp costs one re-read and re-hash, nothing more.
        s.map.erase(s.map.begin());
    }
    s.map.emplace(key, Value{stamp, content});
    return true;
}

std::size_t SourceMemo::size() const {
    std::size_t total = 0;
    for (const auto& s : m_shards) {
        std::lock_guard lock(s.mutex);
        total += s.map.size();
    }
    return total;
}

} // namespace cachecore
