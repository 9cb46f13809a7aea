#pragma once

#include <string_view>

namespace cachecore::python {

// The embedded worker script (cachecore/python/driver.py), run as `python -I -S -c <script>`.
std::string_view driver_source();

} // namespace cachecore::python
