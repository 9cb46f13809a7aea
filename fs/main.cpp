// pycachefs: command dispatch. `pycachefs SOURCE MOUNTPOINT -o ...` (as mount.fuse3 calls it)
// is the same as `pycachefs mount SOURCE MOUNTPOINT -o ...`. Every command turns its command-line
// options into settings (the `-o` vocabulary) and resolves them against -o, the environment and
// the config files (fs/cli/settings.hpp), so precedence is the same everywhere.
#include "fs/cli/commands.hpp"
#include "fs/cli/settings.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace {

using fs::cli::Settings;

const std::set<std::string> k_commands = {"mount", "unmount", "umount", "stats", "warm",
                                          "gc",    "clear",   "verify", "help"};

// Options whose values become settings after parsing, only when given on the command line.
class SettingOptions {
public:
    void text(CLI::App& cmd, const std::string& names, const std::string& key,
              const std::string& help) {
        auto slot = std::make_shared<std::string>();
        auto* opt = cmd.add_option(names, *slot, help);
        m_collect.push_back([=](Settings& out) {
            if (opt->count()) out.push_back({key, *slot, "--" + opt->get_lnames().front()});
        });
        m_keep.push_back(slot);
    }
    void list(CLI::App& cmd, const std::string& names, const std::string& key,
              const std::string& help) {
        auto slot = std::make_shared<std::vector<std::string>>();
        auto* opt = cmd.add_option(names, *slot, help);
        m_collect.push_back([=](Settings& out) {
            for (const auto& v : *slot) out.push_back({key, v, "--" + opt->get_lnames().front()});
        });
        m_keep.push_back(slot);
    }
    void flag(CLI::App& cmd, const std::string& names, const std::string& key,
              const std::string& help) {
        auto* opt = cmd.add_flag(names, help);
        m_collect.push_back([=](Settings& out) {
            if (opt->count()) out.push_back({key, "1", "--" + opt->get_lnames().front()});
        });
    }
    Settings collect() const {
        Settings out;
        for (const auto& c : m_collect) c(out);
        return out;
    }

private:
    std::vector<std::function<void(Settings&)>> m_collect;
    std::vector<std::shared_ptr<void>> m_keep;
};

const char* k_store_help = "Store directory (default: $PYCACHEFS_STORE, the config files, "
                           "$XDG_CACHE_HOME/pycachefs or ~/.cache/pycachefs)";
const char* k_size_help = "Store size limit, e.g. 500M, 2G (default 2G)";
const char* k_python_help =
    "Interpreter (repeatable; default: $PYCACHEFS_PYTHON, the config files, else every CPython "
    "3.6+ found)";

void add_mount_options(CLI::App& cmd, SettingOptions& s, fs::cli::MountOptions& o,
                       std::vector<std::string>& o_opts) {
    cmd.add_option("source", o.source, "Source tree to mount")->required();
    cmd.add_option("mountpoint", o.mountpoint, "Empty directory to mount it on")->required();
    s.text(cmd, "--store", "store", k_store_help);
    s.list(cmd, "--python", "python", k_python_help);
    s.text(cmd, "--max-size", "max_size", k_size_help);
    s.flag(cmd, "--rw", "rw", "Pass writes through to the source tree (default: read-only)");
    s.text(cmd, "--pyc-mode", "pyc_mode",
           "timestamp (default), checked-hash or unchecked-hash pyc headers");
    s.text(cmd, "--real-pycache", "real_pycache",
           "hide (default): virtual __pycache__; show: pass real ones through");
    s.text(cmd, "--watcher", "watcher",
           "auto (default: fanotify when permitted, else inotify), fanotify or inotify");
    s.text(cmd, "--compile-ahead", "compile_ahead",
           "What a cold compile queues on idle workers: all (default), imports (what it imports), "
           "package (its package's modules) or off");
    s.text(cmd, "--io-uring", "io_uring",
           "FUSE over io_uring: off (default: /dev/fuse), auto (when the kernel has it switched "
           "on) or on (fail without it)");
    s.text(cmd, "--pyc-links", "pyc_links",
           "auto (default: pycs are symlinks to real files in a private directory under "
           "/run/pycachefs or $XDG_RUNTIME_DIR/pycachefs when that is a tmpfs, so imports need "
           "no FUSE round trip), DIR (the same under DIR) or off (pycs are FUSE files)");
    s.text(cmd, "--look-ahead", "look_ahead",
           "on (default: while a process imports, look up the names it will ask for next, in "
           "parallel, with its credentials: along the import statements of the modules it "
           "loads, and around the directories it uses), dirs (only around the directories) "
           "or off");
    s.flag(cmd, "-f,--foreground", "foreground", "Stay in the foreground, log to stderr");
    s.flag(cmd, "-d,--debug", "debug", "Debug log (see --fuse-debug for FUSE requests)");
    s.flag(cmd, "--fuse-debug", "fuse_debug", "Print every FUSE request (libfuse's -d)");
    s.text(cmd, "--log-file", "log_file", "Log here (default: stderr in the foreground, syslog)");
    s.text(cmd, "--log-level", "log_level", "debug, info, warning (default) or error");
    s.text(cmd, "--pid-file", "pid_file", "Write the daemon's pid here");
    s.text(cmd, "--workers", "workers",
           "Compile workers per interpreter (default: one per core, plus one)");
    s.text(cmd, "--compile-timeout", "compile_timeout",
           "Seconds before a hung compile is killed (default 30)");
    cmd.add_option("-o", o_opts,
                   "Comma-separated options: any long option as key=value (store=DIR, python=PATH, "
                   "max_size=2G, rw, pyc_mode=..., real_pycache=...), plus FUSE's own "
                   "(allow_other, auto_unmount, ...)");
}

int fail(const std::string& message, int code = 2) {
    std::fprintf(stderr, "pycachefs: %s\n", message.c_str());
    return code;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    // The bare form: the first word is a path, not a command.
    if (!args.empty() && !args[0].empty() && args[0][0] != '-' && !k_commands.count(args[0]))
        args.insert(args.begin(), "mount");

    CLI::App app{
        "pycachefs: a FUSE view of a Python source tree with a __pycache__ nobody wrote "
        "to disk.\nCompiled lazily by real CPython, kept in a content-addressed LMDB store.\n"
        "Configuration: command line > -o > PYCACHEFS_* environment > STORE/pycachefs.conf > "
        "/etc/pycachefs.conf (or $PYCACHEFS_CONF).",
        "pycachefs"};
    app.set_version_flag("-V,--version", std::string("pycachefs ") + PYCACHEFS_VERSION);
    app.require_subcommand(1);

    fs::cli::MountOptions mount_opts;
    std::vector<std::string> o_opts;
    SettingOptions mount_settings;
    auto* mount = app.add_subcommand("mount", "Mount SOURCE on MOUNTPOINT (returns once live)");
    add_mount_options(*mount, mount_settings, mount_opts, o_opts);

    std::string unmount_point;
    bool lazy = false;
    double wait = 10;
    auto* unmount = app.add_subcommand("unmount", "Unmount a pycachefs mount")->alias("umount");
    unmount->add_option("mountpoint", unmount_point, "Mount point")->required();
    unmount->add_flag("-z,--lazy", lazy, "Detach now even if busy; finish when no longer used");
    unmount->add_option("--wait", wait, "Seconds to wait for the daemon to exit (default 10)");

    std::string stats_point;
    bool json = false, zero = false;
    SettingOptions stats_settings;
    auto* stats = app.add_subcommand(
        "stats", "Show the store's statistics, or a mount's live statistics given MOUNTPOINT");
    stats->add_option("mountpoint", stats_point, "Mount point (default: show the store)");
    stats_settings.text(*stats, "--store", "store", k_store_help);
    stats->add_flag("--json", json, "Machine-readable output");
    stats->add_flag("-z,--zero", zero, "Reset the store's counters (of MOUNTPOINT's store)");

    fs::cli::WarmArgs warm_args;
    SettingOptions warm_settings;
    auto* warm = app.add_subcommand(
        "warm", "Compile every .py under PATH into the store (e.g. while building an image)");
    warm->add_option("path", warm_args.paths, "Source trees or files")->required();
    warm_settings.list(*warm, "--python", "python", k_python_help);
    warm->add_option("-O,--optimize", warm_args.optimize, "Optimize levels, e.g. 0,1,2 (default 0)")
        ->delimiter(',');
    warm->add_option("-j,--jobs", warm_args.jobs, "Files compiled in parallel (default: cores)");
    warm_settings.text(*warm, "--store", "store", k_store_help);
    warm_settings.text(*warm, "--max-size", "max_size", k_size_help);
    warm_settings.text(*warm, "--log-level", "log_level", "debug, info, warning (default), error");

    SettingOptions gc_settings, clear_settings, verify_settings;
    auto* gc = app.add_subcommand("gc", "Evict least recently used entries down to the limit");
    gc_settings.text(*gc, "--max-size", "max_size", "Evict down to this size (default: the limit)");
    gc_settings.text(*gc, "--store", "store", k_store_help);
    auto* clear = app.add_subcommand("clear", "Remove every entry from the store");
    clear_settings.text(*clear, "--store", "store", k_store_help);
    auto* verify = app.add_subcommand(
        "verify", "Check every entry's checksum and format; remove and list bad ones (exit 1)");
    verify_settings.text(*verify, "--store", "store", k_store_help);

    auto* help = app.add_subcommand("help", "Show this help");

    std::vector<const char*> cargv{argv[0]};
    for (auto& a : args) cargv.push_back(a.c_str());
    try {
        app.parse(int(cargv.size()), const_cast<char**>(cargv.data()));
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    if (help->parsed()) {
        std::printf("%s", app.help().c_str());
        return 0;
    }
    if (mount->parsed()) {
        auto& m = mount_opts;
        if (auto err = fs::cli::resolve_options(mount_settings.collect(), o_opts, m); !err.empty())
            return fail(err);
        return fs::cli::run_mount(std::move(m));
    }
    if (unmount->parsed()) return fs::cli::run_unmount(unmount_point, lazy, wait);
    if (stats->parsed()) {
        auto cli = stats_settings.collect();
        if (stats_point.empty()) return fs::cli::run_store_stats(cli, json, zero);
        if (!cli.empty())
            return fail("give either a mount point or --store, not both (`pycachefs stats "
                        "--store DIR` shows a store)");
        return fs::cli::run_stats_mount(stats_point, json, zero);
    }
    if (warm->parsed()) {
        warm_args.cli = warm_settings.collect();
        return fs::cli::run_warm(warm_args);
    }
    if (gc->parsed()) return fs::cli::run_gc(gc_settings.collect());
    if (clear->parsed()) return fs::cli::run_clear(clear_settings.collect());
    if (verify->parsed()) return fs::cli::run_verify(verify_settings.collect());
    return 0;
}
