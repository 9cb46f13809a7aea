// PycFileDir: the real pyc files a link-mode mount points its pycs at.
#include "cachecore/pyc/pyc_file_dir.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <gtest/gtest.h>
#include <iterator>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

namespace {

using cachecore::pyc::PycFileDir;
namespace stdfs = std::filesystem;

class PycFileDirTest : public ::testing::Test {
protected:
    void SetUp() override {
        char templ[] = "/tmp/pcfs-pycfiles-XXXXXX";
        ASSERT_NE(::mkdtemp(templ), nullptr);
        base = templ;
        source = base + "/mod.py";
        std::ofstream(source) << "x = 1\n";
        ::chmod(source.c_str(), 0640);
        ASSERT_EQ(::stat(source.c_str(), &source_st), 0);
    }
    void TearDown() override { stdfs::remove_all(base); }

    static std::string read_file(const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        return {std::istreambuf_iterator<char>(in), {}};
    }
    // Whether uid/gid 65534 (no supplementary groups) can open `path` for reading.
    static bool nobody_can_read(const std::string& path, gid_t gid = 65534) {
        pid_t pid = ::fork();
        if (pid == 0) {
            if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
                ::setresuid(65534, 65534, 65534) != 0)
                ::_exit(3);
            int fd = ::open(path.c_str(), O_RDONLY);
            ::_exit(fd >= 0 ? 0 : errno == EACCES ? 1 : 2);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        EXPECT_TRUE(WIFEXITED(status));
        EXPECT_NE(WEXITSTATUS(status), 3) << "could not drop privileges";
        EXPECT_NE(WEXITSTATUS(status), 2) << "open failed with something else than EACCES";
        return WEXITSTATUS(status) == 0;
    }

    std::string base;
    std::string source;
    struct stat source_st {};
};

TEST_F(PycFileDirTest, FileHoldsTheBytesWithTheSourcesOwnerAndReadBits) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (files get the source's owner)";
    auto dir = PycFileDir::create(base, true);
    struct stat dst;
    ASSERT_EQ(::stat(dir->path().c_str(), &dst), 0);
    EXPECT_EQ(dst.st_mode & 07777, 0711u) << "traversable, not listable";
    struct stat st = source_st;
    st.st_uid = 4242;
    st.st_gid = 4343;
    st.st_mode = S_IFREG | 0754;
    int err = 0;
    auto file = dir->write("pyc bytes", st, source, err);
    ASSERT_TRUE(file) << std::strerror(err);
    EXPECT_EQ(read_file(file->path()), "pyc bytes");
    struct stat fst;
    ASSERT_EQ(::stat(file->path().c_str(), &fst), 0);
    EXPECT_EQ(fst.st_uid, 4242u);
    EXPECT_EQ(fst.st_gid, 4343u);
    EXPECT_EQ(fst.st_mode & 07777, 0444u & 0754u);
    EXPECT_EQ(dir->files(), 1u);
    EXPECT_EQ(dir->bytes(), 9u);
}

TEST_F(PycFileDirTest, SomeoneWhoCannotReadTheSourceCannotReadThePyc) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (drops to nobody)";
    auto dir = PycFileDir::create(base, true);
    ::chmod(base.c_str(), 0755);
    int err = 0;
    // Source 0640 root:root: nobody (not in group root) may not read it, nor its pyc.
    auto file = dir->write("secret", source_st, source, err);
    ASSERT_TRUE(file);
    EXPECT_FALSE(nobody_can_read(source));
    EXPECT_FALSE(nobody_can_read(file->path()));
    // Readable by everybody: so is its pyc.
    ::chmod(source.c_str(), 0644);
    ASSERT_EQ(::stat(source.c_str(), &source_st), 0);
    auto open_file = dir->write("open", source_st, source, err);
    ASSERT_TRUE(open_file);
    EXPECT_TRUE(nobody_can_read(open_file->path()));
}

TEST_F(PycFileDirTest, CopiesTheSourcesAccessAcl) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (drops to nobody)";
    ::chmod(base.c_str(), 0755);
    // user::rw- user:65534:--- group::r-- mask::r-- other::r--: readable by all but nobody.
    const unsigned char acl[] = {2,    0, 0, 0,                          // version
                                 1,    0, 6, 0, 0xff, 0xff, 0xff, 0xff,  // USER_OBJ rw
                                 2,    0, 0, 0, 0xfe, 0xff, 0,    0,     // USER 65534 ---
                                 4,    0, 4, 0, 0xff, 0xff, 0xff, 0xff,  // GROUP_OBJ r
                                 0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,  // MASK r
                                 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff}; // OTHER r
    if (::setxattr(source.c_str(), "system.posix_acl_access", acl, sizeof acl, 0) != 0)
        GTEST_SKIP() << "no POSIX ACLs here: " << std::strerror(errno);
    ASSERT_EQ(::stat(source.c_str(), &source_st), 0);
    ASSERT_FALSE(nobody_can_read(source));
    // Another user (gid 65533, so the group entry does not apply) may read both.
    auto dir = PycFileDir::create(base, true);
    int err = 0;
    auto file = dir->write("acl", source_st, source, err);
    ASSERT_TRUE(file) << std::strerror(err);
    EXPECT_FALSE(nobody_can_read(file->path())) << "the ACL's deny entry was lost";
}

TEST_F(PycFileDirTest, WithoutExactOwnerOnlyThisUserMayRead) {
    auto dir = PycFileDir::create(base, false);
    int err = 0;
    auto file = dir->write("mine", source_st, source, err);
    ASSERT_TRUE(file);
    struct stat fst;
    ASSERT_EQ(::stat(file->path().c_str(), &fst), 0);
    EXPECT_EQ(fst.st_uid, ::geteuid());
    EXPECT_EQ(fst.st_mode & 07777, 0400u);
}

TEST_F(PycFileDirTest, FileIsRemovedWithItsLastOwnerAndTheDirectoryWithTheLast) {
    std::string dir_path, file_path;
    {
        auto dir = PycFileDir::create(base, ::geteuid() == 0);
        dir_path = dir->path();
        int err = 0;
        auto file = dir->write("a", source_st, source, err);
        ASSERT_TRUE(file);
        file_path = file->path();
        auto other = dir->write("b", source_st, source, err);
        ASSERT_TRUE(other);
        EXPECT_NE(other->path(), file_path) << "a new version gets a new file";
        EXPECT_EQ(dir->files(), 2u);
        file.reset();
        EXPECT_FALSE(stdfs::exists(file_path));
        EXPECT_EQ(dir->files(), 1u);
        EXPECT_EQ(dir->bytes(), 1u);
        dir.reset();
        EXPECT_TRUE(stdfs::exists(dir_path)) << "a file still lives in it";
    }
    EXPECT_FALSE(stdfs::exists(dir_path));
}

TEST_F(PycFileDirTest, FilesCannotBeChangedOnceWritten) {
    auto dir = PycFileDir::create(base, ::geteuid() == 0);
    int err = 0;
    auto file = dir->write("fixed", source_st, source, err);
    ASSERT_TRUE(file);
    int fd = ::open(file->path().c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    int flags = 0;
    bool has_flags = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
    ::close(fd);
    if (!has_flags) GTEST_SKIP() << "no inode flags on " << base;
    EXPECT_TRUE(flags & FS_IMMUTABLE_FL);
    if (::geteuid() == 0) {
        // Not even root writes through by accident (a pyc opened for writing via its link).
        EXPECT_LT(::open(file->path().c_str(), O_WRONLY), 0);
        EXPECT_EQ(errno, EPERM);
    }
    const std::string path = file->path();
    file.reset();
    EXPECT_FALSE(stdfs::exists(path)) << "immutable, yet removed when done";
}

TEST_F(PycFileDirTest, SweepRemovesOnlyDirectoriesNoDaemonHolds) {
    auto live = PycFileDir::create(base, false);
    // A dead daemon's directory: same name pattern, no lock held, files inside.
    const std::string dead = base + "/pycachefs.999999.abcdef";
    stdfs::create_directory(dead);
    std::ofstream(dead + "/0.pyc") << "old";
    stdfs::create_directory(base + "/unrelated");
    EXPECT_EQ(PycFileDir::sweep_stale(base), 1);
    EXPECT_FALSE(stdfs::exists(dead));
    EXPECT_TRUE(stdfs::exists(live->path()));
    EXPECT_TRUE(stdfs::exists(base + "/unrelated"));
}

TEST_F(PycFileDirTest, BaseOthersCanWriteIsRefused) {
    // In a world-writable place (/dev/shm, /tmp) another user could plant a file where a link
    // the kernel cached leads (in another mount namespace, say).
    ::chmod(base.c_str(), 01777);
    try {
        PycFileDir::create(base, false);
        FAIL() << "a world-writable base was accepted";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("nobody else can write"), std::string::npos)
            << e.what();
    }
    ::chmod(base.c_str(), 0700);
    EXPECT_NO_THROW(PycFileDir::create(base, false));
}

TEST_F(PycFileDirTest, NamesCannotBeGuessed) {
    auto dir = PycFileDir::create(base, false);
    int err = 0;
    auto a = dir->write("a", source_st, source, err);
    auto b = dir->write("b", source_st, source, err);
    ASSERT_TRUE(a && b);
    const auto name = stdfs::path(a->path()).filename().string();
    EXPECT_EQ(name.size(), 32u + 4u) << name; // 128 random bits in hex, ".pyc"
    EXPECT_NE(name, stdfs::path(b->path()).filename().string());
}

TEST_F(PycFileDirTest, MissingBaseIsAClearError) {
    try {
        PycFileDir::create(base + "/missing", false);
        FAIL() << "no error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find(base + "/missing"), std::string::npos) << e.what();
    }
}

} // namespace
