#pragma once

#include "cachecore/hash/content_hash.hpp"
#include "cachecore/util/file_id.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <sys/stat.h>
#include <unordered_map>

namespace cachecore {

// What identifies one version of a source file without reading it.
struct SourceStamp {
    dev_t dev = 0;
    ino_t ino = 0;
    std::int64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;

    static SourceStamp of(const struct stat& st);
    std::int64_t mtime_sec() const; // floor division, as CPython's int(st_mtime)
    bool operator==(const SourceStamp&) const = default;
};

// (dev, ino, size, mtime_ns, ctime_ns) -> content hash, so an unchanged source is never re-read.
// Stamps changed within the last `racy_window` are not remembered: a same-size write inside one
// timestamp tick would otherwise keep its old hash (ccache's "racy clean" rule).
class SourceMemo {
public:
    explicit SourceMemo(std::size_t capacity = 1 << 18,
                        std::int64_t racy_window_ns = 2'000'000'000);

    std::optional<hash::ContentHash> find(const SourceStamp& stamp) const;
    // False when the stamp is too recent to be trusted (and was not remembered).
    bool remember(const SourceStamp& stamp, const hash::ContentHash& content);
    std::size_t size() const;

private:
    using Key = util::FileId;
    using KeyHash = util::FileIdHash;
    struct Value {
        SourceStamp stamp;
        hash::ContentHash content;
    };
    static constexpr std::size_t k_shards = 16;
    struct Shard {
        mutable std::mutex mutex;
        std::unordered_map<Key, Value, KeyHash> map;
    };
    Shard& shard(const Key& k) const { return m_shards[KeyHash{}(k) % k_shards]; }

    std::size_t m_capacity_per_shard;
    std::int64_t m_racy_window_ns;
    mutable Shard m_shards[k_shards];
};

} // namespace cachecore
