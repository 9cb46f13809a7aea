#pragma once

#include <string>
#include <vector>

namespace cachecore::imports {

// What a CPython command line runs as __main__. Its imports are the program's first ones, and
// CPython never asks for a pyc of the main program itself, so they are known only from here.
struct MainProgram {
    enum class Kind {
        None,   // not a Python command line, or the interactive prompt / stdin
        Code,   // -c: `text` is the code
        Script, // `text` is the script's path as given (relative to the process's cwd)
        Module, // -m: `text` is the module name (imported the usual way: its pyc is asked for)
    };
    Kind kind = Kind::None;
    std::string text;
    int optimize = 0; // -O / -OO before the program (the pycs it asks for: opt-1, opt-2)
    bool operator==(const MainProgram&) const = default;
};

// Parses argv the way CPython's own option parser does (options may be bundled, `-cCODE` and
// `-c CODE` alike; -W, -X and --check-hash-based-pycs take an argument). argv[0] must name a
// Python (its file name starts with "python"): other programs get Kind::None.
MainProgram main_program_of(const std::vector<std::string>& argv);

// The NUL-separated contents of /proc/PID/cmdline, split.
std::vector<std::string> split_cmdline(const std::string& raw);

} // namespace cachecore::imports
