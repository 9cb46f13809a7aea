#include "fs/cli/source_walk.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <set>
#include <sys/stat.h>
#include <utility>

namespace fs::cli {
namespace {

bool ends_with_py(const std::string& name) {
    return name.size() > 3 && name.compare(name.size() - 3, 3, ".py") == 0;
}

class Walker {
public:
    explicit Walker(SourceWalk& out) : m_out(out) {}

    void root(const std::string& path) {
        struct stat st;
        if (::stat(path.c_str(), &st) < 0) {
            m_out.errors.push_back(path + ": " + std::strerror(errno));
            return;
        }
        if (S_ISREG(st.st_mode)) {
            m_out.files.push_back(path);
            return;
        }
        if (!S_ISDIR(st.st_mode)) {
            m_out.errors.push_back(path + ": not a directory or file");
            return;
        }
        directory(path, st);
    }

private:
    void directory(const std::string& path, const struct stat& st) {
        if (!m_seen.insert({st.st_dev, st.st_ino}).second) return;
        DIR* d = ::opendir(path.c_str());
        if (!d) {
            m_out.errors.push_back(path + ": " + std::strerror(errno));
            return;
        }
        std::vector<std::pair<std::string, unsigned char>> names;
        while (dirent* e = ::readdir(d)) {
            if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
            names.emplace_back(e->d_name, e->d_type);
        }
        ::closedir(d);
        std::sort(names.begin(), names.end());
        const std::string prefix = path == "/" ? "/" : path + "/";
        for (const auto& [name, type] : names) {
            const std::string child = prefix + name;
            if (type == DT_REG) {
                if (ends_with_py(name)) m_out.files.push_back(child);
                continue;
            }
            if (type != DT_DIR && type != DT_LNK && type != DT_UNKNOWN) continue;
            struct stat cst;
            if (::stat(child.c_str(), &cst) < 0) continue; // dangling link
            if (S_ISDIR(cst.st_mode)) {
                if (name != "__pycache__") directory(child, cst);
            } else if (S_ISREG(cst.st_mode) && ends_with_py(name)) {
                m_out.files.push_back(child);
            }
        }
    }

    SourceWalk& m_out;
    std::set<std::pair<dev_t, ino_t>> m_seen;
};

} // namespace

SourceWalk find_python_sources(const std::vector<std::string>& roots) {
    SourceWalk out;
    Walker walker(out);
    for (const auto& r : roots) {
        std::error_code ec;
        auto abs = std::filesystem::absolute(r, ec);
        std::string path = ec ? r : abs.lexically_normal().string();
        if (path.size() > 1 && path.back() == '/') path.pop_back();
        walker.root(path);
    }
    return out;
}

} // namespace fs::cli
