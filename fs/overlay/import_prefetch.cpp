// Compiling ahead along the import graph: when a module has to be compiled, the modules its
// source imports (and theirs, depth first: the order CPython will import them in) are queued as
// compiles ahead, so the importer finds them ready or in flight instead of compiling each in
// turn. The compiles run on otherwise idle workers in the idle scheduling class.
#include "cachecore/imports/import_scanner.hpp"
#include "cachecore/util/open_beneath.hpp"
#include "cachecore/util/unique_fd.hpp"
#include "fs/overlay/background_queue.hpp"
#include "fs/overlay/overlay_fs.hpp"
#include "fs/overlay/proc_path.hpp"

#include <fcntl.h>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace fs::overlay {
namespace {

// A bound on the work one cold compile starts, and on the memory of what was walked already
// (forgotten when full: walking again only re-reads sources, the store skips known ones).
constexpr std::size_t k_max_per_walk = 4096;
constexpr std::size_t k_max_remembered = 65536;

} // namespace

void OverlayFs::prefetch_imports(Inode& pycache, const PycState& state) {
    if (!m_background || !m_resolver || !m_cache.prefetching()) return;
    Inode& dir = *pycache.parent;
    char real[PATH_MAX];
    ssize_t n = ::readlink(ProcPath(dir.fd.get()).c_str(), real, sizeof real - 1);
    if (n <= 0) return;
    std::string path(real, std::size_t(n));
    if (path.compare(0, m_source_real.size(), m_source_real) != 0) return;
    std::string rel = path.substr(m_source_real.size());
    while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
    const auto* interpreter = state.interpreter;
    const int optimize = state.optimize;
    m_background->post([this, rel, file = state.module + ".py", interpreter, optimize] {
        walk_imports(rel, file, *interpreter, optimize);
    });
}

void OverlayFs::walk_imports(const std::string& dir, const std::string& file,
                             const cachecore::python::Interpreter& interpreter, int optimize) {
    using cachecore::imports::ModuleFile;
    const int root_fd = m_table.root().fd.get();
    const std::string suffix =
        std::string(1, '\0') + interpreter.cache_tag + std::string(1, '\0') + char('0' + optimize);
    std::vector<ModuleFile> stack{{dir, file}};
    bool first = true; // the module that was just compiled in the foreground
    for (std::size_t walked = 0; !stack.empty() && walked < k_max_per_walk; ++walked) {
        ModuleFile module = std::move(stack.back());
        stack.pop_back();
        {
            std::lock_guard lock(m_imports_mutex);
            if (m_imports_seen.size() >= k_max_remembered) m_imports_seen.clear();
            if (!m_imports_seen.insert(module.path() + suffix).second) continue;
        }
        const bool just_compiled = std::exchange(first, false);
        auto dirfd = cachecore::util::open_beneath(root_fd, module.dir, O_PATH | O_DIRECTORY);
        if (!dirfd) continue;
        // The prefetch reads the source when it must compile it; otherwise read it here.
        std::shared_ptr<const std::string> source;
        if (!just_compiled)
            source = m_cache.prefetch(dirfd.get(), module.file, interpreter, optimize);
        std::optional<std::vector<cachecore::imports::ImportRef>> refs;
        if (source) {
            refs = m_cache.imports_in(*source);
        } else {
            // Stored already: its import list likely is too (no read).
            cachecore::util::UniqueFd fd(
                ::openat(dirfd.get(), module.file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
            struct stat st;
            if (fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode))
                refs = m_cache.imports_of(fd.get(), st);
        }
        if (!refs) continue;
        std::vector<ModuleFile> children;
        for (const auto& ref : *refs) {
            if (ref.deferred) continue; // a function's imports may never run
            if (ref.level == 0 && interpreter.startup_modules.count(ref.module)) continue;
            for (auto& child : m_resolver->resolve(module, ref))
                children.push_back(std::move(child));
        }
        // Depth first, in source order: the first import is walked next.
        for (auto it = children.rbegin(); it != children.rend(); ++it) stack.push_back(*it);
    }
}

} // namespace fs::overlay
