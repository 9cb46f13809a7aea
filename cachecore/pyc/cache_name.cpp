#include "cachecore/pyc/cache_name.hpp"

namespace cachecore::pyc {

namespace {

constexpr std::string_view k_suffix = ".pyc";
constexpr std::string_view k_opt_prefix = "opt-";

// `N` of `opt-N`: importlib writes str(level) for level >= 1, so no sign, no leading zero.
std::optional<int> parse_opt_level(std::string_view digits) {
    if (digits.empty() || digits.size() > 9 || digits.front() == '0') return std::nullopt;
    int value = 0;
    for (char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
    }
    return value;
}

} // namespace

std::optional<CacheName> parse_cache_name(std::string_view file_name) {
    if (file_name.find('/') != std::string_view::npos ||
        file_name.find('\0') != std::string_view::npos)
        return std::nullopt;
    if (file_name.size() <= k_suffix.size() || !file_name.ends_with(k_suffix)) return std::nullopt;
    std::string_view rest = file_name.substr(0, file_name.size() - k_suffix.size());

    CacheName name;
    auto last_dot = rest.rfind('.');
    if (last_dot == std::string_view::npos) return std::nullopt;
    std::string_view last = rest.substr(last_dot + 1);
    if (last.starts_with(k_opt_prefix)) {
        // A malformed level is rejected rather than read as a cache tag: no CPython tag starts
        // with "opt-", and serving such a name would only confuse.
        auto level = parse_opt_level(last.substr(k_opt_prefix.size()));
        if (!level) return std::nullopt;
        name.optimize = *level;
        rest = rest.substr(0, last_dot);
        last_dot = rest.rfind('.');
        if (last_dot == std::string_view::npos) return std::nullopt;
    }
    std::string_view tag = rest.substr(last_dot + 1);
    std::string_view module = rest.substr(0, last_dot);
    if (tag.empty() || module.empty() || tag.starts_with(k_opt_prefix)) return std::nullopt;
    name.cache_tag = tag;
    name.module = module;
    return name;
}

std::string format_cache_name(const CacheName& name) {
    std::string out = name.module;
    out += '.';
    out += name.cache_tag;
    if (name.optimize > 0) {
        out += ".opt-";
        out += std::to_string(name.optimize);
    }
    out += k_suffix;
    return out;
}

} // namespace cachecore::pyc
