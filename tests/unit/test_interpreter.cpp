#include "cachecore/python/frame_protocol.hpp"
#include "cachecore/python/interpreter.hpp"
#include "python_test_support.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <gtest/gtest.h>
#include <set>

namespace py = cachecore::python;
using namespace pool_test;

namespace {

std::string hex(const py::Interpreter& it) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (auto b : it.magic) {
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

} // namespace

TEST(InterpreterDiscovery, FindsEveryPython3OnThisMachine) {
    auto expected = expected_python3_binaries();
    ASSERT_FALSE(expected.empty()) << "no python3.X found by ls: the test would prove nothing";
    std::set<std::string> found;
    for (const auto& it : discovered().interpreters) {
        found.insert(std::filesystem::canonical(it.path));
    }
    for (const auto& e : expected) EXPECT_TRUE(found.count(e)) << e << " was not discovered";
    EXPECT_EQ(found.size(), discovered().interpreters.size()) << "duplicates by realpath";
    EXPECT_TRUE(discovered().errors.empty());
}

TEST(InterpreterDiscovery, OnlyCPython36AndNewer) {
    for (const auto& it : discovered().interpreters) {
        EXPECT_EQ(it.major, 3) << it.path;
        EXPECT_GE(it.minor, 6) << it.path;
        EXPECT_EQ(it.cache_tag, "cpython-3" + std::to_string(it.minor)) << it.path;
    }
}

TEST(InterpreterDiscovery, ExplicitPathsFirstAndErrorsReported) {
    auto py2 = pyenv_root() + "/versions/2.7.18/bin/python2.7";
    auto any = discovered().interpreters.back().path;
    py::DiscoveryOptions opts;
    opts.explicit_paths = {"/nonexistent/python3.99", any, "/etc/passwd"};
    if (::access(py2.c_str(), X_OK) == 0) opts.explicit_paths.push_back(py2);
    opts.search_default_locations = false;
    auto r = py::discover(opts);
    ASSERT_EQ(r.interpreters.size(), 1U);
    EXPECT_EQ(r.interpreters[0].path, any);
    ASSERT_EQ(r.errors.size(), opts.explicit_paths.size() - 1);
    EXPECT_EQ(r.errors[0].rfind("/nonexistent/python3.99: ", 0), 0U) << r.errors[0];
    EXPECT_EQ(r.errors[1].rfind("/etc/passwd: ", 0), 0U) << r.errors[1];
    if (r.errors.size() > 2) {
        EXPECT_NE(r.errors[2].find("python2.7"), std::string::npos);
    }

    // The explicit one leads the list of a full discovery too.
    opts.search_default_locations = true;
    opts.explicit_paths = {any};
    auto full = py::discover(opts);
    ASSERT_FALSE(full.interpreters.empty());
    EXPECT_EQ(full.interpreters[0].path, any);
}

TEST(InterpreterDiscovery, WrapperScriptsResolveToTheRealBinary) {
    TempDir dir;
    auto real = discovered().interpreters.front().path;
    auto wrapper = dir.path / "python3.7";
    write_file(wrapper, "#!/bin/sh\nexec " + shell_quote(real) + " \"$@\"\n");
    std::filesystem::permissions(wrapper, std::filesystem::perms::owner_all);
    py::DiscoveryOptions opts;
    opts.path_env = dir.path.string();
    opts.pyenv_root = "/nonexistent";
    auto r = py::discover(opts);
    for (const auto& it : r.interpreters) EXPECT_NE(it.path, wrapper.string());
    bool has_real = false;
    for (const auto& it : r.interpreters) {
        has_real |= std::filesystem::canonical(it.path) == std::filesystem::canonical(real);
    }
    EXPECT_TRUE(has_real);
}

TEST(InterpreterProbe, MagicAndTagMatchWhatEachInterpreterPrints) {
    const char* script = "import sys, importlib.util\n"
                         "print(sys.version.split()[0], sys.implementation.cache_tag,\n"
                         "      importlib.util.MAGIC_NUMBER.hex())\n";
    ASSERT_FALSE(discovered().interpreters.empty());
    for (const auto& it : discovered().interpreters) {
        auto printed = run_python(it.path, script);
        EXPECT_EQ(printed, it.version + " " + it.cache_tag + " " + hex(it) + "\n") << it.path;
        EXPECT_EQ(it.magic[2], '\r');
        EXPECT_EQ(it.magic[3], '\n');
        EXPECT_EQ(it.supports_hash_pycs(), it.minor >= 7);
    }
}

TEST(InterpreterProbe, ExtensionSuffixesInProbeOrder) {
    // The look-ahead probes a package's `__init__` with these, as CPython's FileFinder does.
    const char* script = "import importlib.machinery\n"
                         "print(' '.join(importlib.machinery.EXTENSION_SUFFIXES))\n";
    for (const auto& it : discovered().interpreters) {
        std::string joined;
        for (const auto& s : it.extension_suffixes) joined += (joined.empty() ? "" : " ") + s;
        EXPECT_EQ(run_python(it.path, script), joined + "\n") << it.path;
        ASSERT_FALSE(it.extension_suffixes.empty()) << it.path;
        EXPECT_EQ(it.extension_suffixes.back(), ".so") << it.path;
    }
}

TEST(InterpreterProbe, AnswerIsCachedInProcess) {
    auto path = discovered().interpreters.front().path;
    auto begin = std::chrono::steady_clock::now();
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(py::probe(path).has_value());
    auto elapsed = std::chrono::steady_clock::now() - begin;
    EXPECT_LT(elapsed, std::chrono::milliseconds(200)) << "100 probes should not spawn anything";
}

TEST(InterpreterProbe, RejectsNonPython) {
    std::string error;
    EXPECT_FALSE(py::probe("/bin/true", &error).has_value());
    EXPECT_FALSE(error.empty());
    EXPECT_FALSE(py::probe("/nonexistent", &error).has_value());
    EXPECT_EQ(error, "no such file");
}

TEST(InterpreterFrames, RoundTripAndPartialInput) {
    namespace f = py::frame;
    std::string req = f::encode_request(7, "pkg/m\xff.py", std::string("x = 1\0\n", 7));
    auto d = f::decode_frame(req);
    ASSERT_EQ(d.status, f::DecodeStatus::Complete);
    EXPECT_EQ(d.consumed, req.size());
    auto r = f::decode_request_body(d.body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->optimize, 2); // clamped
    EXPECT_EQ(r->filename, "pkg/m\xff.py");
    EXPECT_EQ(r->source, std::string("x = 1\0\n", 7));
    for (std::size_t cut = 0; cut < req.size(); ++cut) {
        EXPECT_EQ(f::decode_frame(std::string_view(req).substr(0, cut)).status,
                  f::DecodeStatus::NeedMore);
    }
    EXPECT_EQ(f::decode_frame(std::string("\xff\xff\xff\x7f", 4)).status,
              f::DecodeStatus::TooLarge);

    f::Reply err;
    err.kind = f::ReplyKind::Error;
    err.error_type = "SyntaxError";
    err.error_message = "invalid syntax";
    err.error_line = -3;
    auto back = f::decode_reply_body(f::encode_reply_body(err));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->error_type, "SyntaxError");
    EXPECT_EQ(back->error_message, "invalid syntax");
    EXPECT_EQ(back->error_line, -3);
    EXPECT_FALSE(f::decode_reply_body(""));
    EXPECT_FALSE(f::decode_reply_body("\x07"));
    EXPECT_FALSE(f::decode_reply_body(std::string("\x01\0\0\0\0\x09\0\0\0abc", 12)));
}
