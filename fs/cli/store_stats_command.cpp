// `pycachefs stats` without a mount point: the store, as `ccache -s` shows its cache.
#include "cachecore/python/interpreter.hpp"
#include "cachecore/util/size.hpp"
#include "fs/cli/commands.hpp"
#include "fs/cli/store_access.hpp"

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

namespace fs::cli {
namespace {

struct PerMagic {
    std::uint64_t code = 0, errors = 0, bytes = 0;
    std::map<int, std::uint64_t> per_optimize;
};

nlohmann::json counters_json(const cachecore::store::Counters& c) {
    return {{"hits", c.hits},
            {"misses", c.misses},
            {"compiles", c.compiles},
            {"compile_errors", c.compile_errors},
            {"pycs_served", c.pycs_served},
            {"bytes_served", c.bytes_served},
            {"compile_seconds", c.compile_seconds}};
}

// magic hex -> "cpython-312 (3.12.1)" for every interpreter this machine has (and the configured
// ones); a store may hold entries of interpreters that are gone, shown by their magic.
std::map<std::string, cachecore::python::Interpreter>
interpreters_by_magic(const std::vector<std::string>& pythons) {
    cachecore::python::DiscoveryOptions d;
    d.explicit_paths = pythons;
    auto found = cachecore::python::discover(d);
    std::map<std::string, cachecore::python::Interpreter> out;
    for (const auto& i : found.interpreters) out.emplace(cachecore::pyc::magic_hex(i.magic), i);
    return out;
}

// Release magic numbers, for entries whose interpreter discovery does not find (another machine's
// store, or a PATH without it).
std::string tag_of_release_magic(const std::string& magic_hex) {
    static const std::map<std::string, std::string> k_release = {
        {"330d0d0a", "cpython-36"},  {"420d0d0a", "cpython-37"},  {"550d0d0a", "cpython-38"},
        {"610d0d0a", "cpython-39"},  {"6f0d0d0a", "cpython-310"}, {"a70d0d0a", "cpython-311"},
        {"cb0d0d0a", "cpython-312"}, {"f30d0d0a", "cpython-313"},
    };
    auto it = k_release.find(magic_hex);
    return it == k_release.end() ? "magic-" + magic_hex : it->second;
}

} // namespace

int run_store_stats(const Settings& cli, bool json, bool zero) {
    auto options = resolve_command_options(cli);
    if (!options) return 2;
    auto store = open_store(*options, true);
    if (!store) return 1;
    if (zero) {
        store->zero_counters();
        if (!json) std::printf("counters of %s reset\n", options->store.c_str());
    }
    const auto usage = store->usage();
    const auto counters = store->counters();
    std::map<std::string, PerMagic> per_magic;
    store->for_each_key([&](const cachecore::store::StoreKey& key, cachecore::store::EntryKind kind,
                            std::size_t size) {
        auto& m = per_magic[cachecore::pyc::magic_hex(key.magic)];
        ++(kind == cachecore::store::EntryKind::Code ? m.code : m.errors);
        m.bytes += size;
        ++m.per_optimize[key.optimize];
        return true;
    });
    const auto known = interpreters_by_magic(options->pythons);
    cachecore::store::Counters totals;
    for (const auto& [tag, c] : counters) totals += c;

    nlohmann::json j;
    j["store"] = options->store;
    j["entries"] = usage.entries;
    j["code_entries"] = usage.entries - usage.error_entries;
    j["error_entries"] = usage.error_entries;
    j["bytes"] = usage.bytes;
    j["limit"] = usage.limit;
    j["file_bytes"] = usage.file_bytes;
    j["counters"] = nlohmann::json::object();
    for (const auto& [tag, c] : counters) j["counters"][tag] = counters_json(c);
    j["totals"] = counters_json(totals);
    j["interpreters"] = nlohmann::json::object();
    for (const auto& [magic, m] : per_magic) {
        auto it = known.find(magic);
        const std::string name =
            it != known.end() ? it->second.cache_tag : tag_of_release_magic(magic);
        nlohmann::json e = {{"magic", magic},
                            {"entries", m.code + m.errors},
                            {"code_entries", m.code},
                            {"error_entries", m.errors},
                            {"value_bytes", m.bytes}};
        if (it != known.end()) {
            e["version"] = it->second.version;
            e["path"] = it->second.path;
        }
        for (const auto& [opt, n] : m.per_optimize) e["optimize"][std::to_string(opt)] = n;
        j["interpreters"][name] = e;
    }
    if (json) {
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }

    using cachecore::util::format_size;
    const double percent = usage.limit ? 100.0 * double(usage.bytes) / double(usage.limit) : 0;
    std::printf("store            %s\n", options->store.c_str());
    std::printf("entries          %llu (%llu code, %llu compile errors)\n",
                (unsigned long long)usage.entries,
                (unsigned long long)(usage.entries - usage.error_entries),
                (unsigned long long)usage.error_entries);
    std::printf("size             %s of %s (%.1f%%)\n", format_size(usage.bytes).c_str(),
                format_size(usage.limit).c_str(), percent);
    std::printf("file size        %s\n", format_size(usage.file_bytes).c_str());
    std::printf("\n%-14s %9s %9s %9s %9s %9s %11s %9s\n", "counters", "hits", "misses", "compiles",
                "errors", "served", "bytes", "compile s");
    auto row = [](const std::string& name, const cachecore::store::Counters& c) {
        std::printf("%-14s %9llu %9llu %9llu %9llu %9llu %11s %9.2f\n", name.c_str(),
                    (unsigned long long)c.hits, (unsigned long long)c.misses,
                    (unsigned long long)c.compiles, (unsigned long long)c.compile_errors,
                    (unsigned long long)c.pycs_served, format_size(c.bytes_served).c_str(),
                    c.compile_seconds);
    };
    for (const auto& [tag, c] : counters) row(tag, c);
    row("total", totals);
    std::printf("\n%-14s %9s %9s %9s %11s  %s\n", "entries of", "code", "errors", "opt 0/1/2",
                "bytes", "interpreter");
    for (const auto& [name, e] : j["interpreters"].items()) {
        const auto& opt = e.contains("optimize") ? e["optimize"] : nlohmann::json::object();
        std::string levels;
        for (const char* l : {"0", "1", "2"}) {
            if (!levels.empty()) levels += '/';
            levels += std::to_string(opt.contains(l) ? opt[l].get<std::uint64_t>() : 0);
        }
        std::printf(
            "%-14s %9llu %9llu %9s %11s  %s\n", name.c_str(),
            (unsigned long long)e["code_entries"].get<std::uint64_t>(),
            (unsigned long long)e["error_entries"].get<std::uint64_t>(), levels.c_str(),
            format_size(e["value_bytes"].get<std::uint64_t>()).c_str(),
            e.contains("path")
                ? (e["version"].get<std::string>() + " " + e["path"].get<std::string>()).c_str()
                : "(not on this machine)");
    }
    return 0;
}

} // namespace fs::cli
