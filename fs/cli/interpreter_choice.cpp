#include "fs/cli/interpreter_choice.hpp"

#include <set>
#include <tuple>

namespace fs::cli {

using cachecore::python::Interpreter;

std::string choose_interpreters(const std::vector<std::string>& pythons,
                                std::vector<Interpreter>& served,
                                std::vector<std::string>& listed) {
    cachecore::python::DiscoveryOptions d;
    d.explicit_paths = pythons;
    d.search_default_locations = pythons.empty();
    auto found = cachecore::python::discover(d);
    if (!found.errors.empty()) return found.errors.front();
    if (found.interpreters.empty())
        return pythons.empty()
                   ? "no CPython 3.6+ interpreter found on PATH, in /usr/bin, /usr/local/bin or "
                     "pyenv (install one or pass --python PATH)"
                   : "none of the --python interpreters is a usable CPython 3.6+";
    served = std::move(found.interpreters);
    std::set<std::string> seen;
    if (!pythons.empty()) {
        for (const auto& i : served)
            if (seen.insert(i.cache_tag).second) listed.push_back(i.cache_tag);
        return {};
    }
    // Listing names the pycs of the interpreter `python3` runs, else of the newest one.
    std::string default_tag;
    if (auto py3 = cachecore::python::probe("python3"); py3) default_tag = py3->cache_tag;
    for (const auto& i : served)
        if (i.cache_tag == default_tag) listed.push_back(default_tag);
    if (listed.empty()) {
        const Interpreter* newest = &served.front();
        for (const auto& i : served)
            if (std::tie(i.major, i.minor) > std::tie(newest->major, newest->minor)) newest = &i;
        listed.push_back(newest->cache_tag);
    }
    return {};
}

std::vector<Interpreter> first_per_cache_tag(const std::vector<Interpreter>& interpreters) {
    std::vector<Interpreter> out;
    std::set<std::string> seen;
    for (const auto& i : interpreters)
        if (seen.insert(i.cache_tag).second) out.push_back(i);
    return out;
}

} // namespace fs::cli
