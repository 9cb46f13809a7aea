// BytecodeCache end to end: real interpreters compile, a real LMDB store keeps the entries, and
// every served pyc is loaded by the interpreter it was made for, without recompiling.

#include "cachecore/bytecode_cache.hpp"
#include "cachecore/pyc/cache_name.hpp"
#include "cachecore/store/environment.hpp"
#include "cachecore/util/unique_fd.hpp"
#include "support_python_finder.hpp"

#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <future>
#include <grp.h>
#include <gtest/gtest.h>
#include <iostream>
#include <lmdb.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace cachecore;
using pycachefs::test::describe;
using pycachefs::test::read_file;
using pycachefs::test::run_process;
using pycachefs::test::TempDir;
using pycachefs::test::test_pythons;
using pycachefs::test::write_file;
namespace fs = std::filesystem;

namespace {

const char* const k_module = R"("""module docstring"""
def f():
    """f docstring"""
    assert False, "asserts are on"
    return 1
try:
    f()
    ASSERTS = False
except AssertionError:
    ASSERTS = True
DOC = f.__doc__
RESULT = 42
)";

// Imports pkg.mod from D and compares the code in the pyc with the interpreter's own compile().
const char* const k_import_script = R"(import sys, marshal
D, pyc, src, opt, hs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, D)
import pkg.mod
with open(pyc, 'rb') as fp:
    data = fp.read()
with open(src, 'rb') as fp:
    source = fp.read()
code = marshal.loads(data[hs:])
ref = compile(source, src, 'exec', dont_inherit=True, optimize=opt)
print('EQUAL' if code == ref else 'DIFFERENT')
print(pkg.mod.ASSERTS, repr(pkg.mod.DOC), pkg.mod.RESULT)
)";

util::UniqueFd open_dir(const fs::path& p) {
    return util::UniqueFd(::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

struct ImportRun {
    bool used_pyc = false;   // -v says the code object came from our pyc
    bool pyc_intact = false; // the pyc file is byte-identical afterwards
    std::string out;
    std::string err;
    int exit_code = -1;
};

class BytecodeCacheTest : public ::testing::Test {
protected:
    void SetUp() override {
        store::StoreOptions o;
        o.dir = store_dir.path() / "store";
        store = std::make_unique<store::Store>(o);
        BytecodeCacheOptions opts;
        opts.pool.workers = 1;
        cache = std::make_unique<BytecodeCache>(*store, opts);
        fs::create_directories(tree.path() / "pkg" / "__pycache__");
        write_file(tree.path() / "pkg" / "__init__.py", "");
        pkg_fd = open_dir(tree.path() / "pkg");
        ASSERT_TRUE(pkg_fd);
    }
    void TearDown() override {
        cache.reset();
        store.reset();
    }

    fs::path src() const { return tree.path() / "pkg" / "mod.py"; }
    fs::path pyc_path(const python::Interpreter& py, int optimize) const {
        return tree.path() / "pkg" / "__pycache__" /
               pyc::format_cache_name({"mod", py.cache_tag, optimize});
    }

    PycResult get(const python::Interpreter& py, int optimize, pyc::PycMode mode,
                  const std::string& name = "mod.py") {
        return cache->get_pyc(pkg_fd.get(), name, nullptr, py, optimize, mode,
                              (tree.path() / "pkg" / name).string());
    }

    // get_pyc, then writes the bytes where CPython will look for them.
    Pyc produce(const python::Interpreter& py, int optimize, pyc::PycMode mode) {
        auto r = get(py, optimize, mode);
        if (auto* e = std::get_if<PycError>(&r)) {
            ADD_FAILURE() << describe(py) << ": " << e->message;
            return {};
        }
        auto pyc = std::get<Pyc>(r);
        write_file(pyc_path(py, optimize), pyc.bytes);
        return pyc;
    }

    ImportRun import_mod(const python::Interpreter& py, int optimize,
                         std::vector<std::string> extra = {}) {
        const auto pyc = pyc_path(py, optimize);
        const std::string before = fs::exists(pyc) ? read_file(pyc) : "";
        std::vector<std::string> argv = {py.path, "-I", "-v"};
        for (int i = 0; i < optimize; ++i) argv.push_back("-O");
        for (auto& e : extra) argv.push_back(e);
        argv.insert(argv.end(),
                    {"-c", k_import_script, tree.str(), pyc.string(), src().string(),
                     std::to_string(optimize), std::to_string(pyc::header_size(py.minor))});
        auto r = run_process(argv, {}, std::chrono::seconds(60),
                             {"PATH=/usr/bin:/bin"}); // like `env -i PATH=/usr/bin:/bin`
        ImportRun out;
        out.exit_code = r.exit_code;
        out.out = r.out;
        out.err = r.err;
        out.used_pyc = r.err.find("code object from '" + pyc.string() + "'") != std::string::npos;
        out.pyc_intact = fs::exists(pyc) && read_file(pyc) == before;
        return out;
    }

    store::Counters counters(const python::Interpreter& py) {
        return cache->counters()[py.cache_tag];
    }

    TempDir store_dir{"pycachefs-store"};
    TempDir tree{"pycachefs-tree"};
    std::unique_ptr<store::Store> store;
    std::unique_ptr<BytecodeCache> cache;
    util::UniqueFd pkg_fd;
};

std::string expected_line(int optimize) {
    if (optimize == 0) return "True 'f docstring' 42";
    if (optimize == 1) return "False 'f docstring' 42";
    return "False None 42";
}

} // namespace

// Every interpreter, every optimize level: the pyc is loaded as is and equals compile().
TEST_F(BytecodeCacheTest, TimestampPycLoadsWithoutRecompiling) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    write_file(src(), k_module);
    for (const auto& py : test_pythons()) {
        for (int optimize : {0, 1, 2}) {
            SCOPED_TRACE(describe(py) + " optimize " + std::to_string(optimize));
            Pyc pyc = produce(py, optimize, pyc::PycMode::Timestamp);
            ASSERT_FALSE(pyc.bytes.empty());
            auto h = pyc::parse_header(pyc.bytes, py.minor);
            ASSERT_TRUE(h);
            EXPECT_EQ(h->magic, py.magic);
            EXPECT_FALSE(h->hash_based);
            EXPECT_EQ(h->size, std::uint32_t(std::string(k_module).size()));
            auto run = import_mod(py, optimize);
            ASSERT_EQ(run.exit_code, 0) << run.err;
            EXPECT_TRUE(run.used_pyc) << run.err;
            EXPECT_TRUE(run.pyc_intact);
            std::istringstream lines(run.out);
            std::string equal, values;
            std::getline(lines, equal);
            std::getline(lines, values);
            EXPECT_EQ(equal, "EQUAL");
            EXPECT_EQ(values, expected_line(optimize));
        }
    }
}

TEST_F(BytecodeCacheTest, HashPycsLoadAndUncheckedOnesGoStale) {
    auto pythons = pycachefs::test::test_pythons_with_hash_pycs();
    if (pythons.empty()) GTEST_SKIP() << "no CPython 3.7+ found";
    for (const auto& py : pythons) {
        SCOPED_TRACE(describe(py));
        write_file(src(), k_module);
        // Checked: CPython reads and hashes the source, finds it equal, and uses the pyc.
        Pyc checked = produce(py, 0, pyc::PycMode::CheckedHash);
        auto h = pyc::parse_header(checked.bytes, py.minor);
        ASSERT_TRUE(h);
        EXPECT_TRUE(h->hash_based);
        EXPECT_TRUE(h->check_source);
        auto run = import_mod(py, 0);
        ASSERT_EQ(run.exit_code, 0) << run.err;
        EXPECT_TRUE(run.used_pyc) << run.err;
        EXPECT_TRUE(run.pyc_intact);
        EXPECT_EQ(run.out.substr(0, 6), "EQUAL\n");

        // Unchecked: used as is...
        Pyc unchecked = produce(py, 0, pyc::PycMode::UncheckedHash);
        EXPECT_FALSE(unchecked.compiled); // same content: the store already has it
        h = pyc::parse_header(unchecked.bytes, py.minor);
        ASSERT_TRUE(h);
        EXPECT_TRUE(h->hash_based);
        EXPECT_FALSE(h->check_source);
        run = import_mod(py, 0);
        ASSERT_EQ(run.exit_code, 0) << run.err;
        EXPECT_TRUE(run.used_pyc) << run.err;
        EXPECT_TRUE(run.pyc_intact);

        // ...and still used after the source changed: with default settings CPython never looks
        // at the source again. This is why the filesystem must never serve an unchecked pyc
        // for anything but the exact current bytes: nothing downstream would catch it.
        std::string edited = k_module;
        edited.replace(edited.find("RESULT = 42"), 11, "RESULT = 7");
        edited += "# " + py.path + "\n"; // unique per build: 3.11.2 and 3.11.7 share a magic
        write_file(src(), edited);
        run = import_mod(py, 0);
        ASSERT_EQ(run.exit_code, 0) << run.err;
        EXPECT_TRUE(run.used_pyc) << run.err;
        EXPECT_NE(run.out.find("'f docstring' 42"), std::string::npos) << run.out; // stale!
        EXPECT_NE(run.out.find("DIFFERENT"), std::string::npos) << run.out;

        // A checked pyc of the old bytes is rejected by CPython instead (and recompiled).
        write_file(pyc_path(py, 0), checked.bytes);
        run = import_mod(py, 0);
        ASSERT_EQ(run.exit_code, 0) << run.err;
        EXPECT_FALSE(run.used_pyc) << run.err;
        EXPECT_NE(run.out.find("'f docstring' 7"), std::string::npos) << run.out;
        // The cache itself serves the new body for the new bytes.
        Pyc fresh = produce(py, 0, pyc::PycMode::UncheckedHash);
        EXPECT_TRUE(fresh.compiled);
        run = import_mod(py, 0);
        EXPECT_TRUE(run.used_pyc) << run.err;
        EXPECT_NE(run.out.find("EQUAL\n"), std::string::npos) << run.out;
        EXPECT_NE(run.out.find("'f docstring' 7"), std::string::npos) << run.out;
        fs::remove(pyc_path(py, 0));
    }
}

TEST_F(BytecodeCacheTest, SyntaxErrorIsStoredAsNegativeEntry) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const std::string bad = "a = 1\nb = 2\nc = = 3\n";
    write_file(src(), bad);
    for (const auto& py : test_pythons()) {
        SCOPED_TRACE(describe(py));
        auto ref =
            run_process({py.path, "-I", "-S", "-c",
                         "import sys\ntry:\n    compile(sys.stdin.buffer.read(), 'x', 'exec')\n"
                         "except SyntaxError as e:\n    print(e.lineno)\n    print(e.msg)\n"},
                        bad);
        ASSERT_EQ(ref.exit_code, 0) << ref.err;
        std::istringstream lines(ref.out);
        std::string line_text, msg;
        std::getline(lines, line_text);
        std::getline(lines, msg);

        auto r = get(py, 0, pyc::PycMode::Timestamp);
        auto* e = std::get_if<PycError>(&r);
        ASSERT_TRUE(e);
        EXPECT_EQ(e->kind, PycErrorKind::Compile);
        EXPECT_EQ(e->compile.type, "SyntaxError");
        EXPECT_EQ(e->compile.message, msg);
        EXPECT_EQ(e->compile.line, std::stoi(line_text));
        EXPECT_NE(e->message.find("mod.py"), std::string::npos) << e->message;
        auto c1 = counters(py);
        EXPECT_EQ(c1.compile_errors, 1u);
        EXPECT_EQ(c1.compiles, 0u);

        // Second call: answered from the stored negative entry, no compile.
        r = get(py, 0, pyc::PycMode::Timestamp);
        e = std::get_if<PycError>(&r);
        ASSERT_TRUE(e);
        EXPECT_EQ(e->kind, PycErrorKind::Compile);
        EXPECT_EQ(e->compile.message, msg);
        auto c2 = counters(py);
        EXPECT_EQ(c2.compile_errors, 1u);
        EXPECT_EQ(c2.compiles, 0u);
        EXPECT_EQ(c2.hits, c1.hits + 1);
        PycError werr;
        EXPECT_EQ(cache->warm(pkg_fd.get(), "mod.py", py, 0, &werr),
                  BytecodeCache::WarmOutcome::CompileError);
        EXPECT_EQ(werr.compile.line, std::stoi(line_text));
    }
    // Entries survive in the store itself.
    store->flush();
    auto usage = store->usage();
    EXPECT_GE(usage.error_entries, 1u);
}

TEST_F(BytecodeCacheTest, SameContentAtAnotherPathCompilesNothing) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    fs::create_directories(tree.path() / "other");
    auto other_fd = open_dir(tree.path() / "other");
    for (const auto& py : test_pythons()) {
        SCOPED_TRACE(describe(py));
        // Unique per build: 3.11.2 and 3.11.7 share a magic, hence store entries.
        const std::string body = std::string(k_module) + "# " + py.path + "\n";
        write_file(src(), body);
        write_file(tree.path() / "other" / "copy.py", body);
        auto a = get(py, 0, pyc::PycMode::Timestamp);
        ASSERT_TRUE(std::holds_alternative<Pyc>(a));
        EXPECT_TRUE(std::get<Pyc>(a).compiled);
        const auto compiles = counters(py).compiles;
        auto b =
            cache->get_pyc(other_fd.get(), "copy.py", nullptr, py, 0, pyc::PycMode::Timestamp, "");
        ASSERT_TRUE(std::holds_alternative<Pyc>(b));
        EXPECT_FALSE(std::get<Pyc>(b).compiled);
        EXPECT_EQ(counters(py).compiles, compiles);
        EXPECT_EQ(std::get<Pyc>(a).content, std::get<Pyc>(b).content);
        const auto hs = pyc::header_size(py.minor);
        EXPECT_EQ(std::get<Pyc>(a).bytes.substr(hs), std::get<Pyc>(b).bytes.substr(hs));
        // A fresh cache over the same store (another process, in effect, once the batch is
        // committed) compiles nothing either.
        store->flush();
        BytecodeCache second(*store, {});
        auto c =
            second.get_pyc(other_fd.get(), "copy.py", nullptr, py, 0, pyc::PycMode::Timestamp, "");
        ASSERT_TRUE(std::holds_alternative<Pyc>(c));
        EXPECT_FALSE(std::get<Pyc>(c).compiled);
        EXPECT_EQ(second.counters()[py.cache_tag].compiles, 0u);
    }
}

TEST_F(BytecodeCacheTest, SameSizeSameSecondRewriteGetsNewBody) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    for (const auto& py : test_pythons()) {
        SCOPED_TRACE(describe(py));
        write_file(src(), "RESULT = 1\nASSERTS = DOC = None\n");
        struct timespec t[2] = {{1700000000, 123}, {1700000000, 123}};
        ASSERT_EQ(::utimensat(AT_FDCWD, src().c_str(), t, 0), 0);
        auto first = get(py, 0, pyc::PycMode::Timestamp);
        ASSERT_TRUE(std::holds_alternative<Pyc>(first));

        write_file(src(), "RESULT = 2\nASSERTS = DOC = None\n");
        ASSERT_EQ(::utimensat(AT_FDCWD, src().c_str(), t, 0), 0); // same size, same mtime
        auto second = get(py, 0, pyc::PycMode::Timestamp);
        ASSERT_TRUE(std::holds_alternative<Pyc>(second));
        const auto& p2 = std::get<Pyc>(second);
        EXPECT_EQ(p2.content, hash::ContentHash::of("RESULT = 2\nASSERTS = DOC = None\n"));
        EXPECT_NE(std::get<Pyc>(first).bytes, p2.bytes);
        EXPECT_EQ(p2.stamp.mtime_sec(), 1700000000);
        write_file(pyc_path(py, 0), p2.bytes);
        auto run = import_mod(py, 0);
        ASSERT_EQ(run.exit_code, 0) << run.err;
        EXPECT_TRUE(run.used_pyc) << run.err;
        EXPECT_NE(run.out.find("None None 2"), std::string::npos) << run.out;
        fs::remove(pyc_path(py, 0));
    }
}

TEST_F(BytecodeCacheTest, NonRegularSourcesAreNotFoundWithoutHanging) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const auto& py = test_pythons().back();
    ASSERT_EQ(::mkfifo((tree.path() / "pkg" / "x.py").c_str(), 0644), 0);
    fs::create_directories(tree.path() / "pkg" / "d.py");
    write_file(tree.path() / "pkg" / "regular.py", "V = 1\n");
    struct stat regular {};
    ASSERT_EQ(::stat((tree.path() / "pkg" / "regular.py").c_str(), &regular), 0);

    auto fut = std::async(std::launch::async, [&] {
        std::vector<PycErrorKind> kinds;
        for (const char* name : {"x.py", "d.py", "missing.py"}) {
            auto r = get(py, 0, pyc::PycMode::Timestamp, name);
            kinds.push_back(std::holds_alternative<PycError>(r) ? std::get<PycError>(r).kind
                                                                : PycErrorKind::Io);
        }
        // A stale caller stat saying "regular file" for what is now a FIFO: the open must not
        // block and the fstat re-check must refuse it.
        auto r =
            cache->get_pyc(pkg_fd.get(), "x.py", &regular, py, 0, pyc::PycMode::Timestamp, "x.py");
        kinds.push_back(std::holds_alternative<PycError>(r) ? std::get<PycError>(r).kind
                                                            : PycErrorKind::Io);
        return kinds;
    });
    ASSERT_EQ(fut.wait_for(std::chrono::seconds(20)), std::future_status::ready) << "hung";
    for (auto k : fut.get()) EXPECT_EQ(k, PycErrorKind::NotFound);
}

TEST_F(BytecodeCacheTest, UnreadableSourceIsIoError) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const auto& py = test_pythons().back();
    write_file(src(), "V = 1\n");
    // A symlink loop: stat fails with ELOOP, which is an I/O error, not "missing".
    fs::create_symlink("loop.py", tree.path() / "pkg" / "loop.py");
    auto r = get(py, 0, pyc::PycMode::Timestamp, "loop.py");
    ASSERT_TRUE(std::holds_alternative<PycError>(r));
    EXPECT_EQ(std::get<PycError>(r).kind, PycErrorKind::Io);
    EXPECT_EQ(std::get<PycError>(r).err_no, ELOOP);

    ASSERT_EQ(::chmod(src().c_str(), 0), 0);
    if (::geteuid() != 0) {
        r = get(py, 0, pyc::PycMode::Timestamp);
        ASSERT_TRUE(std::holds_alternative<PycError>(r));
        EXPECT_EQ(std::get<PycError>(r).kind, PycErrorKind::Io);
        EXPECT_EQ(std::get<PycError>(r).err_no, EACCES);
        return;
    }
    // As root, permission bits do not stop us: check EACCES in a child that drops to nobody.
    // The failing path never reaches the store or the pool (open fails first).
    ::chmod(tree.path().c_str(), 0755);
    ::chmod((tree.path() / "pkg").c_str(), 0755);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
            ::setresuid(65534, 65534, 65534) != 0)
            ::_exit(10);
        auto rr = cache->get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 0, pyc::PycMode::Timestamp,
                                 "mod.py");
        auto* e = std::get_if<PycError>(&rr);
        ::_exit(!e ? 11 : e->kind != PycErrorKind::Io ? 12 : e->err_no != EACCES ? 13 : 0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(BytecodeCacheTest, WarmPrefetchAndPersistedCounters) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const auto& py = test_pythons().back();
    write_file(src(), k_module);
    write_file(tree.path() / "pkg" / "sib.py", "S = 1\n");
    EXPECT_EQ(cache->warm(pkg_fd.get(), "mod.py", py, 0), BytecodeCache::WarmOutcome::Compiled);
    EXPECT_EQ(cache->warm(pkg_fd.get(), "mod.py", py, 0),
              BytecodeCache::WarmOutcome::AlreadyStored);
    PycError err;
    EXPECT_EQ(cache->warm(pkg_fd.get(), "nope.py", py, 0, &err),
              BytecodeCache::WarmOutcome::Failed);
    EXPECT_EQ(err.kind, PycErrorKind::NotFound);

    cache->prefetch(pkg_fd.get(), "sib.py", py, 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (counters(py).compiles < 2 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(counters(py).compiles, 2u);
    store->flush();
    auto r = get(py, 0, pyc::PycMode::Timestamp, "sib.py");
    ASSERT_TRUE(std::holds_alternative<Pyc>(r));
    EXPECT_FALSE(std::get<Pyc>(r).compiled);

    auto mine = counters(py);
    EXPECT_EQ(mine.pycs_served, 1u);
    EXPECT_EQ(mine.bytes_served, std::get<Pyc>(r).bytes.size());
    EXPECT_GT(mine.compile_seconds, 0.0);
    cache.reset(); // pushes the remaining deltas
    store->flush();
    auto persisted = store->counters()[py.cache_tag];
    EXPECT_EQ(persisted.compiles, 2u);
    EXPECT_EQ(persisted.pycs_served, 1u);
    EXPECT_EQ(persisted.bytes_served, mine.bytes_served);
}

TEST_F(BytecodeCacheTest, UnusableInterpreter) {
    write_file(src(), "V = 1\n");
    python::Interpreter none;
    auto r = get(none, 0, pyc::PycMode::Timestamp);
    ASSERT_TRUE(std::holds_alternative<PycError>(r));
    EXPECT_EQ(std::get<PycError>(r).kind, PycErrorKind::NoInterpreter);
}

// A remembered stamp plus a stored entry serve the pyc without opening the source at all (the
// name below does not even exist); then the hit path is timed.
TEST_F(BytecodeCacheTest, MemoHitNeverReadsTheSource) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const auto& py = test_pythons().back();
    BytecodeCacheOptions opts;
    opts.pool.workers = 1;
    opts.memo_racy_window_ns = 0; // trust stamps at once (the file was written just now)
    BytecodeCache trusting(*store, opts);
    write_file(src(), k_module);
    struct stat st {};
    ASSERT_EQ(::stat(src().c_str(), &st), 0);
    auto first = trusting.get_pyc(pkg_fd.get(), "mod.py", &st, py, 0, pyc::PycMode::Timestamp, "");
    ASSERT_TRUE(std::holds_alternative<Pyc>(first));
    auto again =
        trusting.get_pyc(pkg_fd.get(), "no-such-file.py", &st, py, 0, pyc::PycMode::Timestamp, "");
    ASSERT_TRUE(std::holds_alternative<Pyc>(again));
    EXPECT_EQ(std::get<Pyc>(again).bytes, std::get<Pyc>(first).bytes);
    // The default cache (racy window) must not trust the fresh stamp: it tries to read.
    auto strict =
        cache->get_pyc(pkg_fd.get(), "no-such-file.py", &st, py, 0, pyc::PycMode::Timestamp, "");
    ASSERT_TRUE(std::holds_alternative<PycError>(strict));
    EXPECT_EQ(std::get<PycError>(strict).kind, PycErrorKind::NotFound);

    constexpr int k_rounds = 2000;
    auto time_it = [&](BytecodeCache& c, const struct stat* given) {
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < k_rounds; ++i) {
            auto r = c.get_pyc(pkg_fd.get(), "mod.py", given, py, 0, pyc::PycMode::Timestamp, "");
            if (!std::holds_alternative<Pyc>(r)) ADD_FAILURE() << "miss";
        }
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                   .count() /
               k_rounds;
    };
    std::cout << "  hit, memo + stat given: " << time_it(trusting, &st) << " us\n"
              << "  hit, memo + own stat:   " << time_it(trusting, nullptr) << " us\n"
              << "  hit, racy (re-read+hash): " << time_it(*cache, nullptr) << " us ("
              << std::get<Pyc>(first).bytes.size() << " B pyc)\n";
}

// A new process (a fresh mount) over the same store: the stamps the last one learned tell it
// what an unchanged source hashes to, so it serves the pyc without reading the source. A
// source changed since (here: same size, mtime set back, so only its ctime differs) is read
// again and served with its new content.
TEST_F(BytecodeCacheTest, StampsSpareANewProcessTheSourceReads) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    if (::access("/proc/sys/kernel/random/boot_id", R_OK) != 0) GTEST_SKIP() << "no boot id";
    const auto& py = test_pythons().back();
    BytecodeCacheOptions opts;
    opts.pool.workers = 1;
    opts.memo_racy_window_ns = 0; // the file was written just now
    write_file(src(), "X = 1\n");
    std::string first_bytes;
    {
        BytecodeCache first(*store, opts);
        auto r = first.get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 0, pyc::PycMode::Timestamp, "");
        ASSERT_TRUE(std::holds_alternative<Pyc>(r));
        first_bytes = std::get<Pyc>(r).bytes;
        EXPECT_EQ(first.sources_read(), 1u);
    }
    store->flush();
    {
        BytecodeCache second(*store, opts);
        auto r = second.get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 0, pyc::PycMode::Timestamp, "",
                                OnMiss::Fail);
        ASSERT_TRUE(std::holds_alternative<Pyc>(r));
        EXPECT_EQ(std::get<Pyc>(r).bytes, first_bytes);
        EXPECT_EQ(second.sources_read(), 0u) << "read a source its stamp already vouched for";
    }
    // Same size, mtime put back: only the ctime tells.
    struct stat before {};
    ASSERT_EQ(::stat(src().c_str(), &before), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    write_file(src(), "X = 2\n");
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, src().c_str(), times, 0), 0);
    {
        BytecodeCache third(*store, opts);
        auto r = third.get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 0, pyc::PycMode::Timestamp, "");
        ASSERT_TRUE(std::holds_alternative<Pyc>(r));
        EXPECT_NE(std::get<Pyc>(r).bytes, first_bytes) << "served the old content";
        EXPECT_EQ(third.sources_read(), 1u);
    }
    // A stamp too recent to trust is not kept for the next process either.
    write_file(src(), "X = 3\n");
    store->flush();
    BytecodeCacheOptions strict_opts;
    strict_opts.pool.workers = 1;
    {
        BytecodeCache strict(*store, strict_opts);
        ASSERT_TRUE(std::holds_alternative<Pyc>(
            strict.get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 0, pyc::PycMode::Timestamp, "")));
    }
    store->flush();
    BytecodeCache next(*store, strict_opts);
    ASSERT_TRUE(std::holds_alternative<Pyc>(
        next.get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 0, pyc::PycMode::Timestamp, "")));
    EXPECT_EQ(next.sources_read(), 1u) << "a racy stamp was kept";
}

// A lookup that only takes what the store has (the look-ahead's) does not read a source whose
// content is known but not stored.
TEST_F(BytecodeCacheTest, OnMissFailNeedsNoSourceForAKnownStamp) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const auto& py = test_pythons().back();
    BytecodeCacheOptions opts;
    opts.pool.workers = 1;
    opts.memo_racy_window_ns = 0;
    BytecodeCache c(*store, opts);
    write_file(src(), "Y = 1\n");
    // Stored for optimize 0 only: the stamp is now known.
    ASSERT_TRUE(std::holds_alternative<Pyc>(
        c.get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 0, pyc::PycMode::Timestamp, "")));
    EXPECT_EQ(c.sources_read(), 1u);
    auto r = c.get_pyc(pkg_fd.get(), "mod.py", nullptr, py, 1, pyc::PycMode::Timestamp, "",
                       OnMiss::Fail);
    ASSERT_TRUE(std::holds_alternative<PycError>(r));
    EXPECT_EQ(std::get<PycError>(r).kind, PycErrorKind::NotStored);
    EXPECT_EQ(c.sources_read(), 1u);
}

// Import lists (for walks of the import graph) are kept by content: a new process gets a known
// source's list from the store without reading it; an edited source is read and scanned again;
// content seen before under another name is read (to hash it) but not scanned; a damaged list
// is a miss, never a wrong list.
TEST_F(BytecodeCacheTest, ImportListsComeFromTheStoreByContent) {
    if (::access("/proc/sys/kernel/random/boot_id", R_OK) != 0) GTEST_SKIP() << "no boot id";
    BytecodeCacheOptions opts;
    opts.pool.workers = 1;
    opts.memo_racy_window_ns = 0; // the files are written just now
    auto imports_of = [&](BytecodeCache& c, const fs::path& path) {
        util::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        struct stat st {};
        EXPECT_EQ(::fstat(fd.get(), &st), 0);
        auto refs = c.imports_of(fd.get(), st);
        EXPECT_TRUE(refs.has_value());
        std::vector<std::string> modules;
        for (const auto& ref : refs.value_or(std::vector<imports::ImportRef>{}))
            modules.push_back(std::string(std::size_t(ref.level), '.') + ref.module +
                              (ref.deferred ? " (deferred)" : ""));
        return modules;
    };
    using Modules = std::vector<std::string>;
    write_file(src(), "import os.path\nfrom . import sib\ndef f():\n    import json\n");
    {
        BytecodeCache first(*store, opts);
        EXPECT_EQ(imports_of(first, src()), (Modules{"os.path", ".", "json (deferred)"}));
        EXPECT_EQ(first.import_lists().scanned, 1u);
        EXPECT_EQ(first.sources_read(), 1u);
    }
    store->flush();
    {
        BytecodeCache second(*store, opts);
        EXPECT_EQ(imports_of(second, src()), (Modules{"os.path", ".", "json (deferred)"}));
        EXPECT_EQ(second.import_lists().from_store, 1u);
        EXPECT_EQ(second.import_lists().scanned, 0u);
        EXPECT_EQ(second.sources_read(), 0u) << "read a source whose list was stored";
        // The same bytes under another name: hashed (read), not scanned.
        write_file(tree.path() / "pkg" / "copy.py",
                   "import os.path\nfrom . import sib\ndef f():\n    import json\n");
        EXPECT_EQ(imports_of(second, tree.path() / "pkg" / "copy.py"),
                  (Modules{"os.path", ".", "json (deferred)"}));
        EXPECT_EQ(second.import_lists().scanned, 0u);
        EXPECT_EQ(second.sources_read(), 1u);
    }
    // Same size, mtime put back: the new content's list, not the stored one.
    struct stat before {};
    ASSERT_EQ(::stat(src().c_str(), &before), 0);
    write_file(src(), "import re.sre\nfrom . import abc\ndef f():\n    import csv\n");
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, src().c_str(), times, 0), 0);
    store->flush();
    {
        BytecodeCache third(*store, opts);
        EXPECT_EQ(imports_of(third, src()), (Modules{"re.sre", ".", "csv (deferred)"}));
        EXPECT_EQ(third.import_lists().scanned, 1u);
    }
    // Every stored list damaged: each is scanned again. (The store is closed for this: LMDB
    // must not be opened twice in one process.)
    cache.reset();
    store.reset();
    {
        MDB_env* env = nullptr;
        ASSERT_EQ(mdb_env_create(&env), 0);
        ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
        ASSERT_EQ(mdb_env_open(env, (store_dir.path() / "store").c_str(), 0, 0644), 0);
        MDB_txn* txn = nullptr;
        ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
        MDB_dbi dbi;
        ASSERT_EQ(mdb_dbi_open(txn, store::k_imports_db, 0, &dbi), 0);
        MDB_cursor* cursor = nullptr;
        ASSERT_EQ(mdb_cursor_open(txn, dbi, &cursor), 0);
        MDB_val k{}, v{};
        int damaged = 0;
        for (int rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)) {
            std::string bad(static_cast<const char*>(v.mv_data), v.mv_size);
            bad.back() ^= 0x5a;
            bad += "x"; // trailing bytes
            MDB_val nv{bad.size(), bad.data()};
            ASSERT_EQ(mdb_cursor_put(cursor, &k, &nv, MDB_CURRENT), 0);
            ++damaged;
        }
        mdb_cursor_close(cursor);
        ASSERT_EQ(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
        EXPECT_EQ(damaged, 2);
    }
    store::StoreOptions o;
    o.dir = store_dir.path() / "store";
    store = std::make_unique<store::Store>(o);
    BytecodeCache fourth(*store, opts);
    EXPECT_EQ(imports_of(fourth, src()), (Modules{"re.sre", ".", "csv (deferred)"}));
    EXPECT_EQ(fourth.import_lists().from_store, 0u);
    EXPECT_EQ(fourth.import_lists().scanned, 1u);
}
