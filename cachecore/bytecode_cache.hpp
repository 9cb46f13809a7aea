#pragma once

#include "cachecore/imports/import_scanner.hpp"
#include "cachecore/pyc/header.hpp"
#include "cachecore/python/compiler_pool.hpp"
#include "cachecore/python/interpreter.hpp"
#include "cachecore/source_memo.hpp"
#include "cachecore/store/store.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <variant>
#include <vector>

namespace cachecore {

// Everything needed to serve one .pyc.
struct Pyc {
    std::string bytes; // header + marshalled code: the complete file
    SourceStamp stamp; // the source version the header and body describe
    hash::ContentHash content;
    bool compiled = false; // compiled by this call (else: served from the store)
};

enum class PycErrorKind {
    NoInterpreter, // unknown cache tag / interpreter unavailable
    NotFound,      // the source is missing or not a regular file
    Io,            // the source could not be read (err_no says why)
    Compile,       // the source does not compile (compile says how) or crashes the compiler
    Unavailable,   // transient: worker timed out or could not start; do not remember
    NotStored,     // OnMiss::Fail and the store has no entry for this content
};

// What get_pyc does when the store has no entry: compile (an importer waits for it), or fail
// with NotStored (a lookup made ahead of an importer must not compile, nor wait for one).
enum class OnMiss { Compile, Fail };

struct PycError {
    PycErrorKind kind = PycErrorKind::Io;
    int err_no = 0;
    std::string message; // one line, names the file
    store::CompileErrorInfo compile;
};

using PycResult = std::variant<Pyc, PycError>;

struct BytecodeCacheOptions {
    python::PoolOptions pool;
    bool prefetch = true; // compile modules ahead on idle workers (Background priority)
    std::size_t memo_capacity = 1 << 18;              // source stamps remembered (SourceMemo)
    std::int64_t memo_racy_window_ns = 2'000'000'000; // stamps younger than this are re-read
};

// The one entry point used by the filesystem and the CLI: (source, interpreter, optimize level,
// header mode) -> the exact .pyc bytes. Compiles at most once per distinct source content.
class BytecodeCache {
public:
    BytecodeCache(store::Store& store, BytecodeCacheOptions options);
    ~BytecodeCache();

    // `dirfd`/`name`: the source, opened O_RDONLY|O_NONBLOCK (never hangs on a FIFO, follows a
    // symlink like CPython). `st`: a fresh stat of it, if the caller has one (saves a syscall);
    // `co_filename`: the path CPython will see (it fixes co_filename on load anyway).
    PycResult get_pyc(int dirfd, const std::string& name, const struct stat* st,
                      const python::Interpreter& interpreter, int optimize, pyc::PycMode mode,
                      const std::string& co_filename, OnMiss on_miss = OnMiss::Compile);

    // Ensures the store holds an entry (used by `warm`); never builds a header.
    enum class WarmOutcome { AlreadyStored, Compiled, CompileError, Failed };
    WarmOutcome warm(int dirfd, const std::string& name, const python::Interpreter& interpreter,
                     int optimize, PycError* error = nullptr);

    // If the source's entry is not stored yet, reads the source now and queues a Background
    // compile whose result is stored. Bounded: dropped when the pool's background queue is full
    // (or when options.prefetch is off). Never reports errors. Returns the source's bytes when
    // it had to read them (callers that also scan the source need not read it again).
    std::shared_ptr<const std::string> prefetch(int dirfd, const std::string& name,
                                                const python::Interpreter& interpreter,
                                                int optimize);
    bool prefetching() const;

    // The import statements of the open source `fd` (`st`: its fstat), deferred ones included,
    // for a walk along the import graph. Taken from the store when the source's content is known
    // from its stamp and was scanned before: no read. Otherwise read (once, consistently),
    // hashed, scanned, and kept for next time. nullopt when it cannot be read.
    std::optional<std::vector<imports::ImportRef>> imports_of(int fd, const struct stat& st);
    // The same for source bytes the caller has read already: scanned, and kept.
    std::vector<imports::ImportRef> imports_in(std::string_view source);

    // Counters since start, per cache tag. Deltas are pushed to store.add_counters about once a
    // second, on push_counters() and on destruction.
    // Sources read (and hashed) by this process: not known from a stamp (see SourceMemo).
    std::uint64_t sources_read() const;
    // Import lists imports_of() took from the store, and those it had to scan.
    struct ImportListCounts {
        std::uint64_t from_store = 0;
        std::uint64_t scanned = 0;
    };
    ImportListCounts import_lists() const;
    std::map<std::string, store::Counters> counters() const;
    void push_counters();
    python::CompilerPool& pool_for(const python::Interpreter& interpreter);
    store::Store& store() { return m_store; }

private:
    struct Impl;
    store::Store& m_store;
    std::unique_ptr<Impl> m_impl;
};

} // namespace cachecore
