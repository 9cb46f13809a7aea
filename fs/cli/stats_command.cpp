#include "cachecore/util/size.hpp"
#include "fs/cli/commands.hpp"
#include "fs/cli/mount_stats.hpp"
#include "fs/cli/store_access.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace fs::cli {

int run_stats_mount(const std::string& mountpoint, bool json, bool zero) {
    std::string error;
    auto text = read_mount_stats(mountpoint, &error);
    if (!text) {
        std::fprintf(stderr, "pycachefs: %s\n", error.c_str());
        return 1;
    }
    if (zero) {
        // The mount's live counters count since it started; the store's persistent ones reset.
        MountOptions o;
        o.store = nlohmann::json::parse(*text).value("store", "");
        auto store = open_store(o, true);
        if (!store) return 1;
        store->zero_counters();
        if (!json) std::printf("counters of %s reset\n", o.store.c_str());
    }
    if (json) {
        std::printf("%s\n", text->c_str());
        return 0;
    }
    auto j = nlohmann::json::parse(*text);
    std::printf("mount        %s -> %s (pid %d, %s, %s)\n", j["source"].get<std::string>().c_str(),
                j["mountpoint"].get<std::string>().c_str(), j["pid"].get<int>(),
                j["rw"].get<bool>() ? "rw" : "ro", j["pyc_mode"].get<std::string>().c_str());
    std::printf("store        %s\n", j["store"].get<std::string>().c_str());
    std::printf("watching     %s\n", j["watching"].get<std::string>().c_str());
    std::string transport = j.value("transport", std::string("/dev/fuse"));
    if (j.contains("ring_requests_per_queue")) {
        std::string per_queue;
        for (auto& n : j["ring_requests_per_queue"])
            per_queue += (per_queue.empty() ? "" : " / ") + std::to_string(n.get<std::uint64_t>());
        transport += " (" + std::to_string(j["ring_workers"].get<std::uint64_t>()) +
                     " ring workers; requests per CPU queue " + per_queue + ")";
    }
    std::printf("transport    %s\n", transport.c_str());
    // What reached the daemon: everything else the kernel answered from its caches.
    std::string requests;
    for (auto& [name, n] : j["requests"].items()) {
        requests +=
            (requests.empty() ? "" : ", ") + name + " " + std::to_string(n.get<std::uint64_t>());
    }
    std::printf("requests     %s\n", requests.empty() ? "none" : requests.c_str());
    // Sources read to hash them: a stamp the store or the memo knew needs no read.
    // Import lists (for walks of the import graph) come from the store when scanned before.
    const auto lists = j.value("import_lists", nlohmann::json::object());
    std::printf("sources      %llu read; import lists: %llu from the store, %llu scanned\n",
                (unsigned long long)j.value("sources_read", std::uint64_t(0)),
                (unsigned long long)lists.value("from_store", std::uint64_t(0)),
                (unsigned long long)lists.value("scanned", std::uint64_t(0)));
    std::printf("page cache   %llu pycs pushed by the daemon, %llu pyc READs; %llu invalidations, "
                "%llu re-invalidations\n",
                (unsigned long long)j["page_cache_pushes"].get<std::uint64_t>(),
                (unsigned long long)j["pyc_reads"].get<std::uint64_t>(),
                (unsigned long long)j["invalidations"].get<std::uint64_t>(),
                (unsigned long long)j["reinvalidations"].get<std::uint64_t>());
    const auto& files = j["pyc_files"];
    if (files.value("links", false)) {
        std::printf("pyc files    links to %s: %llu files, %s (%llu written)\n",
                    files["dir"].get<std::string>().c_str(),
                    (unsigned long long)files["files"].get<std::uint64_t>(),
                    cachecore::util::format_size(files["bytes"].get<std::uint64_t>()).c_str(),
                    (unsigned long long)files["written"].get<std::uint64_t>());
    } else {
        std::printf("pyc files    FUSE files; links %s\n",
                    files.value("why_not", std::string("off")).c_str());
    }
    const auto& ahead = j["look_ahead"];
    if (ahead.is_object()) {
        auto n = [&](const char* key) {
            return (unsigned long long)ahead[key].get<std::uint64_t>();
        };
        std::uint64_t sent = 0;
        if (ahead.contains("requests"))
            for (const auto& [kind, count] : ahead["requests"].items())
                sent += count.get<std::uint64_t>();
        std::printf(
            "look-ahead   %llu jobs, %llu lookups (%llu found), %llu dropped, %llu waiting; "
            "%llu requests; %llu files read ahead (%llu bytes)\n",
            n("jobs"), n("lookups"), n("found"), n("dropped"), n("waiting"),
            (unsigned long long)sent, n("files_read"), n("bytes_read"));
    } else {
        std::printf("look-ahead   off\n");
    }
    std::printf("\n%-14s %9s %9s %9s %9s %9s %11s %9s\n", "interpreter", "lookups", "served",
                "hits", "compiles", "errors", "bytes", "compile s");
    auto row = [](const std::string& name, const nlohmann::json& c) {
        std::printf("%-14s %9llu %9llu %9llu %9llu %9llu %11s %9.2f\n", name.c_str(),
                    (unsigned long long)c["lookups"].get<std::uint64_t>(),
                    (unsigned long long)c["pycs_served"].get<std::uint64_t>(),
                    (unsigned long long)c["store_hits"].get<std::uint64_t>(),
                    (unsigned long long)c["compiles"].get<std::uint64_t>(),
                    (unsigned long long)c["compile_errors"].get<std::uint64_t>(),
                    cachecore::util::format_size(c["bytes_served"].get<std::uint64_t>()).c_str(),
                    c["compile_seconds"].get<double>());
    };
    for (auto& [tag, c] : j["interpreters"].items()) row(tag, c);
    row("total", j["totals"]);
    return 0;
}

} // namespace fs::cli
