// The LMDB store: real environments in temp dirs, real threads, a real second process and a
// real full filesystem (a 2 MiB tmpfs).

#include "cachecore/store/environment.hpp"
#include "cachecore/store/store.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <random>
#include <spawn.h>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace cachecore;
using namespace cachecore::store;
namespace fs = std::filesystem;

namespace {

constexpr const char* k_child_dir_env = "PCFS_STORE_CHILD_DIR";

fs::path make_temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "pcfs-store-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    return pattern;
}

StoreKey key_of(int i, std::uint8_t optimize = 0) {
    StoreKey key;
    key.content = hash::ContentHash::of("source number " + std::to_string(i));
    key.magic = {0xcb, 0x0d, 0x0d, 0x0a};
    key.optimize = optimize;
    return key;
}

// Deterministic per key, so any reader can tell a right value from a wrong one.
Entry code_of(int i, std::size_t size = 200) {
    Entry e;
    e.kind = EntryKind::Code;
    std::mt19937 rng(static_cast<unsigned>(i));
    e.code.resize(size);
    for (auto& c : e.code) c = static_cast<char>(rng());
    e.source_hash = static_cast<std::uint64_t>(i) * 0x9e3779b97f4a7c15ull;
    e.created = 1700000000 + i;
    return e;
}

bool is_code_of(const Entry& e, int i, std::size_t size = 200) {
    Entry want = code_of(i, size);
    return e.kind == EntryKind::Code && e.code == want.code && e.source_hash == want.source_hash &&
           e.created == want.created;
}

std::string key_string(const StoreKey& key) {
    auto b = key.bytes();
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// Direct LMDB access for damaging or back-dating values. Only while no Store of this process
// has the directory open (one environment per directory per process).
class RawEnv {
public:
    explicit RawEnv(const fs::path& dir) {
        EXPECT_EQ(0, mdb_env_create(&m_env));
        mdb_env_set_maxdbs(m_env, 4);
        mdb_env_set_mapsize(m_env, 16ull << 30);
        EXPECT_EQ(0, mdb_env_open(m_env, dir.c_str(), 0, 0600));
    }
    ~RawEnv() { mdb_env_close(m_env); }

    // Applies `edit` to the stored value of `key` in database `db` (or inserts when absent).
    void edit(const char* db, const std::string& key,
              const std::function<void(std::string&)>& edit) {
        MDB_txn* txn = nullptr;
        ASSERT_EQ(0, mdb_txn_begin(m_env, nullptr, 0, &txn));
        MDB_dbi dbi;
        ASSERT_EQ(0, mdb_dbi_open(txn, db, 0, &dbi));
        MDB_val k{key.size(), const_cast<char*>(key.data())}, v{};
        std::string value;
        if (mdb_get(txn, dbi, &k, &v) == 0) value.assign(static_cast<char*>(v.mv_data), v.mv_size);
        edit(value);
        MDB_val nv{value.size(), value.data()};
        ASSERT_EQ(0, mdb_put(txn, dbi, &k, &nv, 0));
        ASSERT_EQ(0, mdb_txn_commit(txn));
    }

    bool has(const char* db, const std::string& key) {
        MDB_txn* txn = nullptr;
        EXPECT_EQ(0, mdb_txn_begin(m_env, nullptr, MDB_RDONLY, &txn));
        MDB_dbi dbi;
        EXPECT_EQ(0, mdb_dbi_open(txn, db, 0, &dbi));
        MDB_val k{key.size(), const_cast<char*>(key.data())}, v{};
        bool found = mdb_get(txn, dbi, &k, &v) == 0;
        mdb_txn_abort(txn);
        return found;
    }

private:
    MDB_env* m_env = nullptr;
};

class StoreTest : public ::testing::Test {
protected:
    void SetUp() override { m_dir = make_temp_dir(); }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(m_dir, ec);
    }
    StoreOptions options(std::uint64_t max_size = 2ull << 30) {
        StoreOptions o;
        o.dir = m_dir / "store";
        o.max_size = max_size;
        o.batch_interval = std::chrono::milliseconds(5);
        return o;
    }
    fs::path m_dir;
};

} // namespace

TEST_F(StoreTest, PutFlushGetRoundTripAndReopen) {
    Entry err;
    err.kind = EntryKind::CompileError;
    err.error = {"SyntaxError", "invalid syntax", 3};
    {
        Store store(options());
        EXPECT_FALSE(store.get(key_of(1)));
        store.put(key_of(1), code_of(1));
        store.put(key_of(2), err);
        store.flush();
        auto got = store.get(key_of(1));
        ASSERT_TRUE(got);
        EXPECT_TRUE(is_code_of(*got, 1));
        auto neg = store.get(key_of(2));
        ASSERT_TRUE(neg);
        EXPECT_EQ(neg->kind, EntryKind::CompileError);
        EXPECT_EQ(neg->error.message, "invalid syntax");
        EXPECT_EQ(neg->error.line, 3);
        EXPECT_FALSE(store.get(key_of(1, 1))); // other optimize level: other key
        EXPECT_FALSE(store.last_write_error());
    }
    Store again(options());
    auto got = again.get(key_of(1));
    ASSERT_TRUE(got);
    EXPECT_TRUE(is_code_of(*got, 1));
    Usage u = again.usage();
    EXPECT_EQ(u.entries, 2u);
    EXPECT_EQ(u.error_entries, 1u);
    EXPECT_GT(u.bytes, 0u);
    EXPECT_GE(u.file_bytes, u.bytes);
}

TEST_F(StoreTest, DestructorCommitsQueuedWrites) {
    {
        StoreOptions o = options();
        o.batch_interval = std::chrono::milliseconds(2000);
        Store store(o);
        for (int i = 0; i < 50; ++i) store.put(key_of(i), code_of(i));
    }
    Store store(options());
    for (int i = 0; i < 50; ++i) EXPECT_TRUE(store.get(key_of(i))) << i;
}

TEST_F(StoreTest, DirectoryIs0700AndFiles0600) {
    StoreOptions o = options();
    o.dir = m_dir / "a" / "b" / "store";
    ::umask(022);
    Store store(o);
    struct stat st {};
    ASSERT_EQ(0, ::stat(o.dir.c_str(), &st));
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    for (const char* name : {"data.mdb", "lock.mdb"}) {
        ASSERT_EQ(0, ::stat((o.dir / name).c_str(), &st)) << name;
        EXPECT_EQ(st.st_mode & 07777, 0600u) << name;
    }
}

TEST_F(StoreTest, ConstructorErrorIsOneLineNamingTheDirectory) {
    fs::path file = m_dir / "not-a-dir";
    std::ofstream(file) << "x";
    StoreOptions o = options();
    o.dir = file;
    try {
        Store store(o);
        FAIL() << "opened a store on a regular file";
    } catch (const StoreError& e) {
        std::string what = e.what();
        EXPECT_NE(what.find(file.string()), std::string::npos) << what;
        EXPECT_NE(what.find("not a directory"), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
    o.dir = file / "sub";
    EXPECT_THROW(Store{o}, StoreError);
}

TEST_F(StoreTest, TwoStoresOnOneDirectoryShareTheEnvironment) {
    auto a = std::make_unique<Store>(options());
    Store b(options());
    a->put(key_of(1), code_of(1));
    a->flush();
    ASSERT_TRUE(b.get(key_of(1)));
    a.reset(); // closing one must not disturb the other
    b.put(key_of(2), code_of(2));
    b.flush();
    EXPECT_TRUE(b.get(key_of(1)));
    EXPECT_TRUE(b.get(key_of(2)));
}

TEST_F(StoreTest, CorruptValueIsNeverReturnedAndGetsDeleted) {
    std::string k = key_string(key_of(7));
    {
        Store store(options());
        store.put(key_of(7), code_of(7, 5000));
        store.put(key_of(8), code_of(8, 5000));
        store.flush();
    }
    {
        RawEnv raw(options().dir);
        raw.edit(k_entries_db, k, [](std::string& v) {
            ASSERT_GT(v.size(), 3000u);
            v[3000] ^= 0x10; // one bit deep inside the payload
        });
    }
    {
        Store store(options());
        EXPECT_FALSE(store.get(key_of(7)));
        EXPECT_FALSE(store.get(key_of(7)));
        auto other = store.get(key_of(8));
        ASSERT_TRUE(other);
        EXPECT_TRUE(is_code_of(*other, 8, 5000));
        store.flush();
        EXPECT_EQ(store.usage().entries, 1u);
    }
    RawEnv raw(options().dir);
    EXPECT_FALSE(raw.has(k_entries_db, k));
    EXPECT_FALSE(raw.has(k_atimes_db, k));
    EXPECT_TRUE(raw.has(k_entries_db, key_string(key_of(8))));
}

TEST_F(StoreTest, VerifyFindsAndRemovesCorruptEntries) {
    {
        Store store(options());
        for (int i = 0; i < 20; ++i) store.put(key_of(i), code_of(i));
        store.flush();
        VerifyReport clean = store.verify();
        EXPECT_EQ(clean.checked, 20u);
        EXPECT_EQ(clean.removed, 0u);
        EXPECT_TRUE(clean.problems.empty());
    }
    {
        RawEnv raw(options().dir);
        raw.edit(k_entries_db, key_string(key_of(3)), [](std::string& v) { v[0] = 'X'; });
        raw.edit(k_entries_db, key_string(key_of(4)), [](std::string& v) { v.back() ^= 1; });
        raw.edit(k_entries_db, "short key", [](std::string& v) { v = "junk"; });
    }
    Store store(options());
    VerifyReport report = store.verify();
    EXPECT_EQ(report.checked, 21u);
    EXPECT_EQ(report.removed, 3u);
    ASSERT_EQ(report.problems.size(), 3u);
    std::string all;
    for (const auto& p : report.problems) all += p + "\n";
    EXPECT_NE(all.find("bad format magic"), std::string::npos) << all;
    EXPECT_NE(all.find("checksum mismatch"), std::string::npos) << all;
    EXPECT_NE(all.find(key_of(3).content.hex()), std::string::npos) << all;
    EXPECT_EQ(store.usage().entries, 18u);
    EXPECT_EQ(store.verify().removed, 0u);
    EXPECT_TRUE(is_code_of(*store.get(key_of(5)), 5));
}

TEST_F(StoreTest, EvictionKeepsTheLimit) {
    const std::uint64_t limit = 512 * 1024;
    Store store(options(limit));
    const int n = 600;
    for (int i = 0; i < n; ++i) {
        store.put(key_of(i), code_of(i, 3000));
        if (i % 50 == 49) {
            store.flush();
            Usage u = store.usage();
            EXPECT_LE(u.bytes, limit) << "after " << i + 1 << " puts";
        }
    }
    store.flush();
    Usage u = store.usage();
    EXPECT_LE(u.bytes, limit);
    EXPECT_GT(u.entries, 50u);
    EXPECT_LT(u.entries, static_cast<std::uint64_t>(n));
    auto last = store.get(key_of(n - 1)); // the newest batch survives its own eviction
    ASSERT_TRUE(last);
    EXPECT_TRUE(is_code_of(*last, n - 1, 3000));

    std::uint64_t removed = store.evict_to(limit / 4);
    EXPECT_GT(removed, 0u);
    EXPECT_LE(store.usage().bytes, limit / 4);
    store.evict_to(0);
    EXPECT_EQ(store.usage().entries, 0u);
}

TEST_F(StoreTest, EvictionRemovesLeastRecentlyUsedFirst) {
    const int n = 40;
    {
        Store store(options());
        for (int i = 0; i < n; ++i) store.put(key_of(i), code_of(i, 3000));
        store.flush();
    }
    {
        // Back-date entries 0..9 to the epoch's first minutes.
        RawEnv raw(options().dir);
        for (int i = 0; i < 10; ++i) {
            raw.edit(k_atimes_db, key_string(key_of(i)), [i](std::string& v) {
                v = std::string{char(i + 1), 0, 0, 0, 0, 0, 0, 0}; // ms since the epoch
            });
        }
    }
    Store store(options());
    ASSERT_TRUE(store.get(key_of(0))); // an access makes entry 0 recent again
    store.flush();
    Usage before = store.usage();
    std::uint64_t removed = store.evict_to(before.bytes - 6 * 4096);
    EXPECT_GE(removed, 5u);
    EXPECT_LE(removed, 9u);
    EXPECT_TRUE(store.get(key_of(0)));
    for (int i = 10; i < n; ++i) EXPECT_TRUE(store.get(key_of(i))) << i;
    EXPECT_FALSE(store.get(key_of(1))); // the oldest of all
}

TEST_F(StoreTest, ConcurrentReadersAndOneWriterAcrossThreads) {
    Store store(options());
    for (int i = 0; i < 200; ++i) store.put(key_of(i), code_of(i));
    store.flush();
    std::atomic<bool> stop{false};
    std::atomic<long> wrong{0}, hits{0}, misses_of_old{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 8; ++t) {
        readers.emplace_back([&, t] {
            std::mt19937 rng(t);
            for (int n = 0; n < 5000 || !stop; ++n) {
                int i = static_cast<int>(rng() % 400);
                auto e = store.get(key_of(i));
                if (!e) {
                    if (i < 200) ++misses_of_old;
                    continue;
                }
                ++hits;
                if (!is_code_of(*e, i)) ++wrong;
                if (n > 200000) break;
            }
        });
    }
    for (int i = 200; i < 400; ++i) {
        store.put(key_of(i), code_of(i));
        if (i % 20 == 0) store.flush();
    }
    store.flush();
    stop = true;
    for (auto& r : readers) r.join();
    EXPECT_EQ(wrong, 0);
    EXPECT_EQ(misses_of_old, 0);
    EXPECT_GT(hits, 8 * 2500);
    for (int i = 0; i < 400; ++i) ASSERT_TRUE(store.get(key_of(i))) << i;
    EXPECT_FALSE(store.last_write_error());
}

// Runs only as the child of ConcurrentProcesses (the parent sets the directory).
TEST(StoreChildProcess, WritesWhenAsked) {
    const char* dir = std::getenv(k_child_dir_env);
    if (!dir) GTEST_SKIP() << "only run as a child of StoreTest.ConcurrentProcesses";
    StoreOptions o;
    o.dir = dir;
    o.batch_interval = std::chrono::milliseconds(1);
    Store store(o);
    for (int i = 100; i < 400; ++i) {
        store.put(key_of(i), code_of(i));
        if (i % 10 == 0) store.flush();
        auto mine = store.get(key_of(i % 100)); // the parent's entries, read here too
        ASSERT_TRUE(mine);
        ASSERT_TRUE(is_code_of(*mine, i % 100));
    }
    Counters c;
    c.compiles = 300;
    store.add_counters("cpython-312", c);
    store.flush();
    ASSERT_FALSE(store.last_write_error());
}

TEST_F(StoreTest, ConcurrentProcesses) {
    Store store(options());
    for (int i = 0; i < 100; ++i) store.put(key_of(i), code_of(i));
    Counters c;
    c.hits = 5;
    store.add_counters("cpython-312", c);
    store.flush();

    std::string self = fs::read_symlink("/proc/self/exe").string();
    std::string filter = "--gtest_filter=StoreChildProcess.WritesWhenAsked";
    std::string env_dir = std::string(k_child_dir_env) + "=" + options().dir.string();
    char* argv[] = {self.data(), filter.data(), nullptr};
    char* envp[] = {env_dir.data(), nullptr};
    pid_t pid = -1;
    ASSERT_EQ(0, posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, envp));

    // Read while the child writes: its entries show up, nothing is ever wrong.
    long wrong = 0, seen_from_child = 0;
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        for (int i = 0; i < 400; ++i) {
            auto e = store.get(key_of(i));
            if (i < 100 && !e) ++wrong;
            if (e && !is_code_of(*e, i)) ++wrong;
            if (e && i >= 100) ++seen_from_child;
        }
        store.put(key_of(1000), code_of(1000)); // this process writes at the same time
    }
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    EXPECT_EQ(wrong, 0);
    for (int i = 0; i < 400; ++i) {
        auto e = store.get(key_of(i));
        ASSERT_TRUE(e) << i;
        EXPECT_TRUE(is_code_of(*e, i));
    }
    auto counters = store.counters();
    EXPECT_EQ(counters["cpython-312"].hits, 5u);
    EXPECT_EQ(counters["cpython-312"].compiles, 300u); // the child really ran
    EXPECT_EQ(store.usage().entries, 401u);
    std::cout << "parent saw " << seen_from_child << " child entries while it ran\n";
}

TEST_F(StoreTest, CountersAddAndZero) {
    Store store(options());
    Counters a;
    a.hits = 3;
    a.misses = 1;
    a.compiles = 1;
    a.pycs_served = 4;
    a.bytes_served = 1000;
    a.compile_seconds = 0.25;
    Counters b;
    b.compile_errors = 2;
    b.compile_seconds = 0.5;
    store.add_counters("cpython-312", a);
    store.add_counters("cpython-312", b);
    store.add_counters("cpython-36", a);
    store.put(key_of(1), code_of(1));
    auto all = store.counters();
    ASSERT_EQ(all.size(), 2u);
    const Counters& c = all["cpython-312"];
    EXPECT_EQ(c.hits, 3u);
    EXPECT_EQ(c.misses, 1u);
    EXPECT_EQ(c.compiles, 1u);
    EXPECT_EQ(c.compile_errors, 2u);
    EXPECT_EQ(c.pycs_served, 4u);
    EXPECT_EQ(c.bytes_served, 1000u);
    EXPECT_DOUBLE_EQ(c.compile_seconds, 0.75);
    store.add_counters("cpython-312", a);
    EXPECT_EQ(store.counters()["cpython-312"].hits, 6u);

    store.zero_counters();
    EXPECT_TRUE(store.counters().empty());
    EXPECT_TRUE(store.get(key_of(1))); // entries untouched
    store.add_counters("cpython-312", b);
    EXPECT_EQ(store.counters()["cpython-312"].compile_errors, 2u);
}

TEST_F(StoreTest, ForEachKeyAndClear) {
    Store store(options());
    Entry err;
    err.kind = EntryKind::CompileError;
    err.error = {"SyntaxError", "bad", 1};
    for (int i = 0; i < 10; ++i) store.put(key_of(i), i < 3 ? err : code_of(i));
    Counters c;
    c.hits = 1;
    store.add_counters("cpython-312", c);
    store.flush();
    int codes = 0, errors = 0;
    store.for_each_key([&](const StoreKey& key, EntryKind kind, std::size_t size) {
        EXPECT_EQ(key.magic, key_of(0).magic);
        if (kind == EntryKind::Code) {
            ++codes;
            EXPECT_EQ(size, 200u + k_entry_header_size);
        } else {
            ++errors;
        }
        return true;
    });
    EXPECT_EQ(codes, 7);
    EXPECT_EQ(errors, 3);
    int visited = 0;
    store.for_each_key([&](const StoreKey&, EntryKind, std::size_t) { return ++visited < 4; });
    EXPECT_EQ(visited, 4);

    store.clear();
    EXPECT_EQ(store.usage().entries, 0u);
    EXPECT_EQ(store.usage().bytes, 0u);
    EXPECT_FALSE(store.get(key_of(5)));
    EXPECT_EQ(store.counters()["cpython-312"].hits, 1u); // counters kept
}

namespace {

// A 2 MiB tmpfs: the disk fills long before the 2 GiB limit matters.
class StoreFullDiskTest : public ::testing::Test {
protected:
    void SetUp() override {
        m_mount = make_temp_dir();
        if (::mount("tmpfs", m_mount.c_str(), "tmpfs", 0, "size=2m,mode=0700") != 0) {
            std::string why = std::strerror(errno);
            fs::remove(m_mount);
            m_mount.clear();
            GTEST_SKIP() << "cannot mount a tmpfs: " << why;
        }
        m_mounted = true;
    }
    void TearDown() override {
        m_store.reset(); // close the environment before unmounting
        if (m_mounted) {
            if (::umount(m_mount.c_str()) != 0) ::umount2(m_mount.c_str(), MNT_DETACH);
        }
        std::error_code ec;
        if (!m_mount.empty()) fs::remove_all(m_mount, ec);
    }
    fs::path m_mount;
    bool m_mounted = false;
    std::unique_ptr<Store> m_store;
};

} // namespace

TEST_F(StoreFullDiskTest, KeepsServingReadsAndDropsWrites) {
    StoreOptions o;
    o.dir = m_mount / "store";
    o.batch_interval = std::chrono::milliseconds(1);
    m_store = std::make_unique<Store>(o);
    Store& store = *m_store;
    int stored = 0;
    for (int i = 0; i < 400 && !store.last_write_error(); ++i) {
        store.put(key_of(i), code_of(i, 20000));
        store.flush();
        if (!store.last_write_error()) stored = i + 1;
    }
    ASSERT_TRUE(store.last_write_error()) << "2 MiB never filled up";
    // LMDB reports a short write as EIO, a failed one as ENOSPC.
    const std::string error = store.last_write_error().value_or("");
    EXPECT_TRUE(error.find("No space") != std::string::npos ||
                error.find("Input/output") != std::string::npos)
        << error;
    EXPECT_GT(stored, 10);
    // Everything committed before the disk filled is still served, whole and right.
    for (int i = 0; i < stored; ++i) {
        auto e = store.get(key_of(i));
        ASSERT_TRUE(e) << i;
        EXPECT_TRUE(is_code_of(*e, i, 20000));
    }
    // More writes: dropped, not fatal; reads go on.
    for (int i = 1000; i < 1020; ++i) store.put(key_of(i), code_of(i, 20000));
    store.flush();
    EXPECT_FALSE(store.get(key_of(1019)));
    EXPECT_TRUE(store.get(key_of(0)));
    Usage u = store.usage();
    EXPECT_EQ(u.entries, static_cast<std::uint64_t>(stored));
    // Making room (as `gc` would) lets writes succeed again.
    store.evict_to(u.bytes / 2);
    store.put(key_of(2000), code_of(2000, 2000));
    store.flush();
    EXPECT_TRUE(store.get(key_of(2000)));
}

// Stamps (source stamp -> content hash) outlive the process, within their generation only.
TEST_F(StoreTest, StampsPersistWithinTheirGenerationAndClearDropsThem) {
    const std::string boot_a(16, 'a'), boot_b(16, 'b');
    {
        Store store(options());
        EXPECT_FALSE(store.get_stamp(boot_a + "file-1"));
        store.put_stamp(boot_a + "file-1", "hash-1");
        store.put_stamp(boot_a + "file-2", "hash-2");
        store.put_stamp("short", "ignored: no generation");
        store.flush();
        EXPECT_EQ(store.get_stamp(boot_a + "file-1"), "hash-1");
    }
    {
        Store store(options()); // another process, same boot
        EXPECT_EQ(store.get_stamp(boot_a + "file-2"), "hash-2");
        EXPECT_FALSE(store.get_stamp("short"));
        // Another boot: everything from the last one goes (inode numbers repeat across boots).
        store.put_stamp(boot_b + "file-1", "hash-1b");
        store.flush();
        EXPECT_FALSE(store.get_stamp(boot_a + "file-1"));
        EXPECT_FALSE(store.get_stamp(boot_a + "file-2"));
        EXPECT_EQ(store.get_stamp(boot_b + "file-1"), "hash-1b");
        store.put(key_of(1), code_of(1));
        store.flush();
        store.clear();
        EXPECT_FALSE(store.get_stamp(boot_b + "file-1"));
        EXPECT_FALSE(store.get(key_of(1)));
    }
}
