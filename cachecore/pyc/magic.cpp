#include "cachecore/pyc/magic.hpp"

#include "cachecore/util/hex.hpp"

namespace cachecore::pyc {

std::string magic_hex(const Magic& m) {
    return util::to_hex({reinterpret_cast<const char*>(m.data()), m.size()});
}

} // namespace cachecore::pyc
