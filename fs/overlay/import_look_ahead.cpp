// Looking ahead along the import graph: the names an import will touch, in the order it will
// touch them.
//
// A directory's look-ahead (look_ahead_jobs.cpp) guesses what surrounds the importer; an
// import's order is known better from its sources. When an importer has to ask for the pyc of
// module M itself (nothing looked it up in time), M's source is scanned for its import
// statements, and theirs, depth first and in source order: the order CPython runs them in. For
// each module found, what its import touches goes to the look-ahead as one growing stream:
// a package's `__init__` probes, its pyc and its listing; a module's source and pyc; an
// extension module's directory listing, the module itself and its bytes (read into the page
// cache: on a fresh mount each page dlopen maps would otherwise cost the importer a READ). The
// look-ahead then runs ahead of the importer, which spends its time executing the modules that
// the lookups only name. Measured with a recorded trace replayed ahead of the importer, this
// order brought a fresh mount's `import sympy` from 1.7x to 1.03x of native.
//
// The walk reads sources as the daemon, from the backing tree, and goes on only through sources
// the importer may read: the names it derives are looked up as the importer, but which modules
// a source imports is its content. Nothing is compiled here (a cold store is the business of
// compile-ahead, import_prefetch.cpp).
#include "cachecore/imports/import_scanner.hpp"
#include "cachecore/imports/main_program.hpp"
#include "cachecore/pyc/cache_name.hpp"
#include "cachecore/util/open_beneath.hpp"
#include "fs/overlay/background_queue.hpp"
#include "fs/overlay/look_ahead.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/source_access.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fs::overlay {
namespace {

// Modules one walk visits (sympy's import reaches about 700; a walk that goes on past what the
// importer needs only costs lookups the kernel keeps).
constexpr std::size_t k_max_walked = 4096;
// Modules an importer's walks remember as covered (forgotten when full: a walk then repeats
// lookups the kernel answers from its cache).
constexpr std::size_t k_max_covered = 65536;
// Larger sources are not scanned (generated tables, vendored bundles: their imports, if any,
// are the importer's to ask for).
constexpr off_t k_max_source_size = 8 << 20;
// A main program's code or script read for its imports, at most.
constexpr std::size_t k_max_main_size = 1 << 20;

} // namespace

struct OverlayFs::ImportsAhead {
    std::mutex mutex;
    std::unordered_set<std::string> covered; // module files (paths under the mount point)
    bool cover(const std::string& path) {
        std::lock_guard lock(mutex);
        if (covered.size() >= k_max_covered) covered.clear();
        return covered.insert(path).second;
    }
};

void OverlayFs::look_ahead_imports(const Asker& asker, Inode& dir, int index, int optimize,
                                   const std::string& module) {
    if (!m_look_ahead || !m_config.look_ahead_imports || !m_background || !asker.pidfd || !dir.dir)
        return;
    auto rel = path_in_tree(dir);
    if (!rel || !shares_view(asker.pid)) return;
    cachecore::imports::ModuleFile from{*rel, module + ".py"};
    std::shared_ptr<ImportsAhead> seen;
    bool first_walk = false;
    {
        std::lock_guard lock(m_importers_mutex);
        Importer& slot = importer_slot(asker.pid);
        if (!slot.imports_ahead) {
            slot.imports_ahead = std::make_shared<ImportsAhead>();
            first_walk = true;
        }
        seen = slot.imports_ahead;
    }
    // Walked already (as an import of a module before it): its stream is under way.
    if (!seen->cover(from.path())) return;
    // The importer's first walk goes on with its __main__'s imports: a program that imports
    // several packages would otherwise start each one's walk where it already is.
    std::optional<MainProgramAhead> main;
    if (first_walk) main = main_program_ahead(asker);
    start_walk(asker, std::move(seen), from, std::move(main), index, optimize);
}

void OverlayFs::start_walk(const Asker& asker, std::shared_ptr<ImportsAhead> seen,
                           const cachecore::imports::ModuleFile& from,
                           std::optional<MainProgramAhead> main, int index, int optimize) {
    cachecore::util::UniqueFd pidfd(::fcntl(asker.pidfd->get(), F_DUPFD_CLOEXEC, 0));
    LookAhead::Requester who{asker.pid, asker.uid, asker.gid, {}};
    const std::uint64_t stream = m_look_ahead->open_stream(who, std::move(pidfd));
    if (!stream) return;
    bool posted = m_background->post([this, stream, who, seen, from, main, index, optimize] {
        walk_ahead(stream, who.groups, who.uid, who.gid, *seen, from, main, index, optimize);
    });
    if (!posted) m_look_ahead->extend(stream, {}, true);
}

std::optional<OverlayFs::MainProgramAhead> OverlayFs::main_program_ahead(const Asker& asker) {
    using cachecore::imports::MainProgram;
    // Any process may read another's command line; the pidfd, still open, shows that the
    // thread id was not reused by the time it was read.
    const std::string proc = "/proc/" + std::to_string(asker.pid);
    std::string raw;
    {
        cachecore::util::UniqueFd fd(::open((proc + "/cmdline").c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) return std::nullopt;
        char buf[4096];
        for (ssize_t n;
             raw.size() < k_max_main_size && (n = ::read(fd.get(), buf, sizeof buf)) > 0;)
            raw.append(buf, std::size_t(n));
    }
    const MainProgram program =
        cachecore::imports::main_program_of(cachecore::imports::split_cmdline(raw));
    MainProgramAhead out;
    out.optimize = program.optimize;
    if (program.kind == MainProgram::Kind::Code) {
        out.code = program.text;
    } else if (program.kind == MainProgram::Kind::Script) {
        // Only a script under the mount: it is read (as the importer may) from the backing tree.
        std::string path = program.text;
        if (path.empty()) return std::nullopt;
        if (path.front() != '/') {
            char cwd[PATH_MAX];
            ssize_t n = ::readlink((proc + "/cwd").c_str(), cwd, sizeof cwd - 1);
            if (n <= 0) return std::nullopt;
            path = std::string(cwd, std::size_t(n)) + "/" + path;
        }
        const std::string& mnt = m_config.mountpoint;
        if (path.size() <= mnt.size() + 1 || path.compare(0, mnt.size(), mnt) != 0 ||
            path[mnt.size()] != '/')
            return std::nullopt;
        out.script_path = path.substr(mnt.size() + 1);
    } else {
        return std::nullopt;
    }
    pollfd p{asker.pidfd->get(), POLLIN, 0};
    if (::poll(&p, 1, 0) != 0) return std::nullopt; // exited: the id may name another process
    return out;
}

// The served interpreter a process runs: its binary, or one of its version (another build of
// the same version asks for the same pycs).
static int interpreter_of(pid_t pid, const std::vector<cachecore::python::Interpreter>& all) {
    char exe[PATH_MAX];
    ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), exe, sizeof exe - 1);
    if (n <= 0) return -1;
    const std::string binary(exe, std::size_t(n));
    for (std::size_t i = 0; i < all.size(); ++i) {
        char real[PATH_MAX];
        if (::realpath(all[i].path.c_str(), real) && binary == real) return int(i);
    }
    const std::string base = binary.substr(binary.rfind('/') + 1);
    for (std::size_t i = 0; i < all.size(); ++i) {
        const std::string name =
            "python" + std::to_string(all[i].major) + "." + std::to_string(all[i].minor);
        if (base == name) return int(i);
    }
    return -1;
}

void OverlayFs::walk_main_early(const Asker& asker, Inode& dir) {
    // The first listing of a process that has asked for no pyc yet is usually CPython's
    // FileFinder listing the first sys.path entry it searches, before its first import from
    // it: the walk of __main__'s imports can start here, one module earlier than at the first
    // pyc, which an importer of small modules (the stdlib mix) was seen to reach before the
    // look-ahead got going. Resolved from the listed directory (a script's, from its own).
    if (!m_look_ahead || !m_config.look_ahead_imports || !m_background || !asker.pidfd || !dir.dir)
        return;
    {
        std::lock_guard lock(m_importers_mutex);
        Importer& slot = importer_slot(asker.pid);
        if (slot.main_tried || slot.imports_ahead || slot.walker || slot.index >= 0) return;
        slot.main_tried = true;
    }
    auto rel = path_in_tree(dir);
    if (!rel || !shares_view(asker.pid)) return;
    const int index = interpreter_of(asker.pid, m_config.interpreters);
    if (index < 0) return;
    auto main = main_program_ahead(asker);
    if (!main) return;
    std::shared_ptr<ImportsAhead> seen;
    {
        std::lock_guard lock(m_importers_mutex);
        Importer& slot = importer_slot(asker.pid);
        if (slot.imports_ahead) return; // its first pyc came meanwhile, and walks
        slot.imports_ahead = std::make_shared<ImportsAhead>();
        seen = slot.imports_ahead;
    }
    const int optimize = main->optimize;
    // No module: only __main__'s imports, from the listed directory.
    start_walk(asker, std::move(seen), {*rel, ""}, std::move(main), index, optimize);
}

void OverlayFs::walk_ahead(std::uint64_t stream, const std::vector<gid_t>& groups, uid_t uid,
                           gid_t gid, ImportsAhead& seen,
                           const cachecore::imports::ModuleFile& from,
                           const std::optional<MainProgramAhead>& main, int index, int optimize) {
    using cachecore::imports::ImportRef;
    using cachecore::imports::ModuleFile;
    const auto& interpreter = m_config.interpreters[std::size_t(index)];
    const int root_fd = m_table.root().fd.get();
    auto pyc_name = [&](const std::string& module) {
        return cachecore::pyc::format_cache_name({module, interpreter.cache_tag, optimize});
    };
    auto in_group = [&](gid_t g) {
        return std::find(groups.begin(), groups.end(), g) != groups.end();
    };
    // What CPython's path finder touches to import `module`, in its order.
    auto names_of = [&](const ModuleFile& module) {
        std::vector<std::string> names;
        if (!module.is_source()) {
            // An extension module, usually in a directory the importer has not searched yet
            // (lib-dynload): it lists it, stats the module, and dlopen maps its pages.
            if (seen.cover(module.dir + "/")) names.push_back(module.dir + "/");
            names.push_back(module.path());
            names.push_back(LookAhead::to_read(module.path()));
        } else if (module.file == "__init__.py" && !module.dir.empty()) {
            for (const auto& suffix : interpreter.extension_suffixes)
                names.push_back(module.dir + "/__init__" + suffix);
            names.push_back(module.path());
            names.push_back(module.dir + "/__pycache__/" + pyc_name("__init__"));
            names.push_back(module.dir + "/"); // listed to import its first submodule
        } else {
            const std::string stem = module.file.substr(0, module.file.size() - 3);
            names.push_back(module.path());
            names.push_back((module.dir.empty() ? "" : module.dir + "/") + "__pycache__/" +
                            pyc_name(stem));
        }
        return names;
    };
    // The import statements of a module's source, when the importer may read it. Opened
    // beneath the root without following a final symlink, and checked on the open file: a
    // name swapped for a link meanwhile leads nowhere else. A source scanned before (by any
    // mount of the store) is not read again: its list is in the store.
    auto imports_of = [&](const ModuleFile& module) {
        std::vector<ImportRef> refs;
        if (!module.is_source()) return refs;
        auto fd = cachecore::util::open_beneath(root_fd, module.path(), O_RDONLY | O_NONBLOCK);
        struct stat st;
        if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
            !may_read(uid, gid, st, in_group) || st.st_size > k_max_source_size)
            return refs;
        auto found = m_cache.imports_of(fd.get(), st);
        if (!found) return refs;
        for (auto& ref : *found) {
            if (ref.deferred) continue; // a function's imports may never run
            if (ref.level == 0 && interpreter.startup_modules.count(ref.module)) continue;
            refs.push_back(std::move(ref));
        }
        return refs;
    };
    // Depth first, in source order, and each statement resolved only when the walk gets to it:
    // the first names reach the look-ahead before the rest of a long import list is resolved.
    struct Frame {
        ModuleFile module;
        std::vector<ImportRef> refs;
        std::size_t next_ref = 0;
        std::vector<ModuleFile> children; // of refs[next_ref - 1]
        std::size_t next_child = 0;
    };
    // __main__'s imports, absolute ones only (a relative import fails in __main__), below the
    // first module's walk: `import a, b, c` walks a, then b and c. Code given with -c imports
    // from where that first module was found; a script, from its own directory (sys.path[0]).
    auto main_refs = [&](const std::string& source) {
        std::vector<ImportRef> refs;
        for (auto& ref : cachecore::imports::scan_imports(source)) {
            if (ref.deferred || ref.level != 0 || interpreter.startup_modules.count(ref.module))
                continue;
            refs.push_back(std::move(ref));
        }
        return refs;
    };
    std::vector<Frame> stack;
    if (main && !main->code.empty()) {
        stack.push_back({ModuleFile{from.dir, "__main__.py"}, main_refs(main->code), 0, {}, 0});
    } else if (main && !main->script_path.empty()) {
        const auto slash = main->script_path.rfind('/');
        ModuleFile script = slash == std::string::npos
                                ? ModuleFile{"", main->script_path}
                                : ModuleFile{main->script_path.substr(0, slash),
                                             main->script_path.substr(slash + 1)};
        auto fd = cachecore::util::open_beneath(root_fd, main->script_path, O_RDONLY | O_NONBLOCK);
        struct stat st;
        std::string source;
        if (fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) &&
            may_read(uid, gid, st, in_group) && st.st_size <= off_t(k_max_main_size)) {
            source.resize(std::size_t(st.st_size));
            ssize_t n = ::pread(fd.get(), source.data(), source.size(), 0);
            source.resize(n > 0 ? std::size_t(n) : 0);
        }
        stack.push_back({std::move(script), main_refs(source), 0, {}, 0});
    }
    if (!from.file.empty()) // its names: the importer has used them
        stack.push_back({from, imports_of(from), 0, {}, 0});
    for (std::size_t walked = 0; !stack.empty() && walked < k_max_walked;) {
        Frame& top = stack.back();
        if (top.next_child < top.children.size()) {
            ModuleFile child = top.children[top.next_child++];
            if (!seen.cover(child.path())) continue;
            ++walked;
            if (!m_look_ahead->extend(stream, names_of(child), false))
                return; // the importer is gone, or its stream was dropped
            auto refs = imports_of(child);
            stack.push_back({std::move(child), std::move(refs), 0, {}, 0}); // `top` is invalid now
        } else if (top.next_ref < top.refs.size()) {
            top.children = m_resolver->resolve(top.module, top.refs[top.next_ref++],
                                               interpreter.extension_suffixes);
            top.next_child = 0;
        } else {
            stack.pop_back();
        }
    }
    m_look_ahead->extend(stream, {}, true);
}

} // namespace fs::overlay
