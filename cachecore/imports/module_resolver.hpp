#pragma once

#include "cachecore/imports/import_scanner.hpp"

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace cachecore::imports {

// A module's source file below a tree root: `dir` relative to the root ("" is the root itself),
// `file` is "name.py" or "__init__.py".
struct ModuleFile {
    std::string dir;
    std::string file;
    std::string path() const { return dir.empty() ? file : dir + "/" + file; }
    bool operator==(const ModuleFile&) const = default;
};

// Finds, inside one tree, the files an import statement would load, the way CPython's path
// finder does for a sys.path entry: `import a.b.c` loads a/__init__.py, a/b/__init__.py, then
// a/b/c.py or a/b/c/__init__.py. The sys.path entry a module was imported from is not known
// here; it is taken to be the nearest ancestor directory that is not a regular package (has no
// __init__.py). Nothing outside the root is ever looked at (openat2 RESOLVE_BENEATH).
class ModuleResolver {
public:
    explicit ModuleResolver(int root_fd) : m_root_fd(root_fd) {}

    // `importer` is the module holding the statement. In import order, without duplicates.
    std::vector<ModuleFile> resolve(const ModuleFile& importer, const ImportRef& ref);

    bool is_regular_file(const std::string& path) const;

private:
    std::string sys_path_root(const std::string& dir);
    // The module `parts` names below `base`, appended in import order; false once one is missing.
    bool add_chain(const std::string& base, const std::vector<std::string>& parts,
                   std::vector<ModuleFile>& out, std::string* last_package_dir);

    int m_root_fd;
    std::mutex m_mutex;
    std::unordered_map<std::string, std::string> m_roots; // dir -> its sys.path root
};

} // namespace cachecore::imports
