#pragma once

#include "cachecore/python/interpreter.hpp"

#include <string>
#include <vector>

namespace fs::cli {

// The interpreters a mount serves (and `warm` compiles for): the given --python paths, else
// every CPython 3.6+ discovered. `listed`: the cache tags whose pycs a directory listing shows.
// Returns an error message naming the fix, or empty.
std::string choose_interpreters(const std::vector<std::string>& pythons,
                                std::vector<cachecore::python::Interpreter>& served,
                                std::vector<std::string>& listed);

// One interpreter per cache tag, the first one winning (as a mount picks them).
std::vector<cachecore::python::Interpreter>
first_per_cache_tag(const std::vector<cachecore::python::Interpreter>& interpreters);

} // namespace fs::cli
