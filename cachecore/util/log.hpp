#pragma once

#include <string>
#include <string_view>

namespace cachecore::util {

enum class LogLevel { Debug = 0, Info = 1, Warning = 2, Error = 3, Off = 4 };

// Process-wide logger: stderr by default, a file or syslog once the daemon detaches.
void log_set_level(LogLevel level);
LogLevel log_level();
bool log_to_file(const std::string& path); // false when the file cannot be opened
void log_to_syslog(const std::string& ident);
void log_write(LogLevel level, std::string_view message);
bool parse_log_level(std::string_view text, LogLevel& out);

inline bool log_enabled(LogLevel level) {
    return level >= log_level();
}

} // namespace cachecore::util

#define PCFS_LOG(level, expr)                                                                      \
    do {                                                                                           \
        if (::cachecore::util::log_enabled(level)) {                                               \
            ::cachecore::util::log_write(level, (expr));                                           \
        }                                                                                          \
    } while (0)
#define LOG_DEBUG(expr) PCFS_LOG(::cachecore::util::LogLevel::Debug, expr)
#define LOG_INFO(expr) PCFS_LOG(::cachecore::util::LogLevel::Info, expr)
#define LOG_WARN(expr) PCFS_LOG(::cachecore::util::LogLevel::Warning, expr)
#define LOG_ERROR(expr) PCFS_LOG(::cachecore::util::LogLevel::Error, expr)
