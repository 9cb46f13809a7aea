#include "cachecore/imports/module_resolver.hpp"

#include "cachecore/util/open_beneath.hpp"

#include <algorithm>
#include <fcntl.h>
#include <sys/stat.h>

namespace cachecore::imports {
namespace {

std::string join(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + "/" + name;
}

std::string parent_of(const std::string& dir) {
    auto slash = dir.rfind('/');
    return slash == std::string::npos ? std::string() : dir.substr(0, slash);
}

std::vector<std::string> split_dotted(const std::string& name) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (start <= name.size() && !name.empty()) {
        std::size_t dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        parts.push_back(name.substr(start, dot - start));
        start = dot + 1;
    }
    return parts;
}

} // namespace

bool ModuleResolver::is_regular_file(const std::string& path) const {
    if (path.empty()) return false;
    auto fd = util::open_beneath(m_root_fd, path, O_PATH);
    struct stat st;
    return fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ModuleResolver::sys_path_root(const std::string& dir) {
    {
        std::lock_guard lock(m_mutex);
        auto it = m_roots.find(dir);
        if (it != m_roots.end()) return it->second;
    }
    std::string root = dir;
    while (!root.empty() && is_regular_file(join(root, "__init__.py"))) root = parent_of(root);
    std::lock_guard lock(m_mutex);
    if (m_roots.size() > 4096) m_roots.clear();
    m_roots.emplace(dir, root);
    return root;
}

bool ModuleResolver::is_directory(const std::string& path) const {
    auto fd = util::open_beneath(m_root_fd, path, O_PATH | O_DIRECTORY);
    return bool(fd);
}

std::vector<std::string> ModuleResolver::search_path(const std::string& root) {
    {
        std::lock_guard lock(m_mutex);
        auto it = m_search_paths.find(root);
        if (it != m_search_paths.end()) return it->second;
    }
    // CPython's default sys.path on POSIX: the standard library, its lib-dynload, then
    // site-packages inside it.
    const std::string dynload = "lib-dynload";
    std::vector<std::string> path;
    const auto slash = root.rfind('/');
    const std::string base = slash == std::string::npos ? root : root.substr(slash + 1);
    const std::string parent = parent_of(root);
    if (!root.empty() && (base == "site-packages" || base == "dist-packages") &&
        is_directory(join(parent, dynload))) {
        path = {parent, join(parent, dynload), root};
    } else {
        path.push_back(root);
        if (is_directory(join(root, dynload))) path.push_back(join(root, dynload));
    }
    std::lock_guard lock(m_mutex);
    if (m_search_paths.size() > 4096) m_search_paths.clear();
    m_search_paths.emplace(root, path);
    return path;
}

bool ModuleResolver::add_chain(const std::string& base, const std::vector<std::string>& parts,
                               const std::vector<std::string>& extension_suffixes,
                               std::vector<ModuleFile>& out, std::string* last_package_dir) {
    std::string dir = base;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        const std::string& part = parts[i];
        if (part.empty() || part == "." || part == "..") return false;
        std::string sub = join(dir, part);
        if (is_regular_file(join(sub, "__init__.py"))) {
            out.push_back({sub, "__init__.py"});
            dir = sub;
            continue;
        }
        if (i + 1 != parts.size()) return false;
        // CPython's FileFinder order: extension modules, then the source.
        for (const auto& suffix : extension_suffixes) {
            if (is_regular_file(join(dir, part + suffix))) {
                out.push_back({dir, part + suffix});
                return true;
            }
        }
        if (is_regular_file(join(dir, part + ".py"))) {
            out.push_back({dir, part + ".py"});
            return true;
        }
        return false;
    }
    if (last_package_dir) *last_package_dir = dir;
    return true;
}

std::vector<ModuleFile>
ModuleResolver::resolve(const ModuleFile& importer, const ImportRef& ref,
                        const std::vector<std::string>& extension_suffixes) {
    std::vector<ModuleFile> out;
    std::vector<std::string> bases;
    if (ref.level == 0) {
        bases = search_path(sys_path_root(importer.dir));
    } else {
        // The importer's package: its own directory (for modules and __init__ alike), then one
        // level up per extra dot, never above the sys.path root.
        const std::string top = sys_path_root(importer.dir);
        std::string base = importer.dir;
        for (int i = 1; i < ref.level; ++i) {
            if (base == top) return out;
            base = parent_of(base);
        }
        if (base == top && !is_regular_file(join(base, "__init__.py"))) return out;
        bases.push_back(base);
    }
    std::string package_dir = bases.front();
    bool names_may_be_modules = true;
    if (!ref.module.empty()) {
        // The first sys.path entry holding the top-level name is the one CPython imports from.
        const auto parts = split_dotted(ref.module);
        bool found = false;
        for (const auto& base : bases) {
            package_dir = base;
            found = add_chain(base, parts, extension_suffixes, out, &package_dir);
            if (found || !out.empty()) break;
        }
        if (!found) return out;
        names_may_be_modules = out.empty() || out.back().file == "__init__.py";
    }
    // `from package import name`: a name may be a submodule (imported after the package).
    if (names_may_be_modules) {
        for (const auto& name : ref.names)
            add_chain(package_dir, {name}, extension_suffixes, out, nullptr);
    }
    std::vector<ModuleFile> unique;
    for (auto& m : out) {
        if (std::find(unique.begin(), unique.end(), m) == unique.end()) unique.push_back(m);
    }
    return unique;
}

} // namespace cachecore::imports
