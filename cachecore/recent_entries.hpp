#pragma once

#include "cachecore/store/entry.hpp"
#include "cachecore/store/store_key.hpp"

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

namespace cachecore {

// Entries this process put recently. Store::put is write-behind (a batch commits some ms later),
// so without this a second request right after a compile would miss and compile again. Entries
// are content-addressed and immutable, so keeping them a little longer than needed is harmless.
class RecentEntries {
public:
    explicit RecentEntries(std::size_t max_entries = 4096, std::size_t max_bytes = 64u << 20)
        : m_max_entries(max_entries), m_max_bytes(max_bytes) {}

    void put(const store::StoreKey& key, const store::Entry& entry);
    std::optional<store::Entry> get(const store::StoreKey& key) const;

private:
    static std::size_t cost(const store::Entry& e) {
        return e.code.size() + e.error.message.size() + 64;
    }

    std::size_t m_max_entries;
    std::size_t m_max_bytes;
    mutable std::mutex m_mutex;
    std::map<store::StoreKey, store::Entry> m_map;
    std::deque<store::StoreKey> m_order; // oldest first
    std::size_t m_bytes = 0;
};

} // namespace cachecore
