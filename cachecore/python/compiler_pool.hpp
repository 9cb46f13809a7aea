#pragma once

#include "cachecore/hash/content_hash.hpp"
#include "cachecore/python/interpreter.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace cachecore::python {

struct CompileRequest {
    std::string source;   // raw source bytes
    std::string filename; // becomes co_filename
    int optimize = 0;     // 0, 1, 2 (>2 behaves like 2)
};

struct CompileResult {
    enum class Status {
        Ok,           // code holds marshal.dumps(code object)
        CompileError, // the source does not compile: error_* describe CPython's exception
        Crashed,      // the source killed two workers in a row (reported as a compile failure)
        TimedOut,     // a worker hung past the timeout and was replaced
        Failed,       // workers cannot be started at all (error_message says why)
    };
    Status status = Status::Failed;
    std::string code;
    std::string error_type;    // e.g. "SyntaxError"
    std::string error_message; // CPython's message (for SyntaxError: the msg attribute)
    int error_line = 0;        // lineno (0 when unknown)
    double seconds = 0;        // wall time spent compiling
    bool joined = false;       // shared another caller's compile (single flight): not a new compile
};

enum class Priority { Foreground, Background };

struct PoolOptions {
    // 0 = one per core plus one: compiles ahead may use every core (in the idle class) and an
    // importer's compile still finds a free worker (compiles ahead never take the last one).
    unsigned workers = 0;
    std::chrono::milliseconds timeout{30000};
    std::size_t background_queue_limit = 4096; // compile_async jobs waiting at most
};

struct PoolStats {
    std::uint64_t compiles = 0;      // jobs run on a worker (a joined request is not one)
    std::uint64_t joined = 0;        // requests that waited on an identical compile in flight
    std::uint64_t retries = 0;       // requests re-sent after their worker died
    std::uint64_t crashed = 0;       // results with Status::Crashed
    std::uint64_t timed_out = 0;     // results with Status::TimedOut
    std::uint64_t worker_starts = 0; // workers spawned successfully
    double last_startup_seconds = 0; // spawn to driver greeting, most recent worker
};

// Persistent compile workers for one interpreter, started on first need. Thread-safe.
class CompilerPool {
public:
    CompilerPool(Interpreter interpreter, PoolOptions options);
    ~CompilerPool(); // kills and reaps every worker
    CompilerPool(const CompilerPool&) = delete;
    CompilerPool& operator=(const CompilerPool&) = delete;

    // Blocks until done. Concurrent calls with the same (key, optimize) share one compile.
    CompileResult compile(const hash::ContentHash& key, const CompileRequest& request,
                          Priority priority = Priority::Foreground);

    // Queues a lowest-priority compile; `done` runs on a pool thread. Returns false (and drops
    // the job) when the background queue is full or the key is already being compiled.
    bool compile_async(const hash::ContentHash& key, CompileRequest request,
                       std::function<void(const CompileResult&)> done);

    const Interpreter& interpreter() const;
    std::vector<pid_t> worker_pids() const; // live, started workers; for tests and diagnostics
    PoolStats stats() const;

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

} // namespace cachecore::python
