// libFuzzer target: see check_cache_name() in fuzz_checks.hpp for the properties checked.
#include "tests/fuzz/fuzz_checks.hpp"

#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string problem = pycachefs_fuzz::check_cache_name(
        std::string_view(reinterpret_cast<const char*>(data), size));
    if (!problem.empty()) {
        std::fprintf(stderr, "fuzz_cache_name: %s\n", problem.c_str());
        std::abort();
    }
    return 0;
}
