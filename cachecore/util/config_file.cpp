#include "cachecore/util/config_file.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace cachecore::util {
namespace {

std::string trim(std::string_view s) {
    const char* ws = " \t\r\n";
    auto b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    auto e = s.find_last_not_of(ws);
    return std::string(s.substr(b, e - b + 1));
}

// Cuts a `#` comment that starts the line or follows whitespace, outside double quotes.
std::string strip_comment(std::string_view line) {
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
        if (line[i] == '"') quoted = !quoted;
        if (line[i] == '#' && !quoted && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t'))
            return std::string(line.substr(0, i));
    }
    return std::string(line);
}

} // namespace

Setting normalize_setting(Setting s) {
    for (auto& c : s.key) {
        if (c == '-') c = '_';
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    }
    if (s.key == "ro") {
        s.key = "rw";
        const bool read_only =
            s.value.empty() || s.value == "1" || s.value == "yes" || s.value == "true";
        s.value.assign(1, read_only ? '0' : '1');
    }
    return s;
}

ConfigParse parse_config(std::string_view text, const std::string& file_name) {
    ConfigParse out;
    std::size_t line_no = 0;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        auto nl = text.find('\n', pos);
        std::string_view raw =
            text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
        ++line_no;
        const std::string where = file_name + ":" + std::to_string(line_no);
        std::string line = trim(strip_comment(raw));
        if (line.empty()) continue;
        auto eq = line.find('=');
        Setting s;
        s.key = trim(std::string_view(line).substr(0, eq));
        s.value = eq == std::string::npos ? "" : trim(std::string_view(line).substr(eq + 1));
        s.origin = where;
        if (s.key.empty() || s.key.find_first_of(" \t\"") != std::string::npos) {
            out.errors.push_back(where + ": expected 'key = value', got '" + line + "'");
            continue;
        }
        if (s.value.size() >= 2 && s.value.front() == '"' && s.value.back() == '"')
            s.value = s.value.substr(1, s.value.size() - 2);
        else if (s.value.find('"') != std::string::npos) {
            out.errors.push_back(where + ": unbalanced quote in '" + line + "'");
            continue;
        }
        out.settings.push_back(normalize_setting(std::move(s)));
    }
    return out;
}

std::optional<ConfigParse> load_config_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        if (errno == ENOENT) return std::nullopt;
        ConfigParse p;
        p.errors.push_back(path + ": cannot read: " + std::strerror(errno));
        return p;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse_config(text.str(), path);
}

const std::vector<std::string>& environment_keys() {
    static const std::vector<std::string> keys = {
        "store",         "max_size", "python",    "pyc_mode",        "real_pycache",
        "log_level",     "log_file", "workers",   "compile_timeout", "watcher",
        "compile_ahead", "io_uring", "pyc_links",
    };
    return keys;
}

std::vector<Setting>
settings_from_environment(const std::function<const char*(const char*)>& getenv_fn) {
    std::vector<Setting> out;
    for (const auto& key : environment_keys()) {
        std::string var = "PYCACHEFS_";
        for (char c : key) var += char(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
        const char* value = getenv_fn(var.c_str());
        if (!value || !*value) continue;
        if (is_multi_valued(key)) {
            std::string_view rest(value);
            while (!rest.empty()) {
                auto colon = rest.find(':');
                auto part = rest.substr(0, colon);
                if (!part.empty()) out.push_back({key, std::string(part), var});
                if (colon == std::string_view::npos) break;
                rest.remove_prefix(colon + 1);
            }
        } else {
            out.push_back({key, value, var});
        }
    }
    return out;
}

bool is_multi_valued(std::string_view key) {
    return key == "python";
}

std::vector<Setting> merge_settings(const std::vector<std::vector<Setting>>& layers) {
    // key -> index of the highest layer that sets it
    std::map<std::string, std::size_t> winner;
    for (std::size_t i = 0; i < layers.size(); ++i)
        for (const auto& s : layers[i]) winner[s.key] = i;
    std::vector<Setting> out;
    std::map<std::string, bool> emitted;
    for (std::size_t i = 0; i < layers.size(); ++i) {
        for (const auto& s : layers[i]) {
            if (winner[s.key] != i) continue;
            if (!is_multi_valued(s.key)) {
                // Within one layer the last value wins.
                auto it = emitted.find(s.key);
                if (it != emitted.end()) {
                    for (auto& o : out)
                        if (o.key == s.key) o = s;
                    continue;
                }
            }
            emitted[s.key] = true;
            out.push_back(s);
        }
    }
    return out;
}

} // namespace cachecore::util
