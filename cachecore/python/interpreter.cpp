#include "cachecore/python/interpreter.hpp"

#include "cachecore/python/child_process.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace cachecore::python {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto k_probe_timeout = std::chrono::seconds(10);
constexpr int k_min_minor = 6;
constexpr int k_max_minor = 20;

// One line, space separated, so the parser stays trivial. Must run on any Python 3 (and fail
// cleanly on 2.7, which rejects -I anyway).
constexpr const char* k_probe_script =
    "import sys\n"
    "m = set(k for k in sys.modules if k != '__main__')\n"
    "import _imp\n"
    "m.update(n for n in getattr(_imp, '_frozen_module_names', list)() if _imp.is_frozen(n))\n"
    "m = ','.join(sorted(m))\n"
    "import importlib.util, importlib.machinery\n"
    "x = ','.join(importlib.machinery.EXTENSION_SUFFIXES)\n"
    "v = sys.version_info\n"
    "sys.stdout.write('%s %d %d %d %s %s %s %s %s\\n' % (sys.implementation.name, v[0], v[1], "
    "v[2],\n"
    "    sys.implementation.cache_tag, importlib.util.MAGIC_NUMBER.hex(), m or '-', x or '-',\n"
    "    (sys.executable or '').encode('utf-8', 'surrogateescape').hex()))\n";

struct ProbeAnswer {
    std::optional<Interpreter> interpreter; // path left empty: filled per caller
    std::string executable;                 // sys.executable as the interpreter reports it
    std::string error;
    bool timed_out = false;
};

struct CacheKey {
    std::string realpath;
    std::int64_t mtime_ns;
    auto operator<=>(const CacheKey&) const = default;
};

std::mutex g_cache_mutex;
std::map<CacheKey, ProbeAnswer>& probe_cache() {
    static std::map<CacheKey, ProbeAnswer> cache;
    return cache;
}

std::string real_path(const std::string& path) {
    std::error_code ec;
    auto p = std::filesystem::canonical(path, ec);
    return ec ? std::string() : p.string();
}

std::optional<int> parse_hex_byte(std::string_view h) {
    int v = 0;
    for (char c : h) {
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else
            return std::nullopt;
    }
    return v;
}

std::optional<std::string> parse_hex(std::string_view h) {
    if (h.size() % 2) return std::nullopt;
    std::string out;
    for (std::size_t i = 0; i < h.size(); i += 2) {
        auto b = parse_hex_byte(h.substr(i, 2));
        if (!b) return std::nullopt;
        out.push_back(char(*b));
    }
    return out;
}

ProbeAnswer run_probe(const std::string& path) {
    ProbeAnswer answer;
    std::string error;
    auto child = ChildProcess::spawn({path, "-I", "-S", "-c", k_probe_script},
                                     minimal_environment(), &error);
    if (!child) {
        answer.error = error;
        return answer;
    }
    child->close_stdin();
    auto deadline = Clock::now() + k_probe_timeout;
    std::string out;
    IoStatus s = read_to_eof(child->stdout_fd(), out, 65536, deadline);
    if (s == IoStatus::TimedOut) {
        answer.error = "no answer within 10 s";
        answer.timed_out = true;
    }
    int status = child->wait_for(std::chrono::milliseconds(2000));
    if (!answer.error.empty()) return answer;
    if (status != 0) {
        answer.error = "not a working Python 3 (exit status " + std::to_string(status) + ")";
        return answer;
    }
    std::istringstream in(out);
    std::string name, tag, magic_hex, modules, suffixes, exe_hex;
    Interpreter it;
    if (!(in >> name >> it.major >> it.minor >> it.micro >> tag >> magic_hex >> modules >>
          suffixes)) {
        answer.error = "unexpected probe output";
        return answer;
    }
    in >> exe_hex; // empty when sys.executable is empty
    if (name != "cpython") {
        answer.error = "not CPython (" + name + ")";
        return answer;
    }
    if (it.major != 3 || it.minor < k_min_minor) {
        answer.error = "CPython " + std::to_string(it.major) + "." + std::to_string(it.minor) +
                       " is older than 3.6";
        return answer;
    }
    auto magic = parse_hex(magic_hex);
    auto exe = parse_hex(exe_hex);
    if (!magic || magic->size() != it.magic.size() || !exe) {
        answer.error = "unexpected probe output";
        return answer;
    }
    std::copy(magic->begin(), magic->end(), it.magic.begin());
    it.cache_tag = tag;
    for (std::size_t start = 0; modules != "-" && start < modules.size();) {
        std::size_t comma = modules.find(',', start);
        if (comma == std::string::npos) comma = modules.size();
        it.startup_modules.insert(modules.substr(start, comma - start));
        start = comma + 1;
    }
    for (std::size_t start = 0; suffixes != "-" && start < suffixes.size();) {
        std::size_t comma = suffixes.find(',', start);
        if (comma == std::string::npos) comma = suffixes.size();
        it.extension_suffixes.push_back(suffixes.substr(start, comma - start));
        start = comma + 1;
    }
    it.version =
        std::to_string(it.major) + "." + std::to_string(it.minor) + "." + std::to_string(it.micro);
    answer.interpreter = it;
    answer.executable = *exe;
    return answer;
}

// Probes through the cache; `executable` receives what sys.executable reported.
std::optional<Interpreter> probe_cached(const std::string& path, std::string* error,
                                        std::string* executable) {
    struct stat st {};
    std::string resolved = real_path(path);
    if (resolved.empty() || ::stat(resolved.c_str(), &st) != 0) {
        if (error) *error = "no such file";
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode) || ::access(resolved.c_str(), X_OK) != 0) {
        if (error) *error = "not an executable file";
        return std::nullopt;
    }
    CacheKey key{resolved, std::int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
    ProbeAnswer answer;
    {
        std::lock_guard lock(g_cache_mutex);
        auto it = probe_cache().find(key);
        if (it != probe_cache().end()) answer = it->second;
    }
    if (!answer.interpreter && answer.error.empty()) {
        // Probed outside the lock: two threads may both probe a new binary once; harmless.
        answer = run_probe(path);
        // A timeout may be load, not the binary: only definite answers are remembered.
        if (!answer.timed_out) {
            std::lock_guard lock(g_cache_mutex);
            probe_cache().emplace(key, answer);
        }
    }
    if (!answer.interpreter) {
        if (error) *error = answer.error;
        return std::nullopt;
    }
    Interpreter result = *answer.interpreter;
    result.path = path;
    if (executable) *executable = answer.executable;
    return result;
}

std::vector<std::string> split_path(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= s.size()) {
        auto end = s.find(':', start);
        if (end == std::string::npos) end = s.size();
        if (end > start) out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

// pyenv version folders in version order (3.9 before 3.10), not in name order.
std::vector<std::string> pyenv_version_dirs(const std::string& root) {
    std::vector<std::string> dirs;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root + "/versions", ec)) {
        dirs.push_back(e.path().string());
    }
    auto numbers = [](const std::string& p) {
        std::vector<long> v;
        std::string name = std::filesystem::path(p).filename().string();
        long cur = -1;
        for (char c : name) {
            if (c >= '0' && c <= '9')
                cur = (cur < 0 ? 0 : cur * 10) + (c - '0');
            else if (cur >= 0)
                v.push_back(std::exchange(cur, -1));
        }
        if (cur >= 0) v.push_back(cur);
        return std::make_pair(v, name);
    };
    std::sort(dirs.begin(), dirs.end(),
              [&](const auto& a, const auto& b) { return numbers(a) < numbers(b); });
    return dirs;
}

} // namespace

std::optional<Interpreter> probe(const std::string& path, std::string* error) {
    return probe_cached(path, error, nullptr);
}

DiscoveryResult discover(const DiscoveryOptions& options) {
    DiscoveryResult result;
    std::set<std::string> seen; // resolved binaries already listed or rejected

    auto consider = [&](const std::string& candidate, bool is_explicit) {
        std::string resolved = real_path(candidate);
        if (!resolved.empty() && seen.count(resolved)) return;
        std::string error, executable;
        auto it = probe_cached(candidate, &error, &executable);
        if (!resolved.empty()) seen.insert(resolved);
        if (!it) {
            if (is_explicit) result.errors.push_back(candidate + ": " + error);
            return;
        }
        // A wrapper (a pyenv shim, a shell script) is replaced by the binary it runs, so
        // workers do not pay for the wrapper on every start and duplicates collapse.
        std::string exe_resolved = executable.empty() ? std::string() : real_path(executable);
        if (!exe_resolved.empty() && exe_resolved != resolved) {
            if (seen.count(exe_resolved)) return;
            seen.insert(exe_resolved);
            auto direct = probe_cached(executable, &error, nullptr);
            if (!direct) {
                if (is_explicit) result.errors.push_back(candidate + ": " + error);
                return;
            }
            it = direct;
        }
        // Two builds sharing a cache_tag (Debian's 3.11.2 and pyenv's 3.11.7) are both kept,
        // even when their magic differs: a mount that wants one interpreter per tag takes the
        // first in this list (see find_by_cache_tag), so explicit paths win over discovery.
        result.interpreters.push_back(std::move(*it));
    };

    for (const auto& path : options.explicit_paths) {
        if (path.find('/') == std::string::npos) {
            // A bare name is looked up on PATH like a shell would.
            std::string found;
            std::string env_path = options.path_env;
            if (env_path.empty() && std::getenv("PATH")) env_path = std::getenv("PATH");
            for (const auto& dir : split_path(env_path)) {
                std::string c = dir + "/" + path;
                if (::access(c.c_str(), X_OK) == 0) {
                    found = c;
                    break;
                }
            }
            if (found.empty()) {
                result.errors.push_back(path + ": not found on PATH");
                continue;
            }
            consider(found, true);
        } else {
            consider(path, true);
        }
    }
    if (!options.search_default_locations) return result;

    std::string env_path = options.path_env;
    if (env_path.empty() && std::getenv("PATH")) env_path = std::getenv("PATH");
    std::string root = options.pyenv_root;
    if (root.empty() && std::getenv("PYENV_ROOT")) root = std::getenv("PYENV_ROOT");
    if (root.empty() && std::getenv("HOME")) root = std::string(std::getenv("HOME")) + "/.pyenv";
    std::string shims = root.empty() ? std::string() : real_path(root + "/shims");

    std::vector<std::string> dirs = split_path(env_path);
    dirs.push_back("/usr/bin");
    dirs.push_back("/usr/local/bin");
    for (const auto& dir : dirs) {
        if (dir.empty() || dir[0] != '/') continue; // a relative PATH entry depends on the cwd
        // pyenv shims are bash scripts whose target depends on the caller's pyenv version
        // settings (and which are slow to run); the versions folder below finds the same
        // binaries directly. Other wrappers are resolved through sys.executable.
        if (!shims.empty() && real_path(dir) == shims) continue;
        for (int minor = k_min_minor; minor <= k_max_minor; ++minor) {
            std::string c = dir + "/python3." + std::to_string(minor);
            if (::access(c.c_str(), X_OK) == 0) consider(c, false);
        }
    }

    if (!root.empty()) {
        for (const auto& vdir : pyenv_version_dirs(root)) {
            for (int minor = k_min_minor; minor <= k_max_minor; ++minor) {
                std::string c = vdir + "/bin/python3." + std::to_string(minor);
                if (::access(c.c_str(), X_OK) == 0) consider(c, false);
            }
        }
    }
    return result;
}

const Interpreter* find_by_cache_tag(const DiscoveryResult& found, const std::string& cache_tag) {
    for (const auto& it : found.interpreters) {
        if (it.cache_tag == cache_tag) return &it;
    }
    return nullptr;
}

} // namespace cachecore::python
