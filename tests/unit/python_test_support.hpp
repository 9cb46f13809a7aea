#pragma once

// Helpers shared by test_interpreter.cpp and test_compiler_pool.cpp: temp dirs, running a real
// interpreter with a clean environment, and the interpreters this machine actually has.
#include "cachecore/python/interpreter.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace pool_test {

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "pcfs-pool-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) std::abort();
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

inline void write_file(const std::filesystem::path& p, const std::string& data) {
    std::ofstream out(p, std::ios::binary);
    out << data;
}

inline std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'')
            out += "'\\''";
        else
            out += c;
    }
    out += '\'';
    return out;
}

// Runs `python -I -S script args...` with an empty environment; returns stdout ("" on failure,
// with *status set).
inline std::string run_python(const std::string& python, const std::string& script,
                              const std::vector<std::string>& args = {}, int* status = nullptr) {
    // Built with += only: GCC 12 -O3 warns (-Wrestrict) on `literal + std::string&&`.
    std::string cmd = "cd / && env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 ";
    cmd += shell_quote(python);
    cmd += " -I -S -c ";
    cmd += shell_quote(script);
    for (const auto& a : args) {
        cmd += ' ';
        cmd += shell_quote(a);
    }
    cmd += " 2>/dev/null";
    FILE* f = ::popen(cmd.c_str(), "r");
    if (!f) return {};
    std::string out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    int st = ::pclose(f);
    if (status) *status = st;
    return out;
}

inline std::string pyenv_root() {
    if (const char* r = std::getenv("PYENV_ROOT")) return r;
    if (const char* h = std::getenv("HOME")) return std::string(h) + "/.pyenv";
    return {};
}

// What `ls` shows right now: every versions/*/bin/python3.X of pyenv and /usr/bin/python3.X.
inline std::vector<std::string> expected_python3_binaries() {
    std::vector<std::string> out;
    auto scan = [&](const std::filesystem::path& dir) {
        for (int minor = 6; minor <= 20; ++minor) {
            auto p = dir / ("python3." + std::to_string(minor));
            if (::access(p.c_str(), X_OK) == 0) out.push_back(std::filesystem::canonical(p));
        }
    };
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(pyenv_root() + "/versions", ec)) {
        scan(e.path() / "bin");
    }
    scan("/usr/bin");
    return out;
}

// Discovery is slow-ish the first time (one probe per binary); share it between tests.
inline const cachecore::python::DiscoveryResult& discovered() {
    static const cachecore::python::DiscoveryResult result =
        cachecore::python::discover(cachecore::python::DiscoveryOptions{});
    return result;
}

inline const cachecore::python::Interpreter* find_minor(int minor) {
    for (const auto& it : discovered().interpreters) {
        if (it.major == 3 && it.minor == minor) return &it;
    }
    return nullptr;
}

} // namespace pool_test
