#include "cachecore/util/log.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

namespace cachecore::util {
namespace {

std::atomic<LogLevel> g_level{LogLevel::Warning};
std::mutex g_mutex;
FILE* g_file = nullptr; // nullptr = stderr
bool g_syslog = false;

const char* level_name(LogLevel level) {
    switch (level) {
    case LogLevel::Debug:
        return "debug";
    case LogLevel::Info:
        return "info";
    case LogLevel::Warning:
        return "warning";
    case LogLevel::Error:
        return "error";
    case LogLevel::Off:
        break;
    }
    return "off";
}

} // namespace

void log_set_level(LogLevel level) {
    g_level = level;
}
LogLevel log_level() {
    return g_level;
}

bool log_to_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "ae");
    if (!f) return false;
    std::lock_guard lock(g_mutex);
    if (g_file) std::fclose(g_file);
    g_file = f;
    std::setvbuf(g_file, nullptr, _IOLBF, 0);
    g_syslog = false;
    return true;
}

void log_to_syslog(const std::string& ident) {
    static std::string s_ident; // openlog keeps the pointer
    std::lock_guard lock(g_mutex);
    s_ident = ident;
    openlog(s_ident.c_str(), LOG_PID, LOG_DAEMON);
    g_syslog = true;
}

void log_write(LogLevel level, std::string_view message) {
    std::lock_guard lock(g_mutex);
    if (g_syslog) {
        int prio = level == LogLevel::Debug   ? LOG_DEBUG
                   : level == LogLevel::Info  ? LOG_INFO
                   : level == LogLevel::Error ? LOG_ERR
                                              : LOG_WARNING;
        syslog(prio, "%.*s", int(message.size()), message.data());
        return;
    }
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    localtime_r(&ts.tv_sec, &t);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &t);
    std::fprintf(g_file ? g_file : stderr, "%s.%03ld pycachefs[%d] %s: %.*s\n", stamp,
                 ts.tv_nsec / 1000000, int(getpid()), level_name(level), int(message.size()),
                 message.data());
}

bool parse_log_level(std::string_view text, LogLevel& out) {
    if (text == "debug")
        out = LogLevel::Debug;
    else if (text == "info")
        out = LogLevel::Info;
    else if (text == "warning" || text == "warn")
        out = LogLevel::Warning;
    else if (text == "error")
        out = LogLevel::Error;
    else if (text == "off")
        out = LogLevel::Off;
    else
        return false;
    return true;
}

} // namespace cachecore::util
