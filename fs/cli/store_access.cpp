#include "fs/cli/store_access.hpp"

#include "cachecore/util/log.hpp"
#include "fs/cli/settings.hpp"

#include <cstdio>
#include <filesystem>
#include <sys/stat.h>

namespace fs::cli {

std::optional<MountOptions> resolve_command_options(const Settings& cli) {
    MountOptions o;
    if (auto err = resolve_options(cli, {}, o); !err.empty()) {
        std::fprintf(stderr, "pycachefs: %s\n", err.c_str());
        return std::nullopt;
    }
    cachecore::util::LogLevel level = cachecore::util::LogLevel::Warning;
    if (!o.log_level.empty()) cachecore::util::parse_log_level(o.log_level, level);
    if (o.debug) level = cachecore::util::LogLevel::Debug;
    cachecore::util::log_set_level(level);
    std::error_code ec;
    auto abs = std::filesystem::absolute(o.store, ec);
    if (!ec) o.store = abs.lexically_normal().string();
    return o;
}

std::unique_ptr<cachecore::store::Store> open_store(const MountOptions& o, bool must_exist) {
    struct stat st;
    if (must_exist && ::stat((o.store + "/data.mdb").c_str(), &st) < 0) {
        std::fprintf(stderr,
                     "pycachefs: no store at '%s' (pass --store DIR or set PYCACHEFS_STORE; "
                     "`pycachefs mount` and `pycachefs warm` create it)\n",
                     o.store.c_str());
        return nullptr;
    }
    try {
        cachecore::store::StoreOptions so;
        so.dir = o.store;
        if (o.max_size) so.max_size = *o.max_size;
        return std::make_unique<cachecore::store::Store>(so);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "pycachefs: %s\n", e.what());
        return nullptr;
    }
}

} // namespace fs::cli
