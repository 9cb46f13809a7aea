#include "cachecore/python/compiler_pool.hpp"
#include "python_test_support.hpp"

#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <future>
#include <gtest/gtest.h>
#include <iostream>
// GCC 12 at -O3 reports a bogus -Wrestrict for `"literal" + std::string` (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"

#include <functional>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace py = cachecore::python;
using cachecore::hash::ContentHash;
using namespace pool_test;
using Status = py::CompileResult::Status;

namespace {

// Latin-1 cookie + a raw 0xE9 byte: the worker must decode like importlib (compile() on bytes).
const std::string k_module = "# -*- coding: latin-1 -*-\n"
                             "'''Module docstring.'''\n"
                             "import os\n"
                             "latin = '\xe9'\n"
                             "def checked():\n"
                             "    assert False, 'asserts are on'\n"
                             "def documented():\n"
                             "    '''Function docstring.'''\n"
                             "    return [x * y for x in range(3) for y in (lambda: (1, 2))()]\n"
                             "class K:\n"
                             "    '''Class docstring.'''\n"
                             "    async def m(self):\n"
                             "        return {k: v for k, v in os.environ.items() if k}\n";

const std::string k_bad_syntax = "x = 1\ny = 2\nz = (1,\n    2 +\n";
const std::string k_nul = std::string("x = 1\n\0y = 2\n", 13);
const std::string k_bad_encoding = "# coding: utf-8\nx = '\xff\xfe'\n";

// For every interpreter: compares the pool's output with the interpreter's own compile().
const char* k_check_script = R"PY(
import marshal, sys
d = sys.argv[1]
src = open(d + '/mod.py', 'rb').read()
for opt in (0, 1, 2):
    got = marshal.loads(open(d + '/out%d' % opt, 'rb').read())
    want = compile(src, 'pkg/mod.py', 'exec', dont_inherit=True, optimize=opt)
    ns = {}
    exec(got, ns)
    try:
        ns['checked']()
        asserted = 0
    except AssertionError:
        asserted = 1
    print('opt%d eq=%d fn=%s assert=%d doc=%d latin=%d' % (opt, got == want, got.co_filename,
          asserted, ns['documented'].__doc__ is not None, ns['latin'] == '\xe9'))
for name in ('bad_syntax', 'nul', 'bad_encoding'):
    s = open(d + '/' + name, 'rb').read()
    try:
        compile(s, name, 'exec', dont_inherit=True)
        print(name + ' compiled')
    except Exception as e:
        msg = e.msg if isinstance(e, SyntaxError) else str(e)
        line = (e.lineno or 0) if isinstance(e, SyntaxError) else 0
        print('%s|%s|%s|%d' % (name, type(e).__name__, msg, line))
)PY";

py::CompileRequest request(std::string source, std::string filename, int optimize = 0) {
    py::CompileRequest r;
    r.source = std::move(source);
    r.filename = std::move(filename);
    r.optimize = optimize;
    return r;
}

// ~1 s of compile on 3.12 per 30000 lines: long enough to kill or time out mid-compile.
std::string big_source(int lines) {
    std::string s;
    for (int i = 0; i < lines; ++i) {
        s += "x" + std::to_string(i) + " = (a" + std::to_string(i) + " + b) * c - d[" +
             std::to_string(i) + "]\n";
    }
    return s;
}

const py::Interpreter& fault_interpreter() {
    const py::Interpreter* it = find_minor(12);
    if (!it) it = &discovered().interpreters.back();
    return *it;
}

bool pid_exists(pid_t pid) {
    return ::kill(pid, 0) == 0 || errno != ESRCH;
}

} // namespace

TEST(CompilerPoolEveryInterpreter, MatchesTheInterpretersOwnCompile) {
    ASSERT_FALSE(discovered().interpreters.empty());
    for (const auto& it : discovered().interpreters) {
        SCOPED_TRACE(it.path);
        TempDir dir;
        py::CompilerPool pool(it, py::PoolOptions{1, std::chrono::seconds(20)});
        std::string expected;
        for (int opt = 0; opt <= 2; ++opt) {
            auto r = pool.compile(ContentHash::of(k_module), request(k_module, "pkg/mod.py", opt));
            ASSERT_EQ(r.status, Status::Ok) << r.error_type << ": " << r.error_message;
            ASSERT_EQ(std::uint8_t(r.code[0]) & 0x7f, 'c'); // a code object
            write_file(dir.path / ("out" + std::to_string(opt)), r.code);
            expected += "opt" + std::to_string(opt) +
                        " eq=1 fn=pkg/mod.py assert=" + (opt == 0 ? "1" : "0") +
                        " doc=" + (opt == 2 ? "0" : "1") + " latin=1\n";
        }
        std::cout << "[ startup ] " << it.version << " " << it.path << ": "
                  << pool.stats().last_startup_seconds * 1000 << " ms\n";
        write_file(dir.path / "mod.py", k_module);
        const std::pair<const char*, const std::string*> errors[] = {
            {"bad_syntax", &k_bad_syntax}, {"nul", &k_nul}, {"bad_encoding", &k_bad_encoding}};
        for (auto [name, source] : errors) {
            write_file(dir.path / name, *source);
            auto r = pool.compile(ContentHash::of(*source), request(*source, name));
            ASSERT_EQ(r.status, Status::CompileError) << name;
            expected += std::string(name) + "|" + r.error_type + "|" + r.error_message + "|" +
                        std::to_string(r.error_line) + "\n";
        }
        EXPECT_EQ(run_python(it.path, k_check_script, {dir.path.string()}), expected);
        EXPECT_EQ(pool.stats().worker_starts, 1U);
    }
}

// CPython reads a line back by file name for a SyntaxError and for a compile-time warning, and
// that name is under the daemon's own mount: a worker must never open it. A FIFO as the name
// makes any open hang (no writer), so a worker that tries times out instead of answering.
TEST(CompilerPoolEveryInterpreter, NeverOpensTheFileItCompilesFor) {
    const std::pair<std::string, Status> sources[] = {
        {"def oops(:\n", Status::CompileError},                    // parser error (3.9+)
        {"return 1\n", Status::CompileError},                      // compiler error (3.6+)
        {"def f():\n    nonlocal x\n", Status::CompileError},      // symtable error
        {"x = 1\nassert (x, 1)\nif x is 'a': pass\n", Status::Ok}, // SyntaxWarnings
        {"y = '\\d'\n", Status::Ok}};                              // invalid escape warning
    for (const auto& it : discovered().interpreters) {
        SCOPED_TRACE(it.path);
        TempDir dir;
        const auto fifo = dir.path / "mod.py";
        ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
        py::CompilerPool pool(it, py::PoolOptions{1, std::chrono::seconds(5)});
        for (const auto& [source, want] : sources) {
            SCOPED_TRACE(source);
            auto r = pool.compile(ContentHash::of(source), request(source, fifo.string()));
            EXPECT_EQ(r.status, want) << r.error_type << ": " << r.error_message;
        }
        EXPECT_EQ(pool.stats().worker_starts, 1U);
    }
}

TEST(CompilerPool, SyntaxErrorCarriesMessageAndLine) {
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{1, std::chrono::seconds(20)});
    std::string src = "def f():\n    return 1\n\ndef g(:\n    pass\n";
    auto r = pool.compile(ContentHash::of(src), request(src, "m.py"));
    ASSERT_EQ(r.status, Status::CompileError);
    EXPECT_EQ(r.error_type, "SyntaxError");
    EXPECT_EQ(r.error_line, 4);
    EXPECT_FALSE(r.error_message.empty());
    // The worker survives a compile error.
    auto ok = pool.compile(ContentHash::of("x = 1\n"), request("x = 1\n", "m.py"));
    EXPECT_EQ(ok.status, Status::Ok);
    EXPECT_EQ(pool.stats().worker_starts, 1U);
}

TEST(CompilerPool, WorkerKilledMidCompileIsRetried) {
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{1, std::chrono::seconds(30)});
    ASSERT_EQ(pool.compile(ContentHash::of("pass\n"), request("pass\n", "w.py")).status,
              Status::Ok);
    auto pids = pool.worker_pids();
    ASSERT_EQ(pids.size(), 1U);
    std::string src = big_source(30000);
    auto future = std::async(std::launch::async, [&] {
        return pool.compile(ContentHash::of(src), request(src, "big.py"));
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
    auto r = future.get();
    EXPECT_EQ(r.status, Status::Ok) << r.error_message;
    EXPECT_EQ(pool.stats().retries, 1U);
    EXPECT_EQ(pool.stats().worker_starts, 2U);
    EXPECT_FALSE(pid_exists(pids[0])) << "the killed worker was not reaped";
}

TEST(CompilerPool, HungWorkerTimesOutAndIsReplaced) {
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{1, std::chrono::milliseconds(150)});
    ASSERT_EQ(pool.compile(ContentHash::of("pass\n"), request("pass\n", "w.py")).status,
              Status::Ok);
    auto first = pool.worker_pids();
    std::string src = big_source(30000);
    auto r = pool.compile(ContentHash::of(src), request(src, "big.py"));
    EXPECT_EQ(r.status, Status::TimedOut);
    EXPECT_LT(r.seconds, 1.0);
    EXPECT_TRUE(pool.worker_pids().empty());
    ASSERT_EQ(first.size(), 1U);
    EXPECT_FALSE(pid_exists(first[0]));
    auto next = pool.compile(ContentHash::of("y = 2\n"), request("y = 2\n", "w.py"));
    EXPECT_EQ(next.status, Status::Ok);
    EXPECT_EQ(pool.stats().timed_out, 1U);
}

TEST(CompilerPool, SourceThatKillsTwoWorkersIsCrashed) {
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{2, std::chrono::seconds(30)});
    std::string src = big_source(30000);
    std::atomic<bool> stop{false};
    std::thread killer([&] {
        while (!stop) {
            for (pid_t pid : pool.worker_pids()) ::kill(pid, SIGKILL);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    });
    auto r = pool.compile(ContentHash::of(src), request(src, "big.py"));
    stop = true;
    killer.join();
    EXPECT_EQ(r.status, Status::Crashed) << r.error_message;
    EXPECT_EQ(pool.stats().crashed, 1U);
    // The pool recovers.
    EXPECT_EQ(pool.compile(ContentHash::of("z = 3\n"), request("z = 3\n", "z.py")).status,
              Status::Ok);
}

TEST(CompilerPool, RealCompilerCrashIsReportedAsCrashed) {
    // `a.a.a...` 200000 deep overflows the C stack of 3.7..3.9's compiler (3.6 and 3.10+ raise
    // RecursionError instead). See the report in the pool commit for every version.
    std::string src;
    for (int i = 0; i < 200000; ++i) src += "a.";
    src += "b\n";
    int checked = 0;
    for (const auto& it : discovered().interpreters) {
        py::CompilerPool pool(it, py::PoolOptions{1, std::chrono::seconds(20)});
        auto r = pool.compile(ContentHash::of(src), request(src, "deep.py"));
        if (it.minor >= 7 && it.minor <= 9) {
            EXPECT_EQ(r.status, Status::Crashed) << it.path;
            ++checked;
        } else {
            EXPECT_EQ(r.status, Status::CompileError) << it.path;
            EXPECT_EQ(r.error_type, "RecursionError") << it.path;
        }
        if (checked && it.minor > 9) break; // the rest behave like 3.10; keep the test short
    }
    if (!checked) GTEST_SKIP() << "no CPython 3.7..3.9 here";
}

TEST(CompilerPool, SingleFlightSharesOneCompile) {
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{2, std::chrono::seconds(30)});
    std::string src = big_source(6000);
    auto key = ContentHash::of(src);
    constexpr int k_threads = 8;
    std::barrier start(k_threads);
    std::vector<std::future<py::CompileResult>> results;
    for (int i = 0; i < k_threads; ++i) {
        results.push_back(std::async(std::launch::async, [&, i] {
            start.arrive_and_wait();
            return pool.compile(key, request(src, "t" + std::to_string(i) + ".py"));
        }));
    }
    std::string code;
    for (auto& f : results) {
        auto r = f.get();
        ASSERT_EQ(r.status, Status::Ok);
        if (code.empty()) code = r.code;
        EXPECT_EQ(r.code, code);
    }
    EXPECT_EQ(pool.stats().compiles, 1U);
    EXPECT_EQ(pool.stats().joined, std::uint64_t(k_threads - 1));
    // Another optimization level is another compile.
    auto opt2 = pool.compile(key, request(src, "t.py", 2));
    EXPECT_EQ(opt2.status, Status::Ok);
    EXPECT_EQ(pool.stats().compiles, 2U);
}

TEST(CompilerPool, BackgroundJobsRunAndAreDeduplicated) {
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{1, std::chrono::seconds(30)});
    std::string src = big_source(3000);
    std::promise<py::CompileResult> done;
    ASSERT_TRUE(pool.compile_async(ContentHash::of(src), request(src, "bg.py"),
                                   [&](const py::CompileResult& r) { done.set_value(r); }));
    EXPECT_FALSE(pool.compile_async(ContentHash::of(src), request(src, "bg.py"), nullptr));
    // A foreground request for the same key joins (and promotes) the background job.
    auto fg = pool.compile(ContentHash::of(src), request(src, "bg.py"));
    EXPECT_EQ(fg.status, Status::Ok);
    auto bg = done.get_future().get();
    EXPECT_EQ(bg.status, Status::Ok);
    EXPECT_EQ(bg.code, fg.code);
    EXPECT_EQ(pool.stats().compiles, 1U);
}

// The scheduling policy of a process, from sched_getscheduler(2); -1 once it is gone.
int policy_of(pid_t pid) {
    return ::sched_getscheduler(pid);
}

bool wait_for(const std::function<bool()>& predicate) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
        if (predicate()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
}

TEST(CompilerPool, CompilesAheadRunIdleClassUntilAnImporterWaits) {
    if (::geteuid() != 0) GTEST_SKIP() << "raising a worker back needs CAP_SYS_NICE";
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{1, std::chrono::seconds(60)});
    // A foreground compile first: the worker exists and has the normal class.
    auto warm = pool.compile(ContentHash::of("x = 1\n"), request("x = 1\n", "x.py"));
    ASSERT_EQ(warm.status, Status::Ok);
    ASSERT_EQ(pool.worker_pids().size(), 1U);
    const pid_t worker = pool.worker_pids()[0];
    EXPECT_EQ(policy_of(worker), SCHED_OTHER);

    std::string src = big_source(60000); // seconds of compile on this machine
    std::promise<py::CompileResult> done;
    ASSERT_TRUE(pool.compile_async(ContentHash::of(src), request(src, "ahead.py"),
                                   [&](const py::CompileResult& r) { done.set_value(r); }));
    EXPECT_TRUE(wait_for([&] { return policy_of(worker) == SCHED_IDLE; }))
        << "a compile ahead runs in the idle class";
    // An importer now needs the same module: it joins, and the worker is raised back.
    auto fg = std::async(std::launch::async, [&] {
        return pool.compile(ContentHash::of(src), request(src, "ahead.py"));
    });
    EXPECT_TRUE(wait_for([&] { return policy_of(worker) == SCHED_OTHER; }))
        << "a joined compile ahead must not stay in the idle class";
    EXPECT_EQ(fg.get().status, Status::Ok);
    EXPECT_EQ(done.get_future().get().status, Status::Ok);
    EXPECT_EQ(pool.stats().compiles, 2U);
    // The next foreground compile keeps the normal class.
    auto after = pool.compile(ContentHash::of("y = 2\n"), request("y = 2\n", "y.py"));
    EXPECT_EQ(after.status, Status::Ok);
    EXPECT_EQ(policy_of(worker), SCHED_OTHER);
}

TEST(CompilerPool, DefaultPoolRunsAheadOnEveryCoreAndKeepsAWorkerForImporters) {
    const unsigned cores = std::max(1U, std::thread::hardware_concurrency());
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{0, std::chrono::seconds(60)});
    std::atomic<unsigned> finished{0};
    for (unsigned i = 0; i < cores; ++i) {
        std::string src = big_source(60000) + "AHEAD = " + std::to_string(i) + "\n";
        ASSERT_TRUE(pool.compile_async(ContentHash::of(src), request(src, "ahead.py"),
                                       [&](const py::CompileResult&) { ++finished; }));
    }
    EXPECT_TRUE(wait_for([&] { return pool.worker_pids().size() == cores; }))
        << "compiles ahead should run on every core at once";
    // Every core is busy compiling ahead, yet an importer's compile starts at once on the
    // worker kept for it: it is done while all of them still run.
    auto fg = pool.compile(ContentHash::of("x = 1\n"), request("x = 1\n", "x.py"));
    EXPECT_EQ(fg.status, Status::Ok);
    EXPECT_EQ(finished.load(), 0U);
    EXPECT_EQ(pool.worker_pids().size(), cores + 1);
    EXPECT_TRUE(wait_for([&] { return finished.load() == cores; }));
}

TEST(CompilerPool, WorkersKeepTheProcessAffinityWhateverThreadStartsThem) {
    cpu_set_t all;
    ASSERT_EQ(::sched_getaffinity(::getpid(), sizeof all, &all), 0);
    if (CPU_COUNT(&all) < 2) GTEST_SKIP() << "needs two CPUs";
    int first = 0;
    while (!CPU_ISSET(first, &all)) ++first;
    py::CompilerPool pool(fault_interpreter(), py::PoolOptions{1, std::chrono::seconds(30)});
    // The first compile comes from a thread pinned to one CPU (as a FUSE io_uring worker is).
    std::thread([&] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(first, &one);
        ASSERT_EQ(::sched_setaffinity(0, sizeof one, &one), 0);
        EXPECT_EQ(pool.compile(ContentHash::of("x = 1\n"), request("x = 1\n", "x.py")).status,
                  Status::Ok);
    }).join();
    ASSERT_EQ(pool.worker_pids().size(), 1U);
    cpu_set_t worker;
    ASSERT_EQ(::sched_getaffinity(pool.worker_pids()[0], sizeof worker, &worker), 0);
    EXPECT_TRUE(CPU_EQUAL(&worker, &all)) << "the compile worker is confined to CPU " << first;
}

TEST(CompilerPool, WorkersDieWithThePool) {
    std::vector<pid_t> pids;
    {
        py::CompilerPool pool(fault_interpreter(), py::PoolOptions{2, std::chrono::seconds(30)});
        std::string a = big_source(3000), b = big_source(3001);
        auto fa = std::async(std::launch::async,
                             [&] { return pool.compile(ContentHash::of(a), request(a, "a.py")); });
        auto fb = std::async(std::launch::async,
                             [&] { return pool.compile(ContentHash::of(b), request(b, "b.py")); });
        EXPECT_EQ(fa.get().status, Status::Ok);
        EXPECT_EQ(fb.get().status, Status::Ok);
        pids = pool.worker_pids();
        EXPECT_EQ(pids.size(), 2U);
        for (pid_t pid : pids) EXPECT_TRUE(pid_exists(pid));
    }
    for (pid_t pid : pids) EXPECT_FALSE(pid_exists(pid)) << pid << " outlived its pool";
}

TEST(CompilerPool, DestroyingThePoolInterruptsACompileInFlight) {
    std::string src = big_source(60000);
    std::vector<pid_t> pids;
    auto begin = std::chrono::steady_clock::now();
    {
        py::CompilerPool pool(fault_interpreter(), py::PoolOptions{1, std::chrono::seconds(30)});
        ASSERT_TRUE(pool.compile_async(ContentHash::of(src), request(src, "big.py"), nullptr));
        while (pool.worker_pids().empty())
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        pids = pool.worker_pids();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(2));
    for (pid_t pid : pids) EXPECT_FALSE(pid_exists(pid));
}

TEST(CompilerPool, UnstartableInterpreterFails) {
    py::Interpreter bogus = fault_interpreter();
    bogus.path = "/nonexistent/python3.12";
    py::CompilerPool pool(bogus, py::PoolOptions{1, std::chrono::seconds(5)});
    auto r = pool.compile(ContentHash::of("x=1\n"), request("x=1\n", "x.py"));
    EXPECT_EQ(r.status, Status::Failed);
    EXPECT_NE(r.error_message.find("/nonexistent/python3.12"), std::string::npos)
        << r.error_message;
}
