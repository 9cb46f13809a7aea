// Replays the committed libFuzzer corpus (tests/fuzz/corpus/<target>/*) through the same
// property checks the fuzz targets run, so every seed and every minimized finding stays a
// regression test in the ordinary gcc build, without clang or libFuzzer.

#include "tests/fuzz/fuzz_checks.hpp"

#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <iterator>
#include <string>

namespace {

namespace stdfs = std::filesystem;

const stdfs::path k_corpus = stdfs::path(PYCACHEFS_TEST_HELPER) / ".." / "fuzz" / "corpus";

void replay(const std::string& target, const std::function<std::string(std::string_view)>& check) {
    const stdfs::path dir = k_corpus / target;
    ASSERT_TRUE(stdfs::is_directory(dir)) << dir;
    int files = 0;
    for (const auto& item : stdfs::directory_iterator(dir)) {
        if (!item.is_regular_file()) continue;
        std::ifstream in(item.path(), std::ios::binary);
        std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        EXPECT_EQ(check(data), "") << item.path();
        ++files;
    }
    EXPECT_GE(files, 5) << "the seed corpus of " << target << " went missing";
}

} // namespace

TEST(FuzzCorpus, CacheName) {
    replay("cache_name", pycachefs_fuzz::check_cache_name);
}

TEST(FuzzCorpus, PycHeader) {
    replay("pyc_header", pycachefs_fuzz::check_pyc_header);
}

TEST(FuzzCorpus, FrameProtocol) {
    replay("frame_protocol", pycachefs_fuzz::check_frame_protocol);
}

TEST(FuzzCorpus, StoreEntry) {
    replay("store_entry", pycachefs_fuzz::check_store_entry);
}

// The seeds must reach the accepting paths too, or the checks above would only ever see
// rejections: the valid seeds decode, the bad_* ones do not.
TEST(FuzzCorpus, SeedsCoverValidAndInvalidInputs) {
    auto read = [](const std::string& target, const std::string& name) {
        std::ifstream in(k_corpus / target / name, std::ios::binary);
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    using namespace cachecore;
    EXPECT_TRUE(store::decode_entry(read("store_entry", "code")));
    EXPECT_TRUE(store::decode_entry(read("store_entry", "compile_error")));
    EXPECT_EQ(store::entry_problem(read("store_entry", "bad_flipped_payload")),
              "checksum mismatch");
    EXPECT_TRUE(pyc::parse_cache_name(read("cache_name", "opt2")));
    EXPECT_FALSE(pyc::parse_cache_name(read("cache_name", "bad_opt0")));
    const std::string header = read("pyc_header", "312_checked");
    auto parsed = pyc::parse_header(std::string_view(header).substr(1), 12);
    ASSERT_TRUE(parsed);
    EXPECT_TRUE(parsed->hash_based && parsed->check_source);
    const std::string stream = read("frame_protocol", "reply_error");
    auto frame = python::frame::decode_frame(std::string_view(stream).substr(1));
    ASSERT_EQ(frame.status, python::frame::DecodeStatus::Complete);
    auto reply = python::frame::decode_reply_body(frame.body);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->error_type, "SyntaxError");
    EXPECT_EQ(reply->error_line, 3);
}
