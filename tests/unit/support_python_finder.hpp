#pragma once

// Shared test helpers: the real CPythons on this machine, subprocesses with a clean environment,
// and self-removing temp dirs. Any unit test may use them.

#include "cachecore/python/interpreter.hpp"

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace pycachefs::test {

// Every CPython >= 3.6 found under /root/.pyenv/versions/*/bin/python3.N and /usr/bin/python3.N,
// deduplicated by resolved binary, each asked once (in a clean env) for its version, tag and
// magic. Sorted by (minor, micro, path). Filled on first call; never throws.
const std::vector<cachecore::python::Interpreter>& test_pythons();
// Only those with PEP 552 (3.7+).
std::vector<cachecore::python::Interpreter> test_pythons_with_hash_pycs();
// A short label for test output: "3.12.1 (/root/.pyenv/.../python3.12)".
std::string describe(const cachecore::python::Interpreter& interpreter);

struct ProcessResult {
    int exit_code = -1; // -1 when killed by a signal or not started
    int signal = 0;     // the terminating signal, if any
    bool timed_out = false;
    std::string out;
    std::string err;
};

// Runs argv[0] (an absolute path) with exactly `env` as its environment (default: only
// PATH=/usr/bin:/bin), writes `input` to its stdin, and captures stdout/stderr. The child is
// killed (SIGKILL) and reaped after `timeout`.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(60),
                          const std::vector<std::string>& env = {"PATH=/usr/bin:/bin"});

// mkdtemp under $TMPDIR-independent /tmp; removed recursively on destruction.
class TempDir {
public:
    explicit TempDir(const std::string& prefix = "pycachefs-test");
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return m_path; }
    std::string str() const { return m_path.string(); }

private:
    std::filesystem::path m_path;
};

// Small file helpers that throw std::runtime_error on failure.
void write_file(const std::filesystem::path& path, const std::string& data);
std::string read_file(const std::filesystem::path& path);

} // namespace pycachefs::test
