#include "cachecore/imports/main_program.hpp"

#include <algorithm>
#include <string_view>

namespace cachecore::imports {

MainProgram main_program_of(const std::vector<std::string>& argv) {
    using Kind = MainProgram::Kind;
    if (argv.empty()) return {};
    const std::string& exe = argv[0];
    const std::string_view base = std::string_view(exe).substr(exe.rfind('/') + 1);
    if (base.substr(0, 6) != "python") return {};
    int optimize = 0;
    auto found = [&](Kind kind, std::string text) {
        return MainProgram{kind, std::move(text), std::min(optimize, 2)};
    };
    for (std::size_t i = 1; i < argv.size(); ++i) {
        const std::string& arg = argv[i];
        if (arg == "--")
            return i + 1 < argv.size() ? MainProgram{Kind::Script, argv[i + 1]} : MainProgram{};
        if (arg == "-" || arg.empty()) return {}; // stdin
        if (arg[0] != '-') return found(Kind::Script, arg);
        if (arg[1] == '-') {
            if (arg == "--check-hash-based-pycs") ++i; // its argument
            continue;                                  // --help, --version: no program runs
        }
        for (std::size_t c = 1; c < arg.size(); ++c) {
            const char opt = arg[c];
            if (opt == 'O') ++optimize;
            if (opt != 'c' && opt != 'm' && opt != 'W' && opt != 'X') continue; // a flag
            std::string value;
            if (c + 1 < arg.size())
                value = arg.substr(c + 1);
            else if (i + 1 < argv.size())
                value = argv[++i];
            else
                return {}; // CPython would refuse the command line
            if (opt == 'c') return found(Kind::Code, value);
            if (opt == 'm') return found(Kind::Module, value);
            break; // -W / -X took the rest
        }
    }
    return {}; // the interactive prompt
}

std::vector<std::string> split_cmdline(const std::string& raw) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < raw.size()) {
        std::size_t end = raw.find('\0', start);
        if (end == std::string::npos) end = raw.size();
        out.emplace_back(raw, start, end - start);
        start = end + 1;
    }
    return out;
}

} // namespace cachecore::imports
