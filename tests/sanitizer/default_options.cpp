// Compiled into every executable of a sanitizer build (PYCACHEFS_SANITIZE=address|thread).
//
// The integration harness starts the daemon with a scrubbed environment (no ASAN_OPTIONS), and
// a detached daemon's stderr is /dev/null, so a report printed the usual way would be lost and
// the test would pass. These defaults send every report, from every process, to files in a
// directory fixed at configure time; scripts/test fails when any file appears there.
// ASAN_OPTIONS/UBSAN_OPTIONS/TSAN_OPTIONS in the environment still override single keys.

#ifndef PYCACHEFS_SANITIZER_REPORT_DIR
#error "PYCACHEFS_SANITIZER_REPORT_DIR must be defined by CMake"
#endif

#include <dlfcn.h>

#define PYCACHEFS_REPORT_PATH(tool) "log_path=" PYCACHEFS_SANITIZER_REPORT_DIR "/" tool

extern "C" {

// Not every process is a test: the daemon runs until unmounted, so leak checking happens at
// its normal exit (after unmount), which the harness always waits for.
__attribute__((used, visibility("default"))) const char* __asan_default_options() {
    return PYCACHEFS_REPORT_PATH("asan") ":detect_leaks=1:abort_on_error=0:"
                                         "detect_stack_use_after_return=1:strict_string_checks=1";
}

__attribute__((used, visibility("default"))) const char* __ubsan_default_options() {
    return PYCACHEFS_REPORT_PATH("ubsan") ":print_stacktrace=1:halt_on_error=1";
}

__attribute__((used, visibility("default"))) const char* __lsan_default_options() {
    return PYCACHEFS_REPORT_PATH("lsan");
}

// halt_on_error=0: one (long) run reports every race, not only the first; the process still
// exits non-zero (exitcode 66) when it reported anything.
__attribute__((used, visibility("default"))) const char* __tsan_default_options() {
    return PYCACHEFS_REPORT_PATH("tsan") ":halt_on_error=0:second_deadlock_stack=1";
}

} // extern "C"

// GCC links UBSan as its own runtime (libubsan.so, with its own copy of the report file), and
// that copy ignores log_path from both __ubsan_default_options and UBSAN_OPTIONS when ASan is
// loaded too (measured with GCC 12): a daemon's UB report would go to /dev/null. Set its report
// path directly. A no-op where UBSan lives inside the ASan runtime (clang) or is absent.
__attribute__((constructor)) static void route_gcc_ubsan_reports() {
    void* ubsan = ::dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!ubsan) return;
    using SetReportPath = void (*)(const char*);
    if (auto set = reinterpret_cast<SetReportPath>(::dlsym(ubsan, "__sanitizer_set_report_path")))
        set(PYCACHEFS_SANITIZER_REPORT_DIR "/ubsan");
}
