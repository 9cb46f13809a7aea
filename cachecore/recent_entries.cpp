#include "cachecore/recent_entries.hpp"

namespace cachecore {

void RecentEntries::put(const store::StoreKey& key, const store::Entry& entry) {
    std::lock_guard lock(m_mutex);
    auto [it, inserted] = m_map.insert_or_assign(key, entry);
    if (inserted) m_order.push_back(key);
    m_bytes += cost(entry);
    while (!m_order.empty() && (m_map.size() > m_max_entries || m_bytes > m_max_bytes)) {
        auto old = m_map.find(m_order.front());
        if (old != m_map.end()) {
            m_bytes -= std::min(m_bytes, cost(old->second));
            m_map.erase(old);
        }
        m_order.pop_front();
    }
}

std::optional<store::Entry> RecentEntries::get(const store::StoreKey& key) const {
    std::lock_guard lock(m_mutex);
    auto it = m_map.find(key);
    if (it == m_map.end()) return std::nullopt;
    return it->second;
}

} // namespace cachecore
