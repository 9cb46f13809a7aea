// LookAhead: lookups made ahead of an importer, with its identity, beneath the mount point.
// A plain directory stands in for the mount here (the lookups are ordinary system calls); the
// integration tests (test_look_ahead.py) run it against the real daemon.
#include "fs/overlay/look_ahead.hpp"
#include "fs/overlay/thread_status.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <gtest/gtest.h>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace {

using fs::overlay::LookAhead;
namespace stdfs = std::filesystem;

// Waits until every posted lookup has been made (or dropped); returns the final counters.
nlohmann::json wait_idle(const LookAhead& ahead, std::uint64_t jobs) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
        auto s = ahead.stats();
        if ((s["jobs"].get<std::uint64_t>() >= jobs && s["waiting"].get<std::size_t>() == 0) ||
            std::chrono::steady_clock::now() > deadline)
            return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

// A child that takes uid/gid 65534 without groups and waits to be killed: an importer that is
// not root.
pid_t spawn_nobody() {
    pid_t pid = ::fork();
    if (pid == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
            ::setresuid(65534, 65534, 65534) != 0)
            ::_exit(3);
        for (;;) ::pause();
    }
    // Until the child has dropped its groups, /proc shows root's.
    for (int i = 0; i < 1000; ++i) {
        char path[64];
        std::snprintf(path, sizeof path, "/proc/%d/status", int(pid));
        std::ifstream in(path);
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("Uid:", 0) == 0 && line.find("65534") != std::string::npos) return pid;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return pid;
}

void reap(pid_t pid) {
    ::kill(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
}

// The Uid (real, effective, saved, filesystem), Gid and Groups lines of one thread.
std::string identity_of(pid_t tid) {
    std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/status");
    std::string line, out;
    while (std::getline(in, line))
        if (line.rfind("Uid:", 0) == 0 || line.rfind("Gid:", 0) == 0 ||
            line.rfind("Groups:", 0) == 0)
            out += line + "\n";
    return out;
}

class LookAheadTest : public ::testing::Test {
protected:
    void SetUp() override {
        char templ[] = "/tmp/pcfs-lookahead-XXXXXX";
        ASSERT_NE(::mkdtemp(templ), nullptr);
        root = templ;
        ::chmod(root.c_str(), 0755);
        stdfs::create_directories(root + "/pkg/sub");
        std::ofstream(root + "/pkg/a.py") << "";
        std::ofstream(root + "/pkg/sub/__init__.py") << "";
        stdfs::create_directory(root + "/pkg/secret");
        std::ofstream(root + "/pkg/secret/f.py") << "";
        ::chmod((root + "/pkg/secret").c_str(), 0700);
        stdfs::create_directory_symlink("/", root + "/pkg/out");
        std::ofstream(root + "/outside.py") << "";
    }
    void TearDown() override { stdfs::remove_all(root); }

    LookAhead::Requester me() const { return {::getpid(), ::geteuid(), ::getegid(), {}}; }

    std::string root;
};

TEST_F(LookAheadTest, LooksUpNamesAndNeverLeavesTheMount) {
    LookAhead ahead(root);
    ASSERT_TRUE(
        ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg",
                   {"a.py", "missing.py", "sub/__init__.py", "out/etc/passwd", "../outside.py",
                    "../../etc/passwd", "/etc/passwd", "sub/", "out/", "a.py/"}));
    auto s = wait_idle(ahead, 1);
    EXPECT_EQ(s["lookups"], 10);
    // a.py, sub/__init__.py, ../outside.py (still beneath the mount point) and the directory
    // sub/ (listed); the others are missing, not directories, or outside: through an absolute
    // symlink, or `..` above the mount point.
    EXPECT_EQ(s["found"], 4) << s.dump();
    EXPECT_EQ(s["dropped"], 0);
}

TEST_F(LookAheadTest, ATreeJobListsEverySubdirectoryItFindsUpToItsLimit) {
    for (const char* d : {"w/a/x/deep", "w/a/y", "w/b/z", "w/c"})
        stdfs::create_directories(root + "/" + d);
    std::ofstream(root + "/w/a/m.py") << "";
    stdfs::create_directory_symlink("/", root + "/w/b/out"); // not a directory entry: not entered
    {
        LookAhead ahead(root);
        ASSERT_TRUE(ahead.post_tree(me(), LookAhead::open_requester(::getpid()), "w",
                                    {"a/", "b/", "c/"}, 100));
        auto s = wait_idle(ahead, 1);
        // a, a/x, a/x/deep, a/y, b, b/z, c: found in the listings themselves.
        EXPECT_EQ(s["lookups"], 7) << s.dump();
        EXPECT_EQ(s["found"], 7) << s.dump();
    }
    {
        LookAhead ahead(root);
        ASSERT_TRUE(ahead.post_tree(me(), LookAhead::open_requester(::getpid()), "w",
                                    {"a/", "b/", "c/"}, 5));
        auto s = wait_idle(ahead, 1);
        EXPECT_EQ(s["lookups"], 5) << s.dump();
    }
}

TEST_F(LookAheadTest, ReadsFilesMarkedForReadingWithinTheMountOnly) {
    std::ofstream(root + "/pkg/_ext.so") << std::string(10000, 'x');
    std::ofstream(root + "/pkg/empty.so") << "";
    LookAhead ahead(root);
    ASSERT_TRUE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg",
                           {LookAhead::to_read("_ext.so"), LookAhead::to_read("empty.so"),
                            LookAhead::to_read("sub"), LookAhead::to_read("missing.so"),
                            LookAhead::to_read("out/etc/passwd"), LookAhead::to_read("secret/f.py"),
                            "_ext.so"}));
    auto s = wait_idle(ahead, 1);
    EXPECT_EQ(s["lookups"], 7);
    // Read: _ext.so. Found, nothing to read: empty.so and secret/f.py (empty), and the plain
    // lookup. Not found: a directory, a missing file, a file through a symlink out of the mount.
    EXPECT_EQ(s["found"], 4) << s.dump();
    EXPECT_EQ(s["files_read"], 1) << s.dump();
    EXPECT_EQ(s["bytes_read"], 10000) << s.dump();
}

TEST_F(LookAheadTest, ARequestBeingPreparedIsWaitingWork) {
    // Between an importer's answer and the jobs that answer starts, the look-ahead is not idle:
    // a caller that waits for idle (a test, a benchmark) would measure before the work ran.
    LookAhead ahead(root);
    auto first = ahead.preparing();
    auto second = ahead.preparing();
    EXPECT_EQ(ahead.stats()["waiting"], 2);
    first.reset();
    EXPECT_EQ(ahead.stats()["waiting"], 1);
    ASSERT_TRUE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg", {"a.py"}));
    second.reset();
    auto s = wait_idle(ahead, 1);
    EXPECT_EQ(s["lookups"], 1);
    EXPECT_EQ(s["waiting"], 0);
}

TEST_F(LookAheadTest, LooksUpWithTheImportersIdentityOnly) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (to take another identity)";
    const pid_t main_tid = pid_t(::syscall(SYS_gettid));
    const std::string main_identity = identity_of(main_tid);
    LookAhead ahead(root);
    pid_t nobody = spawn_nobody();
    ASSERT_TRUE(ahead.post({nobody, 65534, 65534, {}}, LookAhead::open_requester(nobody), "pkg",
                           {"secret/f.py", "a.py"}));
    auto s = wait_idle(ahead, 1);
    EXPECT_EQ(s["lookups"], 2);
    EXPECT_EQ(s["found"], 1) << "65534 may not search pkg/secret (0700, root's)";
    // Root again afterwards: the thread takes each importer's identity in turn.
    ASSERT_TRUE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg", {"secret/f.py"}));
    s = wait_idle(ahead, 2);
    EXPECT_EQ(s["found"], 2);
    reap(nobody);
    // The identity is the look-ahead thread's own: the rest of the process keeps root's.
    EXPECT_EQ(identity_of(main_tid), main_identity);
    EXPECT_EQ(::geteuid(), 0u);
}

TEST_F(LookAheadTest, WorkForAnExitedImporterIsDropped) {
    LookAhead ahead(root);
    pid_t child = ::fork();
    if (child == 0) {
        for (;;) ::pause();
    }
    // Enough lookups that they cannot all be made before the importer is gone.
    std::vector<std::string> names(200000, "a.py");
    ASSERT_TRUE(ahead.post({child, ::geteuid(), ::getegid(), {}}, LookAhead::open_requester(child),
                           "pkg", std::move(names)));
    reap(child);
    auto s = wait_idle(ahead, 1);
    EXPECT_GT(s["dropped"].get<std::uint64_t>(), 0u);
    EXPECT_LT(s["lookups"].get<std::uint64_t>(), 200000u);
    EXPECT_EQ(s["lookups"].get<std::uint64_t>() + s["dropped"].get<std::uint64_t>(), 200000u);
    // An importer that is already gone gets nothing.
    EXPECT_FALSE(ahead.post({child, ::geteuid(), ::getegid(), {}}, LookAhead::open_requester(child),
                            "pkg", {"a.py"}));
}

// Polls until `done(stats)` or 20 s.
template <class Done> nlohmann::json wait_for(const LookAhead& ahead, Done done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
        auto s = ahead.stats();
        if (done(s) || std::chrono::steady_clock::now() > deadline) return s;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

TEST_F(LookAheadTest, AStreamGrowsWhileItRunsAndEndsWithItsImporter) {
    LookAhead ahead(root);
    auto who = me();
    const auto stream = ahead.open_stream(who, LookAhead::open_requester(::getpid()));
    ASSERT_NE(stream, 0u);
    EXPECT_EQ(ahead.stats()["waiting"], 1) << "an open stream is work not done yet";
    // Paths are relative to the mount point.
    ASSERT_TRUE(ahead.extend(stream, {"pkg/a.py", "pkg/sub/"}, false));
    auto s = wait_for(ahead, [](const auto& s) { return s["lookups"] == 2; });
    EXPECT_EQ(s["found"], 2);
    EXPECT_EQ(s["waiting"], 1) << "still open";
    ASSERT_TRUE(ahead.extend(stream, {"pkg/missing.py", "../etc/passwd"}, true));
    s = wait_idle(ahead, 1);
    EXPECT_EQ(s["lookups"], 4);
    EXPECT_EQ(s["found"], 2);
    EXPECT_EQ(s["waiting"], 0);
    EXPECT_FALSE(ahead.extend(stream, {"pkg/a.py"}, false)) << "closed and done: gone";

    // A stream goes before the jobs of post(): its names are looked up while a long job waits.
    ASSERT_TRUE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg",
                           std::vector<std::string>(100000, "missing.py")));
    auto first = me();
    const auto second = ahead.open_stream(first, LookAhead::open_requester(::getpid()));
    ASSERT_NE(second, 0u);
    ASSERT_TRUE(ahead.extend(second, std::vector<std::string>(50, "pkg/a.py"), true));
    s = wait_for(ahead, [](const auto& s) { return s["found"] >= 52; });
    EXPECT_GE(s["found"], 52);
    EXPECT_GT(s["waiting"], 1000) << "the stream waited for the long job";

    // The importer exits: its stream is dropped, and extending it fails from then on.
    pid_t child = ::fork();
    if (child == 0) {
        for (;;) ::pause();
    }
    LookAhead::Requester kid{child, ::geteuid(), ::getegid(), {}};
    const auto third = ahead.open_stream(kid, LookAhead::open_requester(child));
    ASSERT_NE(third, 0u);
    reap(child);
    bool refused = false;
    for (int i = 0; i < 2000 && !refused; ++i) {
        refused = !ahead.extend(third, {"pkg/a.py"}, false);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_TRUE(refused);
    ahead.stop();
}

// Where every lookup finds its name cached (no request reaches the daemon: here the counter
// never moves), a stream is walking a tree the kernel knows: it is dropped after 64.
TEST_F(LookAheadTest, AStreamThatFindsEverythingCachedIsDropped) {
    std::atomic<std::uint64_t> requests{0};
    LookAhead ahead(root, &requests);
    auto who = me();
    const auto stream = ahead.open_stream(who, LookAhead::open_requester(::getpid()));
    ASSERT_NE(stream, 0u);
    ASSERT_TRUE(ahead.extend(stream, std::vector<std::string>(200, "pkg/a.py"), false));
    auto s = wait_for(ahead, [](const auto& s) { return s["waiting"] == 0; });
    // 64 in a row found cached; the other lookers may each have had one more under way.
    const std::uint64_t lookups = s["lookups"];
    EXPECT_GE(lookups, 64u);
    EXPECT_LE(lookups, 64u + 3);
    EXPECT_EQ(lookups + std::uint64_t(s["dropped"]), 200u);
    EXPECT_FALSE(ahead.extend(stream, {"pkg/a.py"}, true)) << "its walk should end";
    // Jobs of post() are not cut short this way (a directory is looked ahead of once per 30 s).
    ASSERT_TRUE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg",
                           std::vector<std::string>(100, "a.py")));
    s = wait_idle(ahead, 2);
    EXPECT_EQ(s["lookups"], lookups + 100);
}

TEST_F(LookAheadTest, OneLookerPerCpuEachKnownAsItsOwn) {
    // The daemon tells the look-ahead's requests from the importers' by thread: every looker's.
    LookAhead ahead(root);
    ASSERT_TRUE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg", {"a.py"}));
    wait_idle(ahead, 1);
    std::vector<pid_t> lookers;
    for (const auto& task : stdfs::directory_iterator("/proc/self/task")) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name == "pcfs-lookahead") lookers.push_back(pid_t(std::stoi(task.path().filename())));
    }
    const std::size_t cpus = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
    EXPECT_EQ(lookers.size(), cpus);
    // A new thread has its creator's name from the start; it records its id as its first step
    // (before any lookup), which may come a moment after it shows up in /proc.
    for (pid_t tid : lookers) {
        for (int i = 0; i < 500 && !ahead.is_own(tid); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        EXPECT_TRUE(ahead.is_own(tid)) << tid;
    }
    EXPECT_FALSE(ahead.is_own(pid_t(::syscall(SYS_gettid))));
    EXPECT_FALSE(ahead.is_own(0));
    ahead.stop();
}

TEST_F(LookAheadTest, WithoutPrivilegesOnlyForItsOwnUserAndGroups) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (to become another user)";
    pid_t pid = ::fork();
    if (pid == 0) {
        // An unprivileged daemon with a supplementary group, as any login user has.
        const gid_t group = 4242;
        if (::setgroups(1, &group) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
            ::setresuid(65534, 65534, 65534) != 0)
            ::_exit(3);
        LookAhead ahead(root);
        auto self = [] { return LookAhead::open_requester(::getpid()); };
        // Root's lookups cannot be made by an unprivileged daemon; its own user's can.
        if (ahead.post({::getpid(), 0, 0, {}}, self(), "pkg", {"a.py"})) ::_exit(4);
        if (!ahead.post({::getpid(), 65534, 65534, {}}, self(), "pkg", {"a.py"})) ::_exit(5);
        auto s = wait_idle(ahead, 1);
        if (s["found"] != 1) ::_exit(6);
        // A request whose uid is not the thread's (it changed identity since) is refused.
        if (ahead.post({::getpid(), 65534, 4242, {}}, self(), "pkg", {"a.py"})) ::_exit(7);
        // No pidfd, no look-ahead.
        if (ahead.post({::getpid(), 65534, 65534, {}}, cachecore::util::UniqueFd(), "pkg",
                       {"a.py"}))
            ::_exit(8);
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(LookAheadTest, NeverEntersAMountInsideTheTree) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
    const std::string inner = root + "/pkg/inner";
    stdfs::create_directory(inner);
    if (::mount("pcfs-test", inner.c_str(), "tmpfs", 0, "size=64k") != 0)
        GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
    std::ofstream(inner + "/x.py") << "";
    LookAhead ahead(root);
    ASSERT_TRUE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg",
                           {"inner/x.py", "inner/", "a.py"}));
    auto s = wait_idle(ahead, 1);
    ::umount2(inner.c_str(), MNT_DETACH);
    EXPECT_EQ(s["lookups"], 3);
    EXPECT_EQ(s["found"], 1) << "only a.py: the tmpfs is another mount";
}

TEST(ThreadStatus, ParsesWhatTheKernelWritesAndNothingElse) {
    using fs::overlay::parse_thread_status;
    std::string groups;
    for (int i = 0; i < 600; ++i) groups += std::to_string(12345678 + 7 * i) + " ";
    const std::string text = "Name:\tpython3\nUid:\t1000\t1000\t1000\t1001\n"
                             "Gid:\t100\t100\t100\t101\nGroups:\t" +
                             groups + "\nCapEff:\t0000000000000006\n";
    auto st = parse_thread_status(text);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->fsuid, 1001u);
    EXPECT_EQ(st->fsgid, 101u);
    ASSERT_EQ(st->groups.size(), 600u);
    EXPECT_EQ(st->groups.back(), gid_t(12345678 + 7 * 599));
    EXPECT_EQ(st->cap_effective, 6u);
    // Cut anywhere, or with a token that is not a number: nothing, never a guessed group.
    for (std::size_t cut : {text.size() - 1, text.find("Groups") + 200, text.find("CapEff")})
        EXPECT_FALSE(parse_thread_status(text.substr(0, cut))) << cut;
    std::string bad = text;
    bad.replace(bad.find("12345678"), 8, "1234x678");
    EXPECT_FALSE(parse_thread_status(bad));
    EXPECT_FALSE(parse_thread_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t0\n"))
        << "no Groups line";
    // This very thread, read from /proc.
    auto self = fs::overlay::read_thread_status(pid_t(::syscall(SYS_gettid)));
    ASSERT_TRUE(self);
    EXPECT_EQ(self->fsuid, ::geteuid());
    EXPECT_EQ(self->groups.size(), std::size_t(::getgroups(0, nullptr)));
}

TEST_F(LookAheadTest, StoppedRefusesWork) {
    LookAhead ahead(root);
    EXPECT_FALSE(ahead.is_own(0));
    EXPECT_FALSE(ahead.is_own(pid_t(::syscall(SYS_gettid))));
    ahead.stop();
    EXPECT_FALSE(ahead.post(me(), LookAhead::open_requester(::getpid()), "pkg", {"a.py"}))
        << "stopped";
}

} // namespace
