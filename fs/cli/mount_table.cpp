#include "fs/cli/mount_table.hpp"

#include <fstream>
#include <sstream>

namespace fs::cli {
namespace {

// mountinfo escapes blanks and backslashes in paths as octal (\040).
std::string unescape(const std::string& field) {
    std::string out;
    for (std::size_t i = 0; i < field.size(); ++i) {
        if (field[i] == '\\' && i + 3 < field.size()) {
            out += char(std::stoi(field.substr(i + 1, 3), nullptr, 8));
            i += 3;
        } else {
            out += field[i];
        }
    }
    return out;
}

} // namespace

std::vector<std::string> mount_types_at(const std::string& path) {
    std::vector<std::string> types;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        // id parent major:minor root MOUNTPOINT options... - FSTYPE source super-options
        std::istringstream fields(line);
        std::string id, parent, dev, root, point, skip;
        if (!(fields >> id >> parent >> dev >> root >> point) || unescape(point) != path) continue;
        while (fields >> skip && skip != "-") {
        }
        std::string type;
        if (fields >> type) types.push_back(type);
    }
    return types;
}

} // namespace fs::cli
