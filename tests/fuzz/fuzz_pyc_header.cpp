// libFuzzer target: see check_pyc_header() in fuzz_checks.hpp for the properties checked.
#include "tests/fuzz/fuzz_checks.hpp"

#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string problem = pycachefs_fuzz::check_pyc_header(
        std::string_view(reinterpret_cast<const char*>(data), size));
    if (!problem.empty()) {
        std::fprintf(stderr, "fuzz_pyc_header: %s\n", problem.c_str());
        std::abort();
    }
    return 0;
}
