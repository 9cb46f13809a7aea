#pragma once

#include "cachecore/pyc/magic.hpp"

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace cachecore::python {

// A CPython installation, as it describes itself (never guessed from its file name).
struct Interpreter {
    std::string path;    // absolute path of the binary as given/found (not resolved)
    std::string version; // "3.12.1"
    int major = 0;
    int minor = 0;
    int micro = 0;
    std::string cache_tag; // sys.implementation.cache_tag, e.g. "cpython-312"
    pyc::Magic magic{};    // importlib.util.MAGIC_NUMBER
    // Modules an importer never loads from a tree: loaded before any user code runs (`-I -S`:
    // encodings, io, ...) or served frozen (3.11+: os, stat, posixpath, ...). Compiling them
    // ahead would be wasted.
    std::set<std::string> startup_modules;
    // importlib.machinery.EXTENSION_SUFFIXES, in the order a package's `__init__` is probed
    // with them (before `__init__.py`).
    std::vector<std::string> extension_suffixes;

    bool supports_hash_pycs() const { return major == 3 && minor >= 7; }
};

// Runs `path -I -S -c ...` once and caches the answer keyed by (realpath, mtime) for the life of
// the process. Returns nullopt (and sets *error) for non-CPython, Python < 3.6, or a failure.
std::optional<Interpreter> probe(const std::string& path, std::string* error = nullptr);

struct DiscoveryOptions {
    std::vector<std::string> explicit_paths; // searched first, errors reported
    bool search_default_locations = true;    // PATH, /usr/bin, /usr/local/bin, pyenv versions
    std::string path_env;                    // PATH to search; empty = getenv("PATH")
    std::string pyenv_root;                  // empty = $PYENV_ROOT, else ~/.pyenv
};

struct DiscoveryResult {
    std::vector<Interpreter> interpreters; // explicit ones first, then by discovery order
    std::vector<std::string> errors;       // "PATH: why" for explicit paths that failed
};

// Deduplicates by resolved binary (a wrapper such as a pyenv shim counts as the binary it runs
// and is replaced by it); keeps every distinct build, including two that share a cache_tag with
// the same or a different magic. When two builds share a cache_tag, the first one wins for a
// mount (find_by_cache_tag).
DiscoveryResult discover(const DiscoveryOptions& options);

// The first interpreter with this cache_tag, or nullptr.
const Interpreter* find_by_cache_tag(const DiscoveryResult& found, const std::string& cache_tag);

} // namespace cachecore::python
