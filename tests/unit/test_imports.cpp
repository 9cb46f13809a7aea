// The import scanner (checked against CPython's own ast on real standard-library files) and the
// resolver that maps import statements to files of one tree.

#include "cachecore/imports/import_list_codec.hpp"
#include "cachecore/imports/import_scanner.hpp"
#include "cachecore/imports/module_resolver.hpp"
#include "cachecore/util/unique_fd.hpp"
#include "support_python_finder.hpp"

#include <fcntl.h>
#include <filesystem>
#include <gtest/gtest.h>
#include <sstream>

using namespace cachecore::imports;
using pycachefs::test::run_process;
using pycachefs::test::TempDir;
using pycachefs::test::write_file;

namespace {

std::string show(const ImportRef& r) {
    std::string s = std::to_string(r.level) + ":" + r.module + ":";
    for (const auto& n : r.names) s += n + ",";
    return s + (r.deferred ? ":deferred" : "");
}

std::vector<std::string> shown(const std::vector<ImportRef>& refs) {
    std::vector<std::string> out;
    for (const auto& r : refs) out.push_back(show(r));
    return out;
}

TEST(ImportScanner, EveryFormInSourceOrder) {
    const std::string source = R"PY("""Docstring with
import not_this
"""
import os, sys as system
import a.b.c
from . import x, y
from ..pkg.mod import (alpha,
    beta as b,   # a comment ) with a parenthesis
)
from .m import *
from __future__ import annotations
x = "import nope"; import z
if TYPE_CHECKING:
    import typing_only
def f():
    import lazy
    return 1
class K:
    import in_class
try:
    import maybe
except ImportError:
    import fallback
import cont, \
    cont2
s = '''
from not_me import q
'''
async def g():
    from . import lazier
# import commented
from .after import last
)PY";
    std::vector<std::string> want = {
        "0:os:",
        "0:sys:",
        "0:a.b.c:",
        "1::x,y,",
        "2:pkg.mod:alpha,beta,",
        "1:m:",
        "0:__future__:annotations,",
        "0:z:",
        "0:typing_only::deferred",
        "0:lazy::deferred",
        "0:in_class:",
        "0:maybe:",
        "0:fallback::deferred",
        "0:cont:",
        "0:cont2:",
        "1::lazier,:deferred",
        "1:after:last,",
    };
    EXPECT_EQ(shown(scan_imports(source)), want);
}

TEST(ImportScanner, BrokenInputNeverThrowsAndIsBounded) {
    EXPECT_TRUE(scan_imports("").empty());
    EXPECT_TRUE(scan_imports("from import\nimport\nfrom . import\n'''unterminated").empty());
    std::string many;
    for (int i = 0; i < 5000; ++i) many += "import m" + std::to_string(i) + "\n";
    EXPECT_EQ(scan_imports(many, 100).size(), 100U);
    // An unclosed bracket must not swallow the rest of a file forever.
    std::string unclosed = "x = (\n" + std::string(70000, 'y') + "\nimport after\n";
    auto refs = scan_imports(unclosed);
    EXPECT_LE(refs.size(), 1U);
}

// CPython's ast is the reference: every import statement it sees in real standard-library files
// must be found, with the same level, module and names, and "deferred" exactly when it sits in a
// function body or an `if TYPE_CHECKING:` block.
TEST(ImportScanner, AgreesWithCPythonsAstOnTheStandardLibrary) {
    const char* script = R"PY(
import ast, glob, sys
files = (sorted(glob.glob('/usr/lib/python3.11/*.py'))[::3] + sorted(glob.glob('/usr/lib/python3.11/email/*.py'))
         + sorted(glob.glob('/usr/lib/python3.11/asyncio/*.py')) + sorted(glob.glob('/usr/lib/python3.11/importlib/*.py')))
class V(ast.NodeVisitor):
    def __init__(self): self.out = []; self.deferred = 0
    def visit_FunctionDef(self, n): self.deferred += 1; self.generic_visit(n); self.deferred -= 1
    visit_AsyncFunctionDef = visit_FunctionDef
    def visit_If(self, n):
        tc = 'TYPE_CHECKING' in ast.unparse(n.test)
        self.deferred += tc
        for c in n.body: self.visit(c)
        self.deferred -= tc
        for c in n.orelse: self.visit(c)
    def visit_Import(self, n):
        for a in n.names: self.out.append('0:%s::%s' % (a.name, 'D' if self.deferred else ''))
    def visit_ExceptHandler(self, n):
        self.deferred += 1; self.generic_visit(n); self.deferred -= 1
    def visit_ImportFrom(self, n):
        names = ''.join(a.name + ',' for a in n.names if a.name != '*')
        if not n.module and not names: return  # `from . import *` loads nothing by itself
        self.out.append('%d:%s:%s:%s' % (n.level, n.module or '', names, 'D' if self.deferred else ''))
for f in files:
    v = V(); v.visit(ast.parse(open(f, 'rb').read()))
    print('FILE ' + f)
    for line in v.out: print(line)
)PY";
    auto r = run_process({"/usr/bin/python3.11", "-I", "-c", script});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::istringstream lines(r.out);
    std::string line, file;
    std::vector<std::string> want;
    std::size_t files = 0, statements = 0;
    auto check = [&] {
        if (file.empty()) return;
        std::string text = pycachefs::test::read_file(file);
        std::vector<std::string> got;
        for (const auto& ref : scan_imports(text, 100000)) {
            std::string s = std::to_string(ref.level) + ":" + ref.module + ":";
            for (const auto& n : ref.names) s += n + ",";
            got.push_back(s + ":" + (ref.deferred ? "D" : ""));
        }
        EXPECT_EQ(got, want) << file;
        ++files;
        statements += want.size();
    };
    while (std::getline(lines, line)) {
        if (line.rfind("FILE ", 0) == 0) {
            check();
            file = line.substr(5);
            want.clear();
        } else {
            want.push_back(line);
        }
    }
    check();
    EXPECT_GT(files, 50U);
    EXPECT_GT(statements, 500U);
}

class ModuleResolverTest : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* f :
             {"top.py", "pkg/__init__.py", "pkg/mod.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py",
              "pkg/sub/deep/__init__.py", "flat/x.py", "outside/secret.py"}) {
            std::filesystem::create_directories((dir.path() / f).parent_path());
            write_file(dir.path() / f, "X = 1\n");
        }
        std::filesystem::create_directories(dir.path() / "tree");
        // The tree is `tree/`; `outside/` is beside it and reachable only through a symlink.
        std::filesystem::rename(dir.path() / "top.py", dir.path() / "tree/top.py");
        std::filesystem::rename(dir.path() / "pkg", dir.path() / "tree/pkg");
        std::filesystem::rename(dir.path() / "flat", dir.path() / "tree/flat");
        std::filesystem::create_directory_symlink(dir.path() / "outside",
                                                  dir.path() / "tree/pkg/escape");
        root = cachecore::util::UniqueFd(
            ::open((dir.path() / "tree").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        ASSERT_TRUE(root);
    }
    std::vector<std::string> resolve(ModuleFile importer, ImportRef ref) {
        ModuleResolver resolver(root.get());
        std::vector<std::string> out;
        for (const auto& m : resolver.resolve(importer, ref)) out.push_back(m.path());
        return out;
    }
    TempDir dir;
    cachecore::util::UniqueFd root;
};

TEST_F(ModuleResolverTest, AbsoluteImportsLoadEveryPackageOnTheWay) {
    using V = std::vector<std::string>;
    EXPECT_EQ(resolve({"", "top.py"}, {0, "pkg.sub.leaf", {}}),
              (V{"pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py"}));
    // From inside a package the sys.path root is above the top-level package.
    EXPECT_EQ(resolve({"pkg/sub", "leaf.py"}, {0, "pkg.mod", {}}),
              (V{"pkg/__init__.py", "pkg/mod.py"}));
    EXPECT_EQ(resolve({"", "top.py"}, {0, "pkg.sub", {"leaf", "deep", "not_a_module"}}),
              (V{"pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py",
                 "pkg/sub/deep/__init__.py"}));
    // Names imported from a module are attributes, not submodules.
    EXPECT_EQ(resolve({"", "top.py"}, {0, "pkg.mod", {"leaf"}}),
              (V{"pkg/__init__.py", "pkg/mod.py"}));
    EXPECT_TRUE(resolve({"", "top.py"}, {0, "os", {}}).empty());          // not in this tree
    EXPECT_EQ(resolve({"flat", "x.py"}, {0, "x", {}}), (V{"flat/x.py"})); // flat is a sys.path dir
}

TEST_F(ModuleResolverTest, RelativeImportsStayInsideTheirTopLevelPackage) {
    using V = std::vector<std::string>;
    EXPECT_EQ(resolve({"pkg", "__init__.py"}, {1, "", {"mod", "sub"}}),
              (V{"pkg/mod.py", "pkg/sub/__init__.py"}));
    EXPECT_EQ(resolve({"pkg/sub", "leaf.py"}, {2, "mod", {}}), (V{"pkg/mod.py"}));
    EXPECT_EQ(resolve({"pkg/sub", "__init__.py"}, {1, "deep", {}}),
              (V{"pkg/sub/deep/__init__.py"}));
    EXPECT_TRUE(resolve({"pkg", "mod.py"}, {3, "top", {}}).empty()); // beyond the top level
    EXPECT_TRUE(resolve({"", "top.py"}, {1, "", {"pkg"}}).empty());  // top.py is in no package
}

// CPython's default sys.path on POSIX is the standard library, its lib-dynload, then
// site-packages inside it; a package's extension modules are found before its sources.
TEST(ModuleResolver, FindsExtensionModulesWhereCPythonDoes) {
    using V = std::vector<std::string>;
    TempDir dir;
    for (const char* f :
         {"lib/os.py", "lib/json/__init__.py", "lib/json/decoder.py",
          "lib/lib-dynload/_json.cpython-312-x86_64-linux-gnu.so", "lib/lib-dynload/math.abi3.so",
          "lib/site-packages/app.py", "lib/site-packages/os.py", "lib/site-packages/np/__init__.py",
          "lib/site-packages/np/_core.cpython-312-x86_64-linux-gnu.so",
          "lib/site-packages/np/_core.py", "plain/x.py"}) {
        std::filesystem::create_directories((dir.path() / f).parent_path());
        write_file(dir.path() / f, "X = 1\n");
    }
    cachecore::util::UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root);
    const std::vector<std::string> suffixes = {".cpython-312-x86_64-linux-gnu.so", ".abi3.so",
                                               ".so"};
    ModuleResolver resolver(root.get());
    auto resolve = [&](ModuleFile importer, ImportRef ref, bool extensions = true) {
        V out;
        for (const auto& m :
             resolver.resolve(importer, ref, extensions ? suffixes : std::vector<std::string>{}))
            out.push_back(m.path() + (m.is_source() ? "" : " (extension)"));
        return out;
    };
    EXPECT_EQ(resolve({"lib/json", "decoder.py"}, {0, "_json", {}}),
              (V{"lib/lib-dynload/_json.cpython-312-x86_64-linux-gnu.so (extension)"}));
    EXPECT_EQ(resolve({"lib", "os.py"}, {0, "math", {}}),
              (V{"lib/lib-dynload/math.abi3.so (extension)"}));
    // Without the interpreter's suffixes, only sources.
    EXPECT_TRUE(resolve({"lib", "os.py"}, {0, "math", {}}, false).empty());
    // The library itself comes first: its os, not site-packages' (which it shadows).
    EXPECT_EQ(resolve({"lib/site-packages", "app.py"}, {0, "os", {}}), (V{"lib/os.py"}));
    EXPECT_EQ(resolve({"lib/site-packages", "app.py"}, {0, "json", {"decoder"}}),
              (V{"lib/json/__init__.py", "lib/json/decoder.py"}));
    EXPECT_EQ(resolve({"lib/site-packages", "app.py"}, {0, "_json", {}}),
              (V{"lib/lib-dynload/_json.cpython-312-x86_64-linux-gnu.so (extension)"}));
    // A package's extension module before its source of the same name.
    EXPECT_EQ(resolve({"lib/site-packages", "app.py"}, {0, "np._core", {}}),
              (V{"lib/site-packages/np/__init__.py",
                 "lib/site-packages/np/_core.cpython-312-x86_64-linux-gnu.so (extension)"}));
    EXPECT_EQ(resolve({"lib/site-packages/np", "__init__.py"}, {1, "", {"_core"}}),
              (V{"lib/site-packages/np/_core.cpython-312-x86_64-linux-gnu.so (extension)"}));
    EXPECT_EQ(resolve({"lib/site-packages", "app.py"}, {0, "np._core", {}}, false),
              (V{"lib/site-packages/np/__init__.py", "lib/site-packages/np/_core.py"}));
    // A directory that is no standard library searches only itself.
    EXPECT_TRUE(resolve({"plain", "x.py"}, {0, "_json", {}}).empty());
    EXPECT_TRUE(resolve({"plain", "x.py"}, {0, "os", {}}).empty());
}

TEST_F(ModuleResolverTest, NeverLeavesTheTree) {
    EXPECT_TRUE(resolve({"pkg", "mod.py"}, {1, "escape.secret", {}}).empty());
    EXPECT_TRUE(resolve({"pkg", "mod.py"}, {1, "escape", {"secret"}}).empty());
    EXPECT_TRUE(resolve({"", "top.py"}, {0, "..outside.secret", {}}).empty());
    ModuleResolver resolver(root.get());
    EXPECT_FALSE(resolver.is_regular_file("../outside/secret.py"));
    EXPECT_FALSE(resolver.is_regular_file("pkg/escape/secret.py"));
    EXPECT_TRUE(resolver.is_regular_file("pkg/mod.py"));
}

} // namespace

// What goes into the store comes back equal; anything else (another scanner version, a cut or
// padded value, a bad flag) is refused as a whole.
TEST(ImportListCodec, RoundTripsAndRefusesDamage) {
    const std::vector<ImportRef> refs = {
        {0, "os.path", {}, false},
        {2, "", {"a", "b"}, false},
        {1, "pkg.sub", {"x"}, true},
        {0, std::string(300, 'm'), {std::string(70000, 'n'), "ok"}, false},
    };
    const std::string bytes = encode_import_list(refs);
    auto back = decode_import_list(bytes);
    ASSERT_TRUE(back.has_value());
    ASSERT_EQ(back->size(), refs.size());
    EXPECT_EQ((*back)[0], refs[0]);
    EXPECT_EQ((*back)[1], refs[1]);
    EXPECT_EQ((*back)[2], refs[2]);
    // A name too long for the format is left out, the rest kept.
    EXPECT_EQ((*back)[3].names, std::vector<std::string>{"ok"});
    EXPECT_EQ(decode_import_list(encode_import_list({}))->size(), 0u);

    EXPECT_FALSE(decode_import_list(""));
    std::string other = bytes;
    other[0] = char(k_scanner_version + 1);
    EXPECT_FALSE(decode_import_list(other)) << "another scanner's list";
    for (std::size_t cut = 1; cut < bytes.size(); cut += 97)
        EXPECT_FALSE(decode_import_list(bytes.substr(0, cut))) << "cut at " << cut;
    EXPECT_FALSE(decode_import_list(bytes + "x")) << "trailing bytes";
    std::string flag = encode_import_list({{0, "m", {}, false}});
    flag[4] = 7; // version, count (2), level, flags
    EXPECT_FALSE(decode_import_list(flag));
}
