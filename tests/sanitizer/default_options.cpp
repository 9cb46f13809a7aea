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
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

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

// LeakSanitizer cannot run under ptrace: it stops with "fatal error" (and a report file) at
// exit. The isolation test runs the daemon under strace for its whole life, so leak checking is
// off in a traced process. Runs before the sanitizer is initialized: raw syscalls only, no libc
// wrappers (they are intercepted) and no allocation.
// Not instrumented: the shadow memory instrumented code checks does not exist yet.
#define PYCACHEFS_NO_SANITIZE __attribute__((no_sanitize("address", "thread", "undefined")))

PYCACHEFS_NO_SANITIZE static bool traced() {
    static char status[4096];
    long fd = ::syscall(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    long n = ::syscall(SYS_read, fd, status, sizeof status - 1);
    ::syscall(SYS_close, fd);
    if (n <= 0) return false;
    status[n] = '\0';
    // "TracerPid:\t<pid>"; a hand-written search, since strstr is intercepted as well.
    static constexpr char k_key[] = "TracerPid:";
    for (long i = 0; i + long(sizeof k_key) <= n; ++i) {
        long k = 0;
        while (k_key[k] && status[i + k] == k_key[k]) ++k;
        if (k_key[k]) continue;
        const char* tracer = status + i + k;
        while (*tracer == ' ' || *tracer == '\t') ++tracer;
        return *tracer != '0';
    }
    return false;
}

PYCACHEFS_NO_SANITIZE __attribute__((used, visibility("default"))) const char*
__lsan_default_options() {
    return traced() ? PYCACHEFS_REPORT_PATH("lsan") ":detect_leaks=0"
                    : PYCACHEFS_REPORT_PATH("lsan");
}

// halt_on_error=0: one (long) run reports every race, not only the first; the process still
// exits non-zero (exitcode 66) when it reported anything.
__attribute__((used, visibility("default"))) const char* __tsan_default_options() {
    return PYCACHEFS_REPORT_PATH("tsan") ":halt_on_error=0:second_deadlock_stack=1";
}

// The look-ahead's lookers (fs/overlay/look_ahead.cpp) work in a file table of their own: a
// descriptor number there names another file than the same number in the daemon's table, but
// ThreadSanitizer keys descriptors by number per process and reports an open or close in one
// table against a read or close of the same number in the other (seen against the store
// writer's and the watcher's descriptors). Only those two functions use the lookers' table.
__attribute__((used, visibility("default"))) const char* __tsan_default_suppressions() {
    return "race:fs::overlay::LookAhead::look_up\n"
           "race:fs::overlay::LookAhead::Pidfds\n";
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
