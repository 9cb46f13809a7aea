#include "fs/cli/settings.hpp"

#include "cachecore/util/log.hpp"

#include <array>
#include <cstdlib>

namespace fs::cli {
namespace {

using cachecore::util::Setting;

// Reads one config file into `layer`; returns the first error (with FILE:LINE), or empty.
std::string load_layer(const std::string& path, std::vector<Setting>& layer) {
    auto parsed = cachecore::util::load_config_file(path);
    if (!parsed) return {};
    if (!parsed->errors.empty()) return parsed->errors.front();
    LOG_DEBUG("configuration file " + path);
    layer = std::move(parsed->settings);
    return {};
}

} // namespace

std::string system_config_path() {
    if (const char* p = std::getenv("PYCACHEFS_CONF"); p && *p) return p;
    return "/etc/pycachefs.conf";
}

std::string resolve_options(const std::vector<Setting>& cli, const std::vector<std::string>& o,
                            MountOptions& options) {
    std::vector<Setting> system_layer, store_layer, o_layer;
    if (auto err = load_layer(system_config_path(), system_layer); !err.empty()) return err;
    auto env_layer = cachecore::util::settings_from_environment(
        [](const char* name) { return std::getenv(name); });
    for (const auto& text : o)
        for (auto& s : split_o_options(text)) o_layer.push_back(std::move(s));

    std::string store;
    for (const auto& s : cachecore::util::merge_settings({system_layer, env_layer, o_layer, cli}))
        if (s.key == "store") store = s.value;
    if (store.empty()) store = default_store_dir();

    const std::string store_conf = store + "/pycachefs.conf";
    if (auto err = load_layer(store_conf, store_layer); !err.empty()) return err;
    for (const auto& s : store_layer)
        if (s.key == "store")
            return s.origin + ": 'store' cannot be set inside the store directory (set it in " +
                   system_config_path() + ", PYCACHEFS_STORE or with --store)";

    // Every layer must be valid on its own: a broken file is reported even while overridden.
    const std::array<const std::vector<Setting>*, 5> layers = {&system_layer, &store_layer,
                                                               &env_layer, &o_layer, &cli};
    for (const auto* layer : layers) {
        MountOptions scratch;
        for (const auto& s : *layer)
            if (auto err = apply_setting(s, scratch); !err.empty()) return err;
    }

    const std::string source = options.source, mountpoint = options.mountpoint;
    options = MountOptions{};
    options.source = source;
    options.mountpoint = mountpoint;
    auto merged =
        cachecore::util::merge_settings({system_layer, store_layer, env_layer, o_layer, cli});
    for (const auto& s : merged)
        if (auto err = apply_setting(s, options); !err.empty()) return err;
    options.store = store;
    return {};
}

} // namespace fs::cli
