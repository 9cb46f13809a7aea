#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace cachecore::imports {

// One import statement's target: `import a.b` is {0, "a.b", {}}; `from ..m import x, y` is
// {2, "m", {"x", "y"}} (a name may be a submodule or just an attribute).
struct ImportRef {
    int level = 0; // leading dots
    std::string module;
    std::vector<std::string> names;
    // Inside a function body, an `if TYPE_CHECKING:` block or an `except` handler: not run when
    // the module is imported (a handler's import is usually the fallback not taken).
    bool deferred = false;
    bool operator==(const ImportRef&) const = default;
};

// The import statements of a Python source, in source order, found by a line scanner rather
// than a parser: it is only used to compile modules ahead of their import, so a statement in a
// string or under `if TYPE_CHECKING:` costs at most one unneeded compile, and nothing depends
// on the list being complete. Handles `import a.b as c, d`, `from . import (x,\n y)`,
// backslash continuations, `;`-separated statements, comments and triple-quoted strings.
std::vector<ImportRef> scan_imports(std::string_view source, std::size_t limit = 1024);

} // namespace cachecore::imports
