#include "fs/cli/mount_options.hpp"

#include "cachecore/util/size.hpp"

#include <cstdlib>
#include <pwd.h>
#include <unistd.h>
#include <utility>

namespace fs::cli {
namespace {

std::vector<std::string> split_commas(const std::string& text) {
    // A backslash escapes a comma inside a value (as in mount(8) option strings).
    std::vector<std::string> parts;
    std::string cur;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size())
            cur += text[++i];
        else if (text[i] == ',')
            parts.push_back(std::exchange(cur, {}));
        else
            cur += text[i];
    }
    parts.push_back(cur);
    return parts;
}

bool parse_bool_flag(const std::string& value, bool& out) {
    if (value.empty() || value == "1" || value == "yes" || value == "true")
        out = true;
    else if (value == "0" || value == "no" || value == "false")
        out = false;
    else
        return false;
    return true;
}

} // namespace

std::string apply_o_options(const std::string& text, MountOptions& o) {
    for (const std::string& item : split_commas(text)) {
        if (item.empty() || item == "defaults") continue;
        auto eq = item.find('=');
        std::string key = item.substr(0, eq);
        std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
        for (auto& c : key)
            if (c == '-') c = '_';
        if (key == "store")
            o.store = value;
        else if (key == "python")
            o.pythons.push_back(value);
        else if (key == "max_size") {
            auto size = cachecore::util::parse_size(value);
            if (!size) return "invalid max_size '" + value + "' (use e.g. 500M or 2G)";
            o.max_size = *size;
        } else if (key == "rw")
            o.rw = true;
        else if (key == "ro")
            o.rw = false;
        else if (key == "pyc_mode") {
            auto mode = cachecore::pyc::parse_pyc_mode(value);
            if (!mode)
                return "invalid pyc_mode '" + value +
                       "' (timestamp, checked-hash or unchecked-hash)";
            o.pyc_mode = *mode;
        } else if (key == "real_pycache") {
            if (value != "hide" && value != "show")
                return "invalid real_pycache '" + value + "' (hide or show)";
            o.hide_real_pycache = value == "hide";
        } else if (key == "foreground") {
            if (!parse_bool_flag(value, o.foreground)) return "invalid foreground '" + value + "'";
        } else if (key == "debug") {
            if (!parse_bool_flag(value, o.debug)) return "invalid debug '" + value + "'";
        } else if (key == "log_file")
            o.log_file = value;
        else if (key == "log_level")
            o.log_level = value;
        else if (key == "pid_file")
            o.pid_file = value;
        else if (key == "workers") {
            char* end = nullptr;
            unsigned long n = std::strtoul(value.c_str(), &end, 10);
            if (value.empty() || *end || n > 256) return "invalid workers '" + value + "' (0-256)";
            o.workers = unsigned(n);
        } else if (key == "compile_timeout") {
            char* end = nullptr;
            unsigned long n = std::strtoul(value.c_str(), &end, 10);
            if (value.empty() || *end || n == 0)
                return "invalid compile_timeout '" + value + "' (seconds)";
            o.compile_timeout_s = unsigned(n);
        } else if (key == "nonempty")
            o.nonempty = true;
        // Flags for mount(8) itself: meaningless to the filesystem.
        else if (key == "user" || key == "nouser" || key == "users" || key == "auto" ||
                 key == "noauto" || key == "_netdev" || key == "nofail" || key.rfind("x-", 0) == 0)
            continue;
        else
            o.fuse_options.push_back(item); // FUSE's own: allow_other, auto_unmount, ...
    }
    return {};
}

std::string default_store_dir() {
    if (const char* s = std::getenv("PYCACHEFS_STORE"); s && *s) return s;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
        return std::string(x) + "/pycachefs";
    const char* home = std::getenv("HOME");
    if (!home || !*home) {
        if (passwd* pw = ::getpwuid(::getuid())) home = pw->pw_dir;
    }
    return std::string(home ? home : "/tmp") + "/.cache/pycachefs";
}

} // namespace fs::cli
