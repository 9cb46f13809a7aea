// libFuzzer target: see check_frame_protocol() in fuzz_checks.hpp for the properties checked.
#include "tests/fuzz/fuzz_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    return pycachefs_fuzz::run_check("fuzz_frame_protocol", pycachefs_fuzz::check_frame_protocol,
                                     data, size);
}
