// pycachefs: command dispatch. `pycachefs SOURCE MOUNTPOINT -o ...` (as mount.fuse3 calls it)
// is the same as `pycachefs mount SOURCE MOUNTPOINT -o ...`.
#include "cachecore/util/size.hpp"
#include "fs/cli/commands.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace {

const std::set<std::string> k_commands = {"mount", "unmount", "umount", "stats", "help"};

void add_mount_options(CLI::App& cmd, fs::cli::MountOptions& o, std::vector<std::string>& o_opts,
                       std::string& max_size, std::string& pyc_mode, std::string& real_pycache) {
    cmd.add_option("source", o.source, "Source tree to mount")->required();
    cmd.add_option("mountpoint", o.mountpoint, "Empty directory to mount it on")->required();
    cmd.add_option("--store", o.store,
                   "Store directory (default: $PYCACHEFS_STORE, $XDG_CACHE_HOME/pycachefs or "
                   "~/.cache/pycachefs)");
    cmd.add_option("--python", o.pythons,
                   "Interpreter to serve (repeatable; default: every CPython 3.6+ found)");
    cmd.add_option("--max-size", max_size, "Store size limit, e.g. 500M, 2G (default 2G)");
    cmd.add_flag("--rw", o.rw, "Pass writes through to the source tree (default: read-only)");
    cmd.add_option("--pyc-mode", pyc_mode,
                   "timestamp (default), checked-hash or unchecked-hash pyc headers");
    cmd.add_option("--real-pycache", real_pycache,
                   "hide (default): virtual __pycache__; show: pass real ones through");
    cmd.add_flag("-f,--foreground", o.foreground, "Stay in the foreground");
    cmd.add_flag("-d,--debug", o.debug, "Debug log (implies nothing else; see --fuse-debug)");
    cmd.add_flag("--fuse-debug", o.fuse_debug, "Print every FUSE request (libfuse's -d)");
    cmd.add_option("--log-file", o.log_file,
                   "Log here (default: stderr in the foreground, syslog)");
    cmd.add_option("--log-level", o.log_level, "debug, info, warning (default) or error");
    cmd.add_option("--pid-file", o.pid_file, "Write the daemon's pid here");
    cmd.add_option("--workers", o.workers,
                   "Compile workers per interpreter (default: one per core)");
    cmd.add_option("--compile-timeout", o.compile_timeout_s,
                   "Seconds before a hung compile is killed (default 30)");
    cmd.add_option("-o", o_opts,
                   "Comma-separated options: any long option as key=value (store=DIR, python=PATH, "
                   "max_size=2G, rw, pyc_mode=..., real_pycache=...), plus FUSE's own "
                   "(allow_other, auto_unmount, ...)");
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    // The bare form: the first word is a path, not a command.
    if (!args.empty() && !args[0].empty() && args[0][0] != '-' && !k_commands.count(args[0]))
        args.insert(args.begin(), "mount");

    CLI::App app{
        "pycachefs: a FUSE view of a Python source tree with a __pycache__ nobody wrote "
        "to disk.\nCompiled lazily by real CPython, kept in a content-addressed LMDB store.",
        "pycachefs"};
    app.set_version_flag("-V,--version", std::string("pycachefs ") + PYCACHEFS_VERSION);
    app.require_subcommand(1);

    fs::cli::MountOptions mount_opts;
    std::vector<std::string> o_opts;
    std::string max_size, pyc_mode, real_pycache;
    auto* mount = app.add_subcommand("mount", "Mount SOURCE on MOUNTPOINT (returns once live)");
    add_mount_options(*mount, mount_opts, o_opts, max_size, pyc_mode, real_pycache);

    std::string unmount_point;
    bool lazy = false;
    double wait = 10;
    auto* unmount = app.add_subcommand("unmount", "Unmount a pycachefs mount")->alias("umount");
    unmount->add_option("mountpoint", unmount_point, "Mount point")->required();
    unmount->add_flag("-z,--lazy", lazy, "Detach now even if busy; finish when no longer used");
    unmount->add_option("--wait", wait, "Seconds to wait for the daemon to exit (default 10)");

    std::string stats_point;
    bool json = false;
    auto* stats = app.add_subcommand("stats", "Show a mount's live statistics");
    stats->add_option("mountpoint", stats_point, "Mount point")->required();
    stats->add_flag("--json", json, "Machine-readable output");

    std::vector<const char*> cargv{argv[0]};
    for (auto& a : args) cargv.push_back(a.c_str());
    try {
        app.parse(int(cargv.size()), const_cast<char**>(cargv.data()));
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    if (mount->parsed()) {
        // Precedence: command-line options > -o options (applied first, then overridden).
        fs::cli::MountOptions merged;
        for (const auto& o : o_opts) {
            if (auto err = fs::cli::apply_o_options(o, merged); !err.empty()) {
                std::fprintf(stderr, "pycachefs: %s\n", err.c_str());
                return 2;
            }
        }
        auto& m = mount_opts;
        if (m.store.empty()) m.store = merged.store;
        if (m.pythons.empty()) m.pythons = merged.pythons;
        m.rw = m.rw || merged.rw;
        m.foreground = m.foreground || merged.foreground;
        m.debug = m.debug || merged.debug;
        if (m.log_file.empty()) m.log_file = merged.log_file;
        if (m.log_level.empty()) m.log_level = merged.log_level;
        if (m.pid_file.empty()) m.pid_file = merged.pid_file;
        if (!m.workers) m.workers = merged.workers;
        if (m.compile_timeout_s == 30) m.compile_timeout_s = merged.compile_timeout_s;
        m.nonempty = merged.nonempty;
        m.fuse_options = merged.fuse_options;
        m.max_size = merged.max_size;
        m.pyc_mode = merged.pyc_mode;
        m.hide_real_pycache = merged.hide_real_pycache;
        if (!max_size.empty()) {
            auto size = cachecore::util::parse_size(max_size);
            if (!size) {
                std::fprintf(stderr, "pycachefs: invalid --max-size '%s' (use e.g. 500M or 2G)\n",
                             max_size.c_str());
                return 2;
            }
            m.max_size = *size;
        }
        if (!pyc_mode.empty()) {
            auto mode = cachecore::pyc::parse_pyc_mode(pyc_mode);
            if (!mode) {
                std::fprintf(stderr,
                             "pycachefs: invalid --pyc-mode '%s' (timestamp, checked-hash or "
                             "unchecked-hash)\n",
                             pyc_mode.c_str());
                return 2;
            }
            m.pyc_mode = *mode;
        }
        if (!real_pycache.empty()) {
            if (real_pycache != "hide" && real_pycache != "show") {
                std::fprintf(stderr, "pycachefs: invalid --real-pycache '%s' (hide or show)\n",
                             real_pycache.c_str());
                return 2;
            }
            m.hide_real_pycache = real_pycache == "hide";
        }
        return fs::cli::run_mount(std::move(m));
    }
    if (unmount->parsed()) return fs::cli::run_unmount(unmount_point, lazy, wait);
    if (stats->parsed()) return fs::cli::run_stats_mount(stats_point, json);
    return 0;
}
