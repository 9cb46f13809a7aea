// Which program a CPython command line runs as __main__: parsed here, then checked against what
// the real interpreters run for the same command lines.
#include "cachecore/imports/main_program.hpp"
#include "support_python_finder.hpp"

#include <gtest/gtest.h>

using cachecore::imports::main_program_of;
using cachecore::imports::MainProgram;
using cachecore::imports::split_cmdline;
using Kind = MainProgram::Kind;
using pycachefs::test::run_process;
using pycachefs::test::TempDir;
using pycachefs::test::write_file;

namespace {

// `CODE` and `SCRIPT` stand for code that prints "code" and a script that prints "script".
struct Case {
    std::vector<std::string> args; // after argv[0]
    Kind kind;
    int min_minor = 6; // the first 3.x with every option used
};

const Case k_cases[] = {
    {{"-c", "CODE"}, Kind::Code},
    {{"-BSc", "CODE"}, Kind::Code},
    {{"-cCODE"}, Kind::Code},
    {{"-I", "-W", "ignore", "-X", "importtime", "-c", "CODE", "-m", "json"}, Kind::Code},
    {{"-Wignore", "-Ximporttime", "-E", "-c", "CODE"}, Kind::Code},
    {{"-O", "--check-hash-based-pycs", "never", "-c", "CODE"}, Kind::Code, 7},
    {{"SCRIPT", "-c", "x"}, Kind::Script},
    {{"-u", "-B", "SCRIPT"}, Kind::Script},
    {{"-X", "dev", "--", "SCRIPT"}, Kind::Script},
    {{"-m", "json.tool", "--help"}, Kind::Module},
    {{"-BSmjson.tool", "--help"}, Kind::Module},
};

} // namespace

TEST(MainProgram, ParsesLikeCPython) {
    EXPECT_EQ(main_program_of({"/usr/bin/python3.11", "-c", "import a"}),
              (MainProgram{Kind::Code, "import a"}));
    EXPECT_EQ(main_program_of({"python3", "-X", "dev", "app/main.py", "-c", "x"}),
              (MainProgram{Kind::Script, "app/main.py"}));
    EXPECT_EQ(main_program_of({"python", "-m", "pkg.cli"}), (MainProgram{Kind::Module, "pkg.cli"}));
    EXPECT_EQ(main_program_of({"python3", "-Bmpkg.cli"}), (MainProgram{Kind::Module, "pkg.cli"}));
    EXPECT_EQ(main_program_of({"python3", "-O", "-BOc", "x"}), (MainProgram{Kind::Code, "x", 2}));
    EXPECT_EQ(main_program_of({"python3", "-OOO", "s.py", "-O"}),
              (MainProgram{Kind::Script, "s.py", 2}));
    EXPECT_EQ(main_program_of({"python3", "-O", "-m", "m"}), (MainProgram{Kind::Module, "m", 1}));
    // No program: the prompt, stdin, an unfinished option, another program altogether.
    EXPECT_EQ(main_program_of({"python3"}).kind, Kind::None);
    EXPECT_EQ(main_program_of({"python3", "-"}).kind, Kind::None);
    EXPECT_EQ(main_program_of({"python3", "-i", "-W"}).kind, Kind::None);
    EXPECT_EQ(main_program_of({"/usr/bin/perl", "-c", "x"}).kind, Kind::None);
    EXPECT_EQ(main_program_of({}).kind, Kind::None);
    EXPECT_EQ(split_cmdline(std::string("python3\0-c\0import a\0", 20)),
              (std::vector<std::string>{"python3", "-c", "import a"}));
    EXPECT_EQ(split_cmdline(std::string("a\0\0b", 4)), (std::vector<std::string>{"a", "", "b"}));
}

TEST(MainProgram, EveryInterpreterRunsWhatWasFound) {
    ASSERT_FALSE(pycachefs::test::test_pythons().empty());
    TempDir dir;
    const std::string script = (dir.path() / "script.py").string();
    write_file(script, "print('script')\n");
    for (const auto& python : pycachefs::test::test_pythons()) {
        for (const auto& c : k_cases) {
            if (python.minor < c.min_minor) continue;
            std::vector<std::string> argv{python.path};
            for (const auto& a : c.args) {
                std::string arg = a;
                if (auto at = arg.find("CODE"); at != std::string::npos)
                    arg.replace(at, 4, "print('code')");
                if (arg == "SCRIPT") arg = script;
                argv.push_back(arg);
            }
            SCOPED_TRACE(python.path + " " + ::testing::PrintToString(c.args));
            const MainProgram found = main_program_of(argv);
            ASSERT_EQ(found.kind, c.kind);
            auto ran = run_process(argv);
            if (c.kind == Kind::Code) {
                EXPECT_EQ(found.text, "print('code')");
                EXPECT_EQ(ran.out, "code\n") << ran.err;
            } else if (c.kind == Kind::Script) {
                EXPECT_EQ(found.text, script);
                EXPECT_EQ(ran.out, "script\n") << ran.err;
            } else {
                EXPECT_EQ(found.text, "json.tool");
                EXPECT_NE(ran.out.find("json.tool"), std::string::npos) << ran.err;
            }
        }
    }
}
