// `pycachefs warm`: fill the store ahead of time (e.g. once, while building a container image).
#include "cachecore/bytecode_cache.hpp"
#include "cachecore/util/log.hpp"
#include "fs/cli/commands.hpp"
#include "fs/cli/interpreter_choice.hpp"
#include "fs/cli/progress_meter.hpp"
#include "fs/cli/source_walk.hpp"
#include "fs/cli/store_access.hpp"

#include <algorithm>
#include <atomic>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unistd.h>

namespace fs::cli {
namespace {

using Outcome = cachecore::BytecodeCache::WarmOutcome;

struct Tally {
    std::atomic<std::uint64_t> compiled{0}, stored{0}, errors{0}, failed{0};
    std::mutex mutex;
    // message -> cache tags it was reported for (one line per distinct error)
    std::map<std::string, std::set<std::string>> error_lines;
    std::map<std::string, std::set<std::string>> failure_lines;

    void record(Outcome outcome, const cachecore::PycError& error, const std::string& tag) {
        switch (outcome) {
        case Outcome::Compiled:
            ++compiled;
            return;
        case Outcome::AlreadyStored:
            ++stored;
            return;
        case Outcome::CompileError:
            ++errors;
            break;
        case Outcome::Failed:
            ++failed;
            break;
        }
        std::lock_guard lock(mutex);
        (outcome == Outcome::CompileError ? error_lines : failure_lines)[error.message].insert(tag);
    }
};

std::string join(const std::set<std::string>& items) {
    std::string out;
    for (const auto& i : items) {
        if (!out.empty()) out += ", ";
        out += i;
    }
    return out;
}

} // namespace

int run_warm(const WarmArgs& args) {
    auto options = resolve_command_options(args.cli);
    if (!options) return 2;
    std::vector<int> levels = args.optimize.empty() ? std::vector<int>{0} : args.optimize;
    std::sort(levels.begin(), levels.end());
    levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
    for (int level : levels)
        if (level < 0 || level > 2) {
            std::fprintf(stderr, "pycachefs: invalid --optimize level %d (0, 1 or 2)\n", level);
            return 2;
        }

    std::vector<cachecore::python::Interpreter> served;
    std::vector<std::string> listed;
    if (auto err = choose_interpreters(options->pythons, served, listed); !err.empty()) {
        std::fprintf(stderr, "pycachefs: %s\n", err.c_str());
        return 2;
    }
    const auto interpreters = first_per_cache_tag(served);

    auto walk = find_python_sources(args.paths);
    if (!walk.errors.empty()) {
        for (const auto& e : walk.errors) std::fprintf(stderr, "pycachefs: %s\n", e.c_str());
        return 1;
    }

    auto store = open_store(*options, false);
    if (!store) return 1;
    const unsigned jobs = args.jobs ? args.jobs : std::max(1u, std::thread::hardware_concurrency());

    std::string tags;
    for (const auto& i : interpreters) {
        if (!tags.empty()) tags += ", ";
        tags += i.cache_tag;
    }
    std::string opts;
    for (int l : levels) {
        if (!opts.empty()) opts += ',';
        opts += std::to_string(l);
    }
    const bool terminal = ::isatty(STDOUT_FILENO);
    std::printf("warming %zu files for %s (optimize %s) into %s with %u jobs\n", walk.files.size(),
                tags.c_str(), opts.c_str(), options->store.c_str(), jobs);
    std::fflush(stdout);

    Tally tally;
    double seconds = 0;
    {
        cachecore::BytecodeCacheOptions co;
        co.pool.workers = jobs;
        co.pool.timeout = std::chrono::seconds(options->compile_timeout_s);
        co.prefetch = false;
        cachecore::BytecodeCache cache(*store, co);

        ProgressMeter meter(walk.files.size(), "files", stdout, terminal);
        std::atomic<std::size_t> next{0};
        auto work = [&] {
            for (;;) {
                const std::size_t i = next.fetch_add(1);
                if (i >= walk.files.size()) return;
                for (const auto& interp : interpreters) {
                    for (int level : levels) {
                        cachecore::PycError error;
                        auto outcome = cache.warm(AT_FDCWD, walk.files[i], interp, level, &error);
                        tally.record(outcome, error, interp.cache_tag);
                    }
                }
                meter.advance();
            }
        };
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < jobs; ++t) threads.emplace_back(work);
        for (auto& t : threads) t.join();
        meter.finish();
        seconds = meter.elapsed();
        cache.push_counters();
    }
    store->flush();

    const double rate = seconds > 0 ? double(walk.files.size()) / seconds : 0;
    std::printf("warmed %zu files in %.2f s (%.0f files/s)\n", walk.files.size(), seconds, rate);
    std::printf("  compiled          %llu\n", (unsigned long long)tally.compiled.load());
    std::printf("  already in store  %llu\n", (unsigned long long)tally.stored.load());
    std::printf("  compile errors    %llu\n", (unsigned long long)tally.errors.load());
    if (tally.failed)
        std::printf("  failed            %llu\n", (unsigned long long)tally.failed.load());
    if (!tally.error_lines.empty()) {
        std::printf("compile errors:\n");
        for (const auto& [line, where] : tally.error_lines)
            std::printf("  %s [%s]\n", line.c_str(), join(where).c_str());
    }
    if (!tally.failure_lines.empty()) {
        std::fflush(stdout);
        for (const auto& [line, where] : tally.failure_lines)
            std::fprintf(stderr, "pycachefs: %s [%s]\n", line.c_str(), join(where).c_str());
    }
    if (auto err = store->last_write_error()) {
        std::fprintf(stderr, "pycachefs: the store could not save everything: %s\n", err->c_str());
        return 1;
    }
    return tally.failed ? 1 : 0;
}

} // namespace fs::cli
