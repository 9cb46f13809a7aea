#pragma once

#include "cachecore/store/environment.hpp"

#include <cstdint>
#include <lmdb.h>

namespace cachecore::store {

// Minutes since the epoch: access times are coarse on purpose (few writes for hot entries).
std::uint32_t now_minutes();

// Inside a write transaction: removes least-recently-accessed entries (and their access times)
// until the used size is at most `target_bytes`. Returns how many entries went.
std::uint64_t evict_until(Environment& env, MDB_txn* txn, std::uint64_t target_bytes);

} // namespace cachecore::store
