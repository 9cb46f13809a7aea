#include "fs/cli/mount_options.hpp"

#include "cachecore/util/log.hpp"
#include "cachecore/util/size.hpp"

#include <cstdlib>
#include <pwd.h>
#include <unistd.h>
#include <utility>

namespace fs::cli {
namespace {

using cachecore::util::Setting;

bool parse_bool_flag(const std::string& value, bool& out) {
    if (value.empty() || value == "1" || value == "yes" || value == "true")
        out = true;
    else if (value == "0" || value == "no" || value == "false")
        out = false;
    else
        return false;
    return true;
}

bool parse_unsigned(const std::string& value, unsigned long max, unsigned& out) {
    if (value.empty()) return false;
    char* end = nullptr;
    unsigned long n = std::strtoul(value.c_str(), &end, 10);
    if (*end || n > max || value[0] == '-') return false;
    out = unsigned(n);
    return true;
}

} // namespace

std::vector<Setting> split_o_options(const std::string& text) {
    std::vector<Setting> out;
    std::string cur;
    auto flush = [&] {
        std::string item = std::exchange(cur, {});
        if (item.empty() || item == "defaults") return;
        auto eq = item.find('=');
        Setting s{item.substr(0, eq), eq == std::string::npos ? "" : item.substr(eq + 1),
                  "-o " + item};
        out.push_back(cachecore::util::normalize_setting(std::move(s)));
    };
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size())
            cur += text[++i];
        else if (text[i] == ',')
            flush();
        else
            cur += text[i];
    }
    flush();
    return out;
}

std::string apply_setting(const Setting& s, MountOptions& o) {
    const std::string& key = s.key;
    const std::string& value = s.value;
    auto invalid = [&](const std::string& hint) {
        return "invalid " + key + " '" + value + "' from " + s.origin + " (" + hint + ")";
    };
    auto flag = [&](bool& field) {
        return parse_bool_flag(value, field) ? std::string() : invalid("yes or no");
    };
    if (key == "store")
        o.store = value;
    else if (key == "python")
        o.pythons.push_back(value);
    else if (key == "max_size") {
        auto size = cachecore::util::parse_size(value);
        if (!size || *size == 0) return invalid("use e.g. 500M or 2G");
        o.max_size = *size;
    } else if (key == "rw")
        return flag(o.rw);
    else if (key == "pyc_mode") {
        auto mode = cachecore::pyc::parse_pyc_mode(value);
        if (!mode) return invalid("timestamp, checked-hash or unchecked-hash");
        o.pyc_mode = *mode;
    } else if (key == "real_pycache") {
        if (value != "hide" && value != "show") return invalid("hide or show");
        o.hide_real_pycache = value == "hide";
    } else if (key == "watcher") {
        if (value != "auto" && value != "fanotify" && value != "inotify")
            return invalid("auto, fanotify or inotify");
        o.watcher = value;
    } else if (key == "compile_ahead") {
        if (value != "all" && value != "imports" && value != "package" && value != "off")
            return invalid("all, imports, package or off");
        o.compile_ahead = value;
    } else if (key == "io_uring") {
        if (value != "auto" && value != "on" && value != "off") return invalid("auto, on or off");
        o.io_uring = value;
    } else if (key == "look_ahead") {
        if (value != "on" && value != "off" && value != "dirs") return invalid("on, dirs or off");
        o.look_ahead = value != "off";
        o.look_ahead_imports = value == "on";
    } else if (key == "pyc_links") {
        if (value != "auto" && value != "off" && (value.empty() || value[0] != '/'))
            return invalid("auto, off or an absolute directory");
        o.pyc_links = value;
    } else if (key == "foreground")
        return flag(o.foreground);
    else if (key == "debug")
        return flag(o.debug);
    else if (key == "fuse_debug")
        return flag(o.fuse_debug);
    else if (key == "log_file")
        o.log_file = value;
    else if (key == "log_level") {
        cachecore::util::LogLevel level;
        if (!cachecore::util::parse_log_level(value, level))
            return invalid("debug, info, warning or error");
        o.log_level = value;
    } else if (key == "pid_file")
        o.pid_file = value;
    else if (key == "workers") {
        if (!parse_unsigned(value, 256, o.workers)) return invalid("0-256");
    } else if (key == "compile_timeout") {
        if (!parse_unsigned(value, 86400, o.compile_timeout_s) || o.compile_timeout_s == 0)
            return invalid("seconds, at least 1");
    } else if (key == "nonempty")
        return flag(o.nonempty);
    // Flags for mount(8) itself: meaningless to the filesystem.
    else if (key == "user" || key == "nouser" || key == "users" || key == "auto" ||
             key == "noauto" || key == "_netdev" || key == "nofail" || key.rfind("x_", 0) == 0 ||
             key.rfind("x-", 0) == 0)
        return {};
    else // FUSE's own: allow_other, auto_unmount, ...
        o.fuse_options.push_back(value.empty() ? key : key + "=" + value);
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
