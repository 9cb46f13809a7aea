#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cachecore::util {

// One `key = value` setting, in the `-o` vocabulary (store, max_size, python, ...). `origin`
// names where it came from ("/etc/pycachefs.conf:3", "PYCACHEFS_STORE", "-o", "--store") so
// that an invalid value can be reported with the place to fix it.
struct Setting {
    std::string key;
    std::string value;
    std::string origin;
};

// Keys are compared with dashes and underscores alike, ASCII case-insensitively; `ro` is `rw=0`.
Setting normalize_setting(Setting setting);

struct ConfigParse {
    std::vector<Setting> settings;
    std::vector<std::string> errors; // "FILE:LINE: why"
};

// `key = value` lines; `#` starts a comment (whole line, or after whitespace); blank lines are
// ignored; a bare `key` is `key =` (a flag). Values may be quoted with "..." to keep spaces or #.
ConfigParse parse_config(std::string_view text, const std::string& file_name);

// nullopt when the file does not exist; errors (unreadable file, bad lines) go to the result.
std::optional<ConfigParse> load_config_file(const std::string& path);

// Keys that may come from PYCACHEFS_<KEY> environment variables, e.g. PYCACHEFS_MAX_SIZE.
const std::vector<std::string>& environment_keys();
// The settings the environment gives; PYCACHEFS_PYTHON is colon-separated (one setting each).
std::vector<Setting>
settings_from_environment(const std::function<const char*(const char*)>& getenv_fn);

// Keys whose values accumulate within one source (`python` is repeatable).
bool is_multi_valued(std::string_view key);

// Layers from lowest to highest precedence. For each key the highest layer that sets it wins
// (for a multi-valued key: all of that layer's values). Order: first appearance.
std::vector<Setting> merge_settings(const std::vector<std::vector<Setting>>& layers);

} // namespace cachecore::util
