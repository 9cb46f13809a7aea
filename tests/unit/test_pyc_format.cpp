// The pyc file format: cache names, headers, SipHash/_imp.source_hash, content hashes. Checked
// against fixed vectors and against every real CPython on the machine.

#include "cachecore/hash/content_hash.hpp"
#include "cachecore/pyc/cache_name.hpp"
#include "cachecore/pyc/header.hpp"
#include "cachecore/pyc/magic.hpp"
#include "cachecore/pyc/siphash.hpp"
#include "support_python_finder.hpp"

#include <cstdint>
#include <gtest/gtest.h>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>
#include <xxhash.h>

using namespace cachecore;
using pycachefs::test::describe;
using pycachefs::test::run_process;
using pycachefs::test::test_pythons;

namespace {

std::string to_hex(std::string_view bytes) {
    static constexpr char k_digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : bytes) {
        out.push_back(k_digits[c >> 4]);
        out.push_back(k_digits[c & 15]);
    }
    return out;
}

std::string le64_hex(std::uint64_t v) {
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes.push_back(char(v >> (8 * i)));
    return to_hex(bytes);
}

pyc::Magic magic_of(std::uint8_t lo) {
    return {lo, 0x0d, 0x0d, 0x0a};
}

// Inputs of many lengths, including every length 0..16 (the SipHash tail cases) and a few KB.
std::vector<std::string> hash_inputs() {
    std::vector<std::string> out;
    std::mt19937 rng(12345);
    for (int n = 0; n <= 16; ++n) {
        std::string s;
        for (int i = 0; i < n; ++i) s.push_back(char(rng()));
        out.push_back(s);
    }
    out.push_back("V = 1\n");
    out.push_back("def f():\n    return 42\n");
    for (int n : {63, 64, 65, 1280, 4096, 5003}) {
        std::string s;
        for (int i = 0; i < n; ++i) s.push_back(char(rng()));
        out.push_back(s);
    }
    return out;
}

} // namespace

// ---------------------------------------------------------------------------------- names

TEST(PycNameTest, ParsesPlainAndOptimized) {
    auto n = pyc::parse_cache_name("mod.cpython-312.pyc");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->module, "mod");
    EXPECT_EQ(n->cache_tag, "cpython-312");
    EXPECT_EQ(n->optimize, 0);

    n = pyc::parse_cache_name("__init__.cpython-36.opt-2.pyc");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->module, "__init__");
    EXPECT_EQ(n->cache_tag, "cpython-36");
    EXPECT_EQ(n->optimize, 2);

    // -OOO gives .opt-3 (verified in the reference notes); any N >= 1 is a valid name.
    n = pyc::parse_cache_name("m.cpython-313.opt-3.pyc");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->optimize, 3);
    n = pyc::parse_cache_name("m.cpython-313.opt-10.pyc");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->optimize, 10);
}

TEST(PycNameTest, ModuleMayContainDots) {
    auto n = pyc::parse_cache_name("a.b.cpython-312.pyc");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->module, "a.b");
    EXPECT_EQ(n->cache_tag, "cpython-312");
    n = pyc::parse_cache_name("x.opt-1.cpython-312.opt-1.pyc"); // source "x.opt-1.py"
    ASSERT_TRUE(n);
    EXPECT_EQ(n->module, "x.opt-1");
    EXPECT_EQ(n->optimize, 1);
}

TEST(PycNameTest, RejectsMalformed) {
    for (const char* bad : {"",
                            ".pyc",
                            "pyc",
                            "mod.pyc",
                            "cpython-312.pyc",
                            ".cpython-312.pyc",
                            "mod..pyc",
                            "mod.cpython-312.opt-0.pyc",
                            "mod.cpython-312.opt-01.pyc",
                            "mod.cpython-312.opt-x.pyc",
                            "mod.cpython-312.opt-.pyc",
                            "mod.cpython-312.opt--1.pyc",
                            "mod.cpython-312.opt-1x.pyc",
                            "mod.opt-1.pyc",
                            "mod.cpython-312.py",
                            "mod.cpython-312.pyc.123",
                            "mod.cpython-312.PYC",
                            "mod.cpython-312.pyo",
                            "a/b.cpython-312.pyc",
                            "mod.cpython-312.opt-1.opt-1.pyc",
                            ".opt-1.pyc"}) {
        EXPECT_FALSE(pyc::parse_cache_name(bad)) << "accepted: '" << bad << "'";
    }
    EXPECT_FALSE(pyc::parse_cache_name(std::string_view("m\0.cpython-312.pyc", 18)));
}

TEST(PycNameTest, RoundTrips) {
    for (const char* name : {"mod.cpython-312.pyc", "a.b.cpython-36.opt-1.pyc",
                             "__init__.cpython-313.opt-2.pyc", "x.cpython-311.opt-12.pyc"}) {
        auto n = pyc::parse_cache_name(name);
        ASSERT_TRUE(n) << name;
        EXPECT_EQ(pyc::format_cache_name(*n), name);
    }
    pyc::CacheName n{"pkg.mod", "cpython-39", 0};
    EXPECT_EQ(pyc::format_cache_name(n), "pkg.mod.cpython-39.pyc");
    EXPECT_EQ(pyc::parse_cache_name(pyc::format_cache_name(n)), n);
}

// Every real interpreter builds the same names as we do (importlib.util.cache_from_source).
TEST(PycNameTest, MatchesEveryInterpreter) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const char* script =
        "import importlib.util, os\n"
        "for src, opt in [('m.py',''), ('a.b.py',''), ('m.py',1), ('m.py',2), ('x.y.z.py',3)]:\n"
        "    print(os.path.basename(importlib.util.cache_from_source(src, optimization=opt)))\n";
    for (const auto& py : test_pythons()) {
        auto r = run_process({py.path, "-I", "-S", "-c", script});
        ASSERT_EQ(r.exit_code, 0) << describe(py) << r.err;
        std::vector<pyc::CacheName> expect = {{"m", py.cache_tag, 0},
                                              {"a.b", py.cache_tag, 0},
                                              {"m", py.cache_tag, 1},
                                              {"m", py.cache_tag, 2},
                                              {"x.y.z", py.cache_tag, 3}};
        std::istringstream lines(r.out);
        for (const auto& e : expect) {
            std::string line;
            ASSERT_TRUE(std::getline(lines, line)) << describe(py);
            EXPECT_EQ(line, pyc::format_cache_name(e)) << describe(py);
            EXPECT_EQ(pyc::parse_cache_name(line), e) << describe(py);
        }
    }
}

// -------------------------------------------------------------------------------- headers

TEST(PycHeaderTest, MagicHex) {
    EXPECT_EQ(pyc::magic_hex(magic_of(0xcb)), "cb0d0d0a");
    EXPECT_EQ(pyc::magic_u32(magic_of(0xcb)), 0x0a0d0dcbu);
}

TEST(PycHeaderTest, ModeNames) {
    for (auto m :
         {pyc::PycMode::Timestamp, pyc::PycMode::CheckedHash, pyc::PycMode::UncheckedHash}) {
        EXPECT_EQ(pyc::parse_pyc_mode(pyc::to_string(m)), m);
    }
    EXPECT_EQ(pyc::parse_pyc_mode("unchecked-hash"), pyc::PycMode::UncheckedHash);
    EXPECT_FALSE(pyc::parse_pyc_mode("hash"));
    EXPECT_FALSE(pyc::parse_pyc_mode(""));
}

TEST(PycHeaderTest, ReferenceDumps) {
    // Real files from the reference notes: m.py = "V = 1\n", mtime 1700000000.
    pyc::SourceFacts facts{1700000000, 6, 0};
    EXPECT_EQ(to_hex(pyc::build_header(magic_of(0x33), 6, pyc::PycMode::Timestamp, facts)),
              "330d0d0a00f1536506000000");
    EXPECT_EQ(to_hex(pyc::build_header(magic_of(0xcb), 12, pyc::PycMode::Timestamp, facts)),
              "cb0d0d0a0000000000f1536506000000");
    EXPECT_EQ(pyc::header_size(6), 12u);
    EXPECT_EQ(pyc::header_size(7), 16u);
    EXPECT_EQ(pyc::header_size(13), 16u);
}

TEST(PycHeaderTest, HashModesAndThreeSixFallback) {
    pyc::SourceFacts facts{1700000000, 6, 0x4771233f5fc89fb4ull};
    EXPECT_EQ(to_hex(pyc::build_header(magic_of(0x42), 7, pyc::PycMode::UncheckedHash, facts)),
              "420d0d0a01000000b49fc85f3f237147");
    EXPECT_EQ(to_hex(pyc::build_header(magic_of(0x42), 7, pyc::PycMode::CheckedHash, facts)),
              "420d0d0a03000000b49fc85f3f237147");
    // 3.6 has no PEP 552: any mode gives the 12-byte timestamp header.
    for (auto m : {pyc::PycMode::CheckedHash, pyc::PycMode::UncheckedHash}) {
        EXPECT_EQ(to_hex(pyc::build_header(magic_of(0x33), 6, m, facts)),
                  "330d0d0a00f1536506000000");
    }
}

TEST(PycHeaderTest, MtimeAndSizeAreTruncatedTo32Bits) {
    pyc::SourceFacts big{4294967396, (1ull << 32) + 7, 0}; // 2^32 + 100
    EXPECT_EQ(to_hex(pyc::build_header(magic_of(0xcb), 12, pyc::PycMode::Timestamp, big)),
              "cb0d0d0a000000006400000007000000");
    pyc::SourceFacts negative{-100, 0, 0};
    EXPECT_EQ(to_hex(pyc::build_header(magic_of(0xcb), 12, pyc::PycMode::Timestamp, negative)),
              "cb0d0d0a000000009cffffff00000000");
    EXPECT_EQ(to_hex(pyc::build_header(magic_of(0x33), 6, pyc::PycMode::Timestamp, negative)),
              "330d0d0a9cffffff00000000");
}

TEST(PycHeaderTest, ParseRoundTripsEveryMode) {
    pyc::SourceFacts facts{-5, 123456, 0x0123456789abcdefull};
    for (int minor : {6, 7, 10, 11, 13}) {
        for (auto mode :
             {pyc::PycMode::Timestamp, pyc::PycMode::CheckedHash, pyc::PycMode::UncheckedHash}) {
            auto bytes = pyc::build_header(magic_of(0x55), minor, mode, facts);
            ASSERT_EQ(bytes.size(), pyc::header_size(minor));
            auto h = pyc::parse_header(bytes + "\xe3tail", minor);
            ASSERT_TRUE(h) << minor;
            EXPECT_EQ(h->magic, magic_of(0x55));
            EXPECT_EQ(h->length, bytes.size());
            const bool hashed = minor >= 7 && mode != pyc::PycMode::Timestamp;
            EXPECT_EQ(h->hash_based, hashed);
            EXPECT_EQ(h->check_source, hashed && mode == pyc::PycMode::CheckedHash);
            if (hashed) {
                EXPECT_EQ(h->hash, facts.source_hash);
                EXPECT_EQ(h->flags, mode == pyc::PycMode::CheckedHash ? 3u : 1u);
            } else {
                EXPECT_EQ(h->flags, 0u);
                EXPECT_EQ(h->mtime, 0xFFFFFFFBu);
                EXPECT_EQ(h->size, 123456u);
            }
        }
    }
}

TEST(PycHeaderTest, ParseRejectsWhatClassifyPycRejects) {
    auto good = pyc::build_header(magic_of(0xcb), 12, pyc::PycMode::Timestamp, {});
    EXPECT_FALSE(pyc::parse_header(good.substr(0, 15), 12));
    EXPECT_FALSE(pyc::parse_header("", 12));
    EXPECT_FALSE(pyc::parse_header(good.substr(0, 11), 6));
    EXPECT_TRUE(pyc::parse_header(good.substr(0, 12), 6));
    for (std::uint8_t flags : {4, 5, 8, 0x80}) {
        auto bad = good;
        bad[4] = char(flags);
        EXPECT_FALSE(pyc::parse_header(bad, 12)) << int(flags);
    }
    auto high = good;
    high[7] = char(0x80);
    EXPECT_FALSE(pyc::parse_header(high, 12));
    // 0b10 without the hash bit is a legal timestamp pyc.
    auto odd = good;
    odd[4] = 2;
    auto h = pyc::parse_header(odd, 12);
    ASSERT_TRUE(h);
    EXPECT_FALSE(h->hash_based);
    EXPECT_FALSE(h->check_source);
    // A wrong magic is the caller's check, not the parser's.
    auto other = good;
    other[0] = 0;
    EXPECT_TRUE(pyc::parse_header(other, 12));
}

// importlib's own writers (_code_to_timestamp_pyc / _code_to_hash_pyc, or 3.6's
// _code_to_bytecode) produce exactly our headers, including masked out-of-range values.
TEST(PycHeaderTest, MatchesEveryInterpreterWriter) {
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    const char* script =
        "import importlib._bootstrap_external as be\n"
        "code = compile('V = 1\\n', 'm.py', 'exec')\n"
        "ts = getattr(be, '_code_to_timestamp_pyc', None) or be._code_to_bytecode\n"
        "for mt, size in [(1700000000, 6), (2**32 + 100, 2**32 + 7), (-100, 0)]:\n"
        "    print(ts(code, mt, size)[:16].hex())\n"
        "if hasattr(be, '_code_to_hash_pyc'):\n"
        "    h = bytes.fromhex('b49fc85f3f237147')\n"
        "    print(be._code_to_hash_pyc(code, h, True)[:16].hex())\n"
        "    print(be._code_to_hash_pyc(code, h, False)[:16].hex())\n";
    for (const auto& py : test_pythons()) {
        auto r = run_process({py.path, "-I", "-S", "-c", script});
        ASSERT_EQ(r.exit_code, 0) << describe(py) << r.err;
        std::istringstream lines(r.out);
        const std::size_t hs = pyc::header_size(py.minor);
        auto expect_line = [&](const std::string& header) {
            std::string line;
            ASSERT_TRUE(std::getline(lines, line)) << describe(py);
            EXPECT_EQ(line.substr(0, hs * 2), to_hex(header)) << describe(py);
        };
        for (auto [mt, size] : std::vector<std::pair<std::int64_t, std::uint64_t>>{
                 {1700000000, 6}, {4294967396, 4294967303}, {-100, 0}}) {
            expect_line(
                pyc::build_header(py.magic, py.minor, pyc::PycMode::Timestamp, {mt, size, 0}));
        }
        if (py.supports_hash_pycs()) {
            pyc::SourceFacts f{0, 0, 0x4771233f5fc89fb4ull};
            expect_line(pyc::build_header(py.magic, py.minor, pyc::PycMode::CheckedHash, f));
            expect_line(pyc::build_header(py.magic, py.minor, pyc::PycMode::UncheckedHash, f));
        }
    }
}

// -------------------------------------------------------------------------------- siphash

TEST(SipHashTest, OfficialSipHash24Vectors) {
    // vectors_sip64 from the SipHash reference implementation: key 00..0f, message 00..n-1.
    static const std::uint64_t k_expect[64] = {
        0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
        0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
        0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
        0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
        0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
        0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
        0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
        0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
        0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
        0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
        0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
        0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
        0xe612a3cb9ecba951, 0xc766e62cfcadaf96, 0xee64435a9752fe72, 0xa192d576b245165a,
        0x0a8787bf8ecb74b2, 0x81b3e73d20b49b6f, 0x7fa8220ba3b2ecea, 0x245731c13ca42499,
        0xb78dbfaf3a8d83bd, 0xea1ad565322a1a0b, 0x60e61c23a3795013, 0x6606d7e446282b93,
        0x6ca4ecb15c5f91e1, 0x9f626da15c9625f3, 0xe51b38608ef25f57, 0x958a324ceb064572,
    };
    std::uint8_t key[16];
    for (int i = 0; i < 16; ++i) key[i] = std::uint8_t(i);
    std::string msg;
    for (int n = 0; n < 64; ++n) {
        EXPECT_EQ(pyc::siphash(2, 4, key, msg), k_expect[n]) << "length " << n;
        msg.push_back(char(n));
    }
}

TEST(SipHashTest, ReferenceNoteVectorsPerVersion) {
    struct Row {
        int minor;
        std::uint8_t magic_lo;
        const char* empty;
        const char* v1;
        const char* f42;
    };
    const Row rows[] = {
        {7, 0x42, "85ee0caabd83b6a7", "b49fc85f3f237147", "6ad3b48236631f1d"},
        {8, 0x55, "81e4881b3643e8e9", "3de75259608c2d4f", "27537b7fa85cb8bb"},
        {9, 0x61, "ac0bb7c83e5b1c5f", "a6815d87d68278e2", "91bfa0ffcceeffab"},
        {10, 0x6f, "8cc0cd2525e7fd27", "b4c6a881093eb731", "79cf0bff19676abd"},
        {11, 0xa7, "738d9cd5d5e87f73", "db0ebeb2ef939c45", "628079f0289cc846"},
        {12, 0xcb, "baf18eedc9387a25", "bcea4c7337ef28b7", "d495120b92a09a29"},
        {13, 0xf3, "27ec6d312f93b814", "46d538ab49e48d1d", "32dbf4ed3c809859"},
    };
    for (const auto& r : rows) {
        auto m = magic_of(r.magic_lo);
        EXPECT_EQ(le64_hex(pyc::source_hash(m, r.minor, "")), r.empty) << r.minor;
        EXPECT_EQ(le64_hex(pyc::source_hash(m, r.minor, "V = 1\n")), r.v1) << r.minor;
        EXPECT_EQ(le64_hex(pyc::source_hash(m, r.minor, "def f():\n    return 42\n")), r.f42)
            << r.minor;
    }
}

// The authority: importlib.util.source_hash of each real 3.7+ interpreter, one process each.
TEST(SipHashTest, MatchesEveryInterpreter) {
    auto pythons = pycachefs::test::test_pythons_with_hash_pycs();
    if (pythons.empty()) GTEST_SKIP() << "no CPython 3.7+ found";
    const auto inputs = hash_inputs();
    std::string stdin_text;
    for (const auto& in : inputs) {
        stdin_text += 'x';
        stdin_text += to_hex(in);
        stdin_text += '\n';
    }
    const char* script = "import sys, importlib.util\n"
                         "for line in sys.stdin.read().split():\n"
                         "    print(importlib.util.source_hash(bytes.fromhex(line[1:])).hex())\n";
    for (const auto& py : pythons) {
        auto r = run_process({py.path, "-I", "-S", "-c", script}, stdin_text);
        ASSERT_EQ(r.exit_code, 0) << describe(py) << r.err;
        std::istringstream lines(r.out);
        for (const auto& in : inputs) {
            std::string line;
            ASSERT_TRUE(std::getline(lines, line)) << describe(py);
            EXPECT_EQ(le64_hex(pyc::source_hash(py.magic, py.minor, in)), line)
                << describe(py) << " input length " << in.size();
        }
    }
}

// ---------------------------------------------------------------------------- content hash

TEST(ContentHashTest, KnownVectors) {
    EXPECT_EQ(hash::ContentHash::of("").hex(), "99aa06d3014798d86001c324468d497f");
    EXPECT_EQ(hash::ContentHash::of("abc").hex(), "06b05ab6733a618578af5f94892f3950");
}

TEST(ContentHashTest, IsCanonicalBigEndianXxh3_128) {
    for (const auto& in : hash_inputs()) {
        auto h = hash::ContentHash::of(in);
        XXH128_hash_t raw = XXH3_128bits(in.data(), in.size());
        for (int i = 0; i < 8; ++i) {
            EXPECT_EQ(h.bytes[i], std::uint8_t(raw.high64 >> (56 - 8 * i)));
            EXPECT_EQ(h.bytes[8 + i], std::uint8_t(raw.low64 >> (56 - 8 * i)));
        }
        EXPECT_EQ(h.hex().size(), 32u);
    }
}

TEST(ContentHashTest, DistinctInputsDistinctHashes) {
    std::set<hash::ContentHash> seen;
    auto inputs = hash_inputs();
    inputs.push_back(std::string(1, '\0'));
    inputs.push_back(std::string(2, '\0'));
    for (const auto& in : inputs) seen.insert(hash::ContentHash::of(in));
    // hash_inputs has exactly one empty string, so "\0" and "\0\0" add two more.
    EXPECT_EQ(seen.size(), inputs.size());
    EXPECT_EQ(hash::ContentHash::of("x"), hash::ContentHash::of(std::string("x")));
}

// Not a format test, but the interpreter-driven tests above are only as good as this list.
TEST(PycNameTest, FindsTestInterpreters) {
    for (const auto& py : test_pythons())
        std::cout << "  " << describe(py) << " " << py.cache_tag << " " << pyc::magic_hex(py.magic)
                  << "\n";
    if (test_pythons().empty()) GTEST_SKIP() << "no CPython found";
    for (const auto& py : test_pythons()) {
        EXPECT_EQ(py.cache_tag, "cpython-3" + std::to_string(py.minor));
        EXPECT_EQ(py.magic[2], 0x0d);
        EXPECT_EQ(py.magic[3], 0x0a);
    }
}
