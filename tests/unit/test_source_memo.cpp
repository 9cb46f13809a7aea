// SourceMemo: (dev, ino, size, mtime, ctime) -> content hash, with the racy-window rule; and
// SourceStamp::mtime_sec, which must agree with CPython's int(os.stat(p).st_mtime).

#include "cachecore/source_memo.hpp"
#include "support_python_finder.hpp"

#include <atomic>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sstream>
#include <sys/stat.h>
#include <thread>
#include <time.h>
#include <vector>

using namespace cachecore;
using pycachefs::test::describe;
using pycachefs::test::run_process;
using pycachefs::test::TempDir;
using pycachefs::test::test_pythons;
using pycachefs::test::write_file;

namespace {

constexpr std::int64_t k_sec = 1'000'000'000;

std::int64_t now_ns() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return std::int64_t(ts.tv_sec) * k_sec + ts.tv_nsec;
}

SourceStamp old_stamp(ino_t ino, std::int64_t size = 10) {
    SourceStamp s;
    s.dev = 1;
    s.ino = ino;
    s.size = size;
    s.mtime_ns = now_ns() - 100 * k_sec;
    s.ctime_ns = s.mtime_ns;
    return s;
}

} // namespace

TEST(SourceMemoTest, RemembersAndFindsExactStamp) {
    SourceMemo memo;
    auto stamp = old_stamp(42);
    auto h = hash::ContentHash::of("print(1)\n");
    EXPECT_FALSE(memo.find(stamp));
    memo.remember(stamp, h);
    ASSERT_TRUE(memo.find(stamp));
    EXPECT_EQ(*memo.find(stamp), h);
    EXPECT_EQ(memo.size(), 1u);

    // Any change of size, mtime or ctime is a different version of the file.
    for (int field = 0; field < 3; ++field) {
        auto other = stamp;
        if (field == 0) other.size += 1;
        if (field == 1) other.mtime_ns += 1;
        if (field == 2) other.ctime_ns += 1;
        EXPECT_FALSE(memo.find(other)) << field;
    }
    // A new version replaces the old one for the same inode.
    auto newer = stamp;
    newer.mtime_ns += k_sec;
    auto h2 = hash::ContentHash::of("print(2)\n");
    memo.remember(newer, h2);
    EXPECT_EQ(memo.find(newer), h2);
    EXPECT_FALSE(memo.find(stamp));
    EXPECT_EQ(memo.size(), 1u);
}

TEST(SourceMemoTest, RacyStampsAreNotRemembered) {
    SourceMemo memo(1024, 2 * k_sec);
    auto h = hash::ContentHash::of("x = 1\n");
    auto fresh_mtime = old_stamp(1);
    fresh_mtime.mtime_ns = now_ns();
    memo.remember(fresh_mtime, h);
    EXPECT_FALSE(memo.find(fresh_mtime));

    auto fresh_ctime = old_stamp(2);
    fresh_ctime.ctime_ns = now_ns() - k_sec / 2;
    memo.remember(fresh_ctime, h);
    EXPECT_FALSE(memo.find(fresh_ctime));

    auto future = old_stamp(3);
    future.mtime_ns = now_ns() + 3600 * k_sec;
    memo.remember(future, h);
    EXPECT_FALSE(memo.find(future));

    auto settled = old_stamp(4);
    settled.mtime_ns = settled.ctime_ns = now_ns() - 3 * k_sec;
    memo.remember(settled, h);
    EXPECT_TRUE(memo.find(settled));

    // A racy re-remember of the same inode forgets the old version too.
    auto rewritten = settled;
    rewritten.ctime_ns = now_ns();
    memo.remember(rewritten, h);
    EXPECT_FALSE(memo.find(settled));
    EXPECT_EQ(memo.size(), 0u);

    SourceMemo no_window(1024, 0);
    auto past = old_stamp(5);
    past.mtime_ns = past.ctime_ns = now_ns() - 1000;
    no_window.remember(past, h);
    EXPECT_TRUE(no_window.find(past));
}

TEST(SourceMemoTest, RealFileJustWrittenIsRacy) {
    TempDir dir;
    auto path = dir.path() / "m.py";
    write_file(path, "V = 1\n");
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    SourceMemo memo;
    memo.remember(SourceStamp::of(st), hash::ContentHash::of("V = 1\n"));
    EXPECT_FALSE(memo.find(SourceStamp::of(st)));

    // Backdate mtime: ctime still says "just now", so it stays racy.
    struct timespec times[2] = {{1700000000, 0}, {1700000000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    memo.remember(SourceStamp::of(st), hash::ContentHash::of("V = 1\n"));
    EXPECT_FALSE(memo.find(SourceStamp::of(st)));
    SourceMemo trusting(1024, 0);
    trusting.remember(SourceStamp::of(st), hash::ContentHash::of("V = 1\n"));
    EXPECT_TRUE(trusting.find(SourceStamp::of(st)));
    EXPECT_EQ(SourceStamp::of(st).mtime_sec(), 1700000000);
    EXPECT_EQ(SourceStamp::of(st).size, 6);
}

TEST(SourceMemoTest, CapacityIsBounded) {
    SourceMemo memo(64);
    auto h = hash::ContentHash::of("");
    for (ino_t i = 0; i < 10000; ++i) memo.remember(old_stamp(i), h);
    EXPECT_LE(memo.size(), 64u);
    EXPECT_GE(memo.size(), 16u);
}

TEST(SourceMemoTest, ConcurrentUse) {
    SourceMemo memo(1 << 12);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (ino_t i = 0; i < 2000; ++i) {
                auto stamp = old_stamp(i * 4 + ino_t(t));
                stamp.mtime_ns = stamp.ctime_ns = 1000 * k_sec;
                auto h = hash::ContentHash::of(std::to_string(i * 4 + t));
                memo.remember(stamp, h);
                auto found = memo.find(stamp);
                if (found && *found != h) ++wrong;
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_LE(memo.size(), std::size_t(1 << 12));
}

TEST(SourceMemoTest, MtimeSecondsMatchCpython) {
    // (sec, nsec) pairs where floor, truncation and double rounding disagree.
    const std::vector<std::pair<std::int64_t, long>> cases = {
        {1700000000, 0},
        {1700000000, 999999999},
        {1700000000, 999999000},
        {1700000000, 500000000},
        {0, 1},
        {-101, 500000000},
        {-1, 999999999},
        {-100, 0},
        {4294967396, 250000000},
        {1, 999999999},
    };
    std::vector<SourceStamp> stamps;
    for (auto [sec, nsec] : cases) {
        SourceStamp s;
        s.mtime_ns = sec * k_sec + nsec;
        stamps.push_back(s);
    }
    // Timeless expectations first.
    EXPECT_EQ(stamps[0].mtime_sec(), 1700000000);
    EXPECT_EQ(stamps[1].mtime_sec(), 1700000001); // what CPython's float makes of it
    EXPECT_EQ(stamps[5].mtime_sec(), -100);       // -100.5 truncates toward zero
    EXPECT_EQ(stamps[9].mtime_sec(), 1);

    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    TempDir dir;
    std::string script = "import os, sys\nfor p in sys.argv[1:]:\n"
                         "    print(int(os.stat(p).st_mtime))\n";
    std::vector<std::string> argv = {"", "-I", "-S", "-c", script};
    for (std::size_t i = 0; i < cases.size(); ++i) {
        auto path = dir.path() / std::string("f").append(std::to_string(i));
        write_file(path, "");
        struct timespec times[2] = {{time_t(cases[i].first), cases[i].second},
                                    {time_t(cases[i].first), cases[i].second}};
        ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
        struct stat st {};
        ASSERT_EQ(::stat(path.c_str(), &st), 0);
        ASSERT_EQ(SourceStamp::of(st).mtime_ns, stamps[i].mtime_ns);
        argv.push_back(path.string());
    }
    for (const auto& py : test_pythons()) {
        argv[0] = py.path;
        auto r = run_process(argv);
        ASSERT_EQ(r.exit_code, 0) << describe(py) << r.err;
        std::istringstream lines(r.out);
        for (std::size_t i = 0; i < cases.size(); ++i) {
            std::int64_t v = 0;
            ASSERT_TRUE(lines >> v) << describe(py);
            EXPECT_EQ(stamps[i].mtime_sec(), v)
                << describe(py) << " sec=" << cases[i].first << " nsec=" << cases[i].second;
        }
    }
}
