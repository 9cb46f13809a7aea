#include "cachecore/util/size.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace cachecore::util {

std::optional<std::uint64_t> parse_size(std::string_view text) {
    std::string s(text);
    if (s.empty()) return std::nullopt;
    char* end = nullptr;
    double value = std::strtod(s.c_str(), &end);
    if (end == s.c_str() || value < 0 || !std::isfinite(value)) return std::nullopt;
    std::string unit(end);
    for (auto& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
    if (!unit.empty() && unit.back() == 'B') unit.pop_back();
    if (unit.size() == 2 && unit[1] == 'I') unit.pop_back();
    double mult = 1;
    if (unit.empty())
        mult = 1;
    else if (unit == "K")
        mult = 1024.0;
    else if (unit == "M")
        mult = 1024.0 * 1024;
    else if (unit == "G")
        mult = 1024.0 * 1024 * 1024;
    else if (unit == "T")
        mult = 1024.0 * 1024 * 1024 * 1024;
    else
        return std::nullopt;
    double bytes = value * mult;
    if (bytes > 1.8e19) return std::nullopt;
    return std::uint64_t(bytes);
}

std::string format_size(std::uint64_t bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = double(bytes);
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        ++i;
    }
    char buf[32];
    if (i == 0)
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
    else
        std::snprintf(buf, sizeof buf, "%.1f %s", v, units[i]);
    return buf;
}

} // namespace cachecore::util
