#pragma once

#include "cachecore/imports/import_scanner.hpp"

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace cachecore::imports {

// A module's file below a tree root: `dir` relative to the root ("" is the root itself), `file`
// is "name.py", "__init__.py" or an extension module ("name" + one of the interpreter's
// extension suffixes).
struct ModuleFile {
    std::string dir;
    std::string file;
    std::string path() const { return dir.empty() ? file : dir + "/" + file; }
    bool is_source() const {
        return file.size() > 3 && file.compare(file.size() - 3, 3, ".py") == 0;
    }
    bool operator==(const ModuleFile&) const = default;
};

// Finds, inside one tree, the files an import statement would load, the way CPython's path
// finder does for a sys.path entry: `import a.b.c` loads a/__init__.py, a/b/__init__.py, then
// a/b/c.py or a/b/c/__init__.py. The sys.path entry a module was imported from is not known
// here; it is taken to be the nearest ancestor directory that is not a regular package (has no
// __init__.py). A top-level module missing there is looked for where CPython's default sys.path
// would find it next: a standard library's `lib-dynload` (its extension modules, on sys.path
// right after the library itself), and from a `site-packages` inside a standard library, that
// library and its `lib-dynload`. Nothing outside the root is ever looked at (openat2
// RESOLVE_BENEATH).
class ModuleResolver {
public:
    explicit ModuleResolver(int root_fd) : m_root_fd(root_fd) {}

    // `importer` is the module holding the statement. In import order, without duplicates.
    // With `extension_suffixes` (the interpreter's, in its order), a module may also be an
    // extension module, looked for before the source as CPython's FileFinder does; without,
    // only sources are found.
    std::vector<ModuleFile> resolve(const ModuleFile& importer, const ImportRef& ref,
                                    const std::vector<std::string>& extension_suffixes = {});

    bool is_regular_file(const std::string& path) const;

private:
    std::string sys_path_root(const std::string& dir);
    // The sys.path entries a top-level import from `root` searches, in order.
    std::vector<std::string> search_path(const std::string& root);
    bool is_directory(const std::string& path) const;
    // The module `parts` names below `base`, appended in import order; false once one is missing.
    bool add_chain(const std::string& base, const std::vector<std::string>& parts,
                   const std::vector<std::string>& extension_suffixes, std::vector<ModuleFile>& out,
                   std::string* last_package_dir);

    int m_root_fd;
    std::mutex m_mutex;
    std::unordered_map<std::string, std::string> m_roots; // dir -> its sys.path root
    std::unordered_map<std::string, std::vector<std::string>> m_search_paths; // root -> entries
};

} // namespace cachecore::imports
