#pragma once

#include "cachecore/store/environment.hpp"

#include <cstdint>
#include <lmdb.h>

namespace cachecore::store {

// Milliseconds since the epoch, the unit of stored access times. Fine-grained so that a batch
// just written is never mistaken for old; coarseness lives in how rarely a get re-records one.
std::uint64_t now_millis();

// Inside a write transaction: removes least-recently-accessed entries (and their access times)
// until the used size is at most `target_bytes`. Returns how many entries went.
std::uint64_t evict_until(Environment& env, MDB_txn* txn, std::uint64_t target_bytes);

} // namespace cachecore::store
