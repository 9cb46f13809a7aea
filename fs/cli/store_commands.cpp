// `pycachefs gc`, `clear`, `verify`: store maintenance. LMDB serializes writers across processes,
// so all of them are safe while mounts use the store.
#include "cachecore/util/size.hpp"
#include "fs/cli/commands.hpp"
#include "fs/cli/store_access.hpp"

#include <cstdio>

namespace fs::cli {
namespace {

// 1 (and the reason on stderr) when the store could not commit what the command changed.
int write_status(const cachecore::store::Store& store) {
    if (auto err = store.last_write_error()) {
        std::fprintf(stderr, "pycachefs: %s\n", err->c_str());
        return 1;
    }
    return 0;
}

} // namespace

int run_gc(const Settings& cli) {
    auto options = resolve_command_options(cli);
    if (!options) return 2;
    auto store = open_store(*options, true);
    if (!store) return 1;
    const auto limit = store->options().max_size;
    const auto before = store->usage();
    const auto removed = store->evict_to(limit);
    const auto after = store->usage();
    std::printf("removed %llu entries (%s -> %s, limit %s); %llu entries left\n",
                (unsigned long long)removed, cachecore::util::format_size(before.bytes).c_str(),
                cachecore::util::format_size(after.bytes).c_str(),
                cachecore::util::format_size(limit).c_str(), (unsigned long long)after.entries);
    return write_status(*store);
}

int run_clear(const Settings& cli) {
    auto options = resolve_command_options(cli);
    if (!options) return 2;
    auto store = open_store(*options, true);
    if (!store) return 1;
    const auto before = store->usage();
    store->clear();
    std::printf("removed %llu entries (%s) from %s\n", (unsigned long long)before.entries,
                cachecore::util::format_size(before.bytes).c_str(), options->store.c_str());
    return write_status(*store);
}

int run_verify(const Settings& cli) {
    auto options = resolve_command_options(cli);
    if (!options) return 2;
    auto store = open_store(*options, true);
    if (!store) return 1;
    const auto report = store->verify();
    for (const auto& p : report.problems) std::printf("bad entry: %s\n", p.c_str());
    std::printf("checked %llu entries, removed %llu bad ones\n", (unsigned long long)report.checked,
                (unsigned long long)report.removed);
    return report.problems.empty() && report.removed == 0 ? 0 : 1;
}

} // namespace fs::cli
