// libFuzzer target: see check_store_entry() in fuzz_checks.hpp for the properties checked.
#include "tests/fuzz/fuzz_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    return pycachefs_fuzz::run_check("fuzz_store_entry", pycachefs_fuzz::check_store_entry, data,
                                     size);
}
