"""Every CPython on the machine imports from a read-only pycachefs mount and gets its pycs served.

Run by CTest, or by hand: python3 -I -B tests/integration/test_import.py -v
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Packages, a namespace package (no __init__), relative imports, an empty __init__, a dir
# without Python files.
IMPORT_TREE = {
    "top.py": "import pkg\nTOP = 'top'\n",
    "pkg": {
        "__init__.py": "from . import mod\nfrom .sub import helper\nPKG = 'pkg'\n",
        "mod.py": '"""mod doc"""\n\n\ndef f():\n    """f doc"""\n    return 42\n',
        "sub": {
            "__init__.py": "",
            "helper.py": "from ..mod import f\nfrom . import leaf\nHELPER = f() + leaf.LEAF\n",
            "leaf.py": "LEAF = 1\n",
        },
    },
    "nspkg": {"nsmod.py": "NS = 'ns'\n"},
    "data": {"readme.txt": "not python\n"},
}
# module name -> source path relative to the tree, without ".py"
IMPORT_MODULES = {
    "top": "top",
    "pkg": "pkg/__init__",
    "pkg.mod": "pkg/mod",
    "pkg.sub": "pkg/sub/__init__",
    "pkg.sub.helper": "pkg/sub/helper",
    "pkg.sub.leaf": "pkg/sub/leaf",
    "nspkg.nsmod": "nspkg/nsmod",
}
IMPORT_CODE = r"""
import importlib.util, json
import top, pkg, nspkg.nsmod
import pkg.sub.helper as helper
mods = [top, pkg, pkg.mod, pkg.sub, helper, pkg.sub.leaf, nspkg.nsmod]
magic = {}
for m in mods:
    with open(m.__cached__, "rb") as f:
        magic[m.__name__] = f.read(4) == importlib.util.MAGIC_NUMBER
print(json.dumps({
    "values": [top.TOP, pkg.PKG, pkg.mod.f(), helper.HELPER, nspkg.nsmod.NS],
    "files": {m.__name__: m.__file__ for m in mods},
    "cached": {m.__name__: m.__cached__ for m in mods},
    "ns_file": getattr(nspkg, "__file__", None),
    "ns_path": list(nspkg.__path__),
    "magic_ok": magic,
}))
"""

OPT_SOURCE = ('"""module doc"""\n\n\ndef f():\n    """f doc"""\n'
              '    assert False, "assert-active"\n    return "assert-stripped"\n\n\n'
              'DEBUG = __debug__\n')
OPT_CODE = r"""
import json, optmod
try:
    r = optmod.f()
except AssertionError:
    r = "assert-active"
print(json.dumps([r, optmod.__doc__, optmod.f.__doc__, optmod.DEBUG, optmod.__cached__]))
"""

HEADER_CODE = r"""
import importlib.util, json, os, struct, sys
import m
with open(m.__cached__, "rb") as f:
    data = f.read()
with open(m.__file__, "rb") as f:
    src = f.read()
st = os.stat(m.__file__)
out = {"V": m.V, "magic": data[:4] == importlib.util.MAGIC_NUMBER, "flags": None}
fields = data[4:12]
if sys.version_info >= (3, 7):
    out["flags"] = struct.unpack("<I", data[4:8])[0]
    fields = data[8:16]
if out["flags"] and out["flags"] & 1:
    out["hash_ok"] = fields == importlib.util.source_hash(src)
else:
    mtime, size = struct.unpack("<II", fields)
    out["mtime_ok"] = mtime == (int(st.st_mtime) & 0xFFFFFFFF)
    out["size_ok"] = size == (st.st_size & 0xFFFFFFFF)
print(json.dumps(out))
"""

SYNTAX_TREE = {
    "bad.py": "X = 1\n\n\ndef broken(:\n    pass\n",
    "badindent.py": "def f():\nreturn 1\n",
}
SYNTAX_CODE = r"""
import json, sys, traceback
try:
    __import__(sys.argv[1])
except SyntaxError as e:
    print(json.dumps({
        "type": type(e).__name__, "msg": e.msg, "lineno": e.lineno, "offset": e.offset,
        "end_lineno": getattr(e, "end_lineno", None), "end_offset": getattr(e, "end_offset", None),
        "text": e.text, "filename": e.filename,
        "formatted": traceback.format_exception_only(type(e), e)}))
else:
    print(json.dumps(None))
"""


def sends_tcgets(py):
    # 3.8-3.13 read pycs through io.open_code, whose buffered wrapper asks isatty() after the
    # open; 3.6/3.7 use a bare FileIO and 3.14 skips the probe for regular files.
    version = py.tag.split("-")[1]
    return 38 <= int(version) <= 313


def pyc_path(root, rel, py, opt=0):
    directory, base = os.path.split(rel)
    return os.path.join(root, directory, "__pycache__", py.pyc_name(base, opt))


class ImportTest(harness.MountTestCase):

    def run_import(self, m, py):
        proc = harness.run_python(py, IMPORT_CODE, sys_path=[m.mountpoint], args=["-v"])
        self.assertPythonOk(proc, "%s import" % py.tag)
        out = json.loads(proc.stdout)
        self.assertEqual(out["values"], ["top", "pkg", 42, 43, "ns"])
        for name, rel in IMPORT_MODULES.items():
            self.assertEqual(out["files"][name], m.mnt(rel + ".py"))
            self.assertEqual(out["cached"][name], pyc_path(m.mountpoint, rel, py))
            self.assertTrue(out["magic_ok"][name], "%s: wrong magic in served pyc" % name)
        self.assertIsNone(out["ns_file"])
        self.assertEqual(out["ns_path"], [m.mnt("nspkg")])
        pycs, sources = harness.code_object_sources(proc.stderr)
        compiled_here = [s for s in sources if s.startswith(m.mountpoint + "/")]
        self.assertEqual(compiled_here, [], "CPython compiled these itself (no usable pyc)")
        expected = sorted(pyc_path(m.mountpoint, rel, py) for rel in IMPORT_MODULES.values())
        self.assertEqual(sorted(p for p in pycs if p.startswith(m.mountpoint + "/")), expected)

    def test_first_import_compiles_once_second_process_none(self):
        m = self.mount(IMPORT_TREE)
        n = len(IMPORT_MODULES)
        for py in self.pythons:
            with self.subTest(python=py.tag):
                before = m.stats()
                self.run_import(m, py)
                mid = m.stats()
                first = harness.stats_delta(before, mid, py.tag)
                self.assertEqual(first["compiles"], n, "first import: %r" % first)
                self.assertEqual(first["compile_errors"], 0)
                self.assertGreaterEqual(first["pycs_served"], n, "first import: %r" % first)
                self.run_import(m, py)
                second = harness.stats_delta(mid, m.stats(), py.tag)
                self.assertEqual(second["compiles"], 0, "second process: %r" % second)
        st = m.stats()
        self.assertEqual(st["totals"]["compiles"], n * len(self.pythons))
        self.assertFalse(os.path.exists(m.mnt("data", "__pycache__")),
                         "a directory without *.py must not get a virtual __pycache__")
        m.assert_source_unchanged(self)

    def remount_with_filled_store(self, args=()):
        """Every interpreter imports IMPORT_TREE through a first mount, which is then closed;
        returns (store, compiles made by that mount, a new mount of the same content on it)."""
        store = tempfile.mkdtemp(prefix=harness.TEMP_PREFIX + "store-")
        self.addCleanup(shutil.rmtree, store, True)
        first = self.mount(IMPORT_TREE, store=store, args=args)
        for py in self.pythons:
            self.run_import(first, py)
        compiles = first.stats()["totals"]["compiles"]
        first.close()
        self.assertNoMountLeft(first)
        return store, compiles, self.mount(IMPORT_TREE, store=store, args=args)

    def test_store_survives_remount(self):
        n = len(IMPORT_MODULES)
        _, compiles, second = self.remount_with_filled_store()
        self.assertEqual(compiles, n * len(self.pythons))
        # Same content at a different path, new daemon, same store: nothing to compile.
        for py in self.pythons:
            with self.subTest(python=py.tag):
                self.run_import(second, py)
                delta = harness.interpreter_stats(second.stats(), py.tag)
                self.assertEqual(delta["compiles"], 0, repr(delta))
                self.assertGreaterEqual(delta["store_hits"], n, repr(delta))
        second.assert_source_unchanged(self)

    def test_warm_store_fresh_mount_reads_no_pyc_through_fuse(self):
        # The store lives on the same filesystem as the tree (both under /tmp), so its commits
        # show up in the watcher's fanotify filesystem mark: they must not count as changes.
        # With pycs as FUSE files (--pyc-links off), every pyc reaches the page cache by the
        # daemon's push (at the lookup, or at the TCGETS CPython <= 3.13 sends between open and
        # read): no READ round trip for any pyc.
        n = len(IMPORT_MODULES)
        store, _, second = self.remount_with_filled_store(args=["--pyc-links", "off"])
        # Unrelated writes on the same filesystem during the imports, like the store's own.
        stop = threading.Event()
        scratch = os.path.join(store, "unrelated.txt")

        def write_elsewhere():
            while not stop.is_set():
                with open(scratch, "w") as f:
                    f.write("x")
        writer = threading.Thread(target=write_elsewhere, daemon=True)
        writer.start()
        self.addCleanup(writer.join)
        self.addCleanup(stop.set)
        for py in self.pythons:
            with self.subTest(python=py.tag):
                before = second.stats()
                self.run_import(second, py)
                after = second.stats()
                delta = harness.stats_delta(before, after, py.tag)
                self.assertEqual(delta["compiles"], 0, repr(delta))
                if sends_tcgets(py):
                    self.assertEqual(after["pyc_reads"] - before["pyc_reads"], 0)
                    self.assertGreaterEqual(
                        after["page_cache_pushes"] - before["page_cache_pushes"], n)
                self.assertEqual(after["reinvalidations"], 0)
                self.assertEqual(after["invalidations"], 0)
        requests = second.stats()["requests"]
        self.assertGreaterEqual(requests.get("ioctl", 0),
                                n * sum(1 for py in self.pythons if sends_tcgets(py)))
        # The kernel drops the pages (memory pressure, proactive reclaim): the next import's
        # TCGETS puts them back, still without a READ.
        py = [p for p in self.pythons if sends_tcgets(p)][-1]
        for rel in IMPORT_MODULES.values():
            fd = os.open(pyc_path(second.mountpoint, rel, py), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        before = second.stats()
        self.run_import(second, py)
        after = second.stats()
        self.assertEqual(after["pyc_reads"] - before["pyc_reads"], 0)
        self.assertGreaterEqual(after["page_cache_pushes"] - before["page_cache_pushes"], n)
        second.assert_source_unchanged(self)

    def test_cold_import_compiles_its_imports_ahead(self):
        # A flat directory (no package, so no sibling compile-ahead): what `entry` imports at
        # module level is compiled ahead, even a module CPython will not import in the end
        # (`if False:` is not known to be false), while imports inside a function are not.
        tree = {
            "entry.py": "import chain1\n\ndef later():\n    import deferred_mod\n",
            "chain1.py": "from chain2 import VALUE\nif False:\n    import never_run\n",
            "chain2.py": "VALUE = 7\n",
            "never_run.py": "NEVER = 1\n",
            "deferred_mod.py": "DEFERRED = 1\n",
            "unrelated.py": "U = 1\n",
        }
        py = self.pythons[-1]

        def run(mount, code):
            proc = harness.run_python(py, code, sys_path=[mount.mountpoint])
            self.assertPythonOk(proc)
            return proc

        def compiles(mount):
            return harness.interpreter_stats(mount.stats(), py.tag)["compiles"]

        # --compile-ahead off: exactly what CPython asked for (entry, chain1, chain2).
        off = self.mount(tree, args=["--compile-ahead", "off"])
        run(off, "import entry, chain1; print(chain1.VALUE)")
        time.sleep(0.5)
        self.assertEqual(compiles(off), 3)
        off.close()

        m = self.mount(tree)
        self.assertEqual(run(m, "import entry, chain1; print(chain1.VALUE)").stdout.strip(), "7")
        self.assertTrue(harness.wait_until(lambda: compiles(m) >= 4, 20), compiles(m))
        time.sleep(0.5)  # nothing else may follow
        self.assertEqual(compiles(m), 4)  # entry, chain1, chain2, never_run
        before = m.stats()
        for module, compiled in (("never_run", 0), ("deferred_mod", 1), ("unrelated", 1)):
            run(m, "import " + module)
            delta = harness.stats_delta(before, m.stats(), py.tag)
            self.assertEqual(delta["compiles"], compiled, "%s: %r" % (module, delta))
            before = m.stats()

    def test_optimization_levels(self):
        m = self.mount({"optmod.py": OPT_SOURCE})
        cases = [
            ([], 0, ["assert-active", "module doc", "f doc", True]),
            (["-O"], 1, ["assert-stripped", "module doc", "f doc", False]),
            (["-OO"], 2, ["assert-stripped", None, None, False]),
        ]
        for py in self.pythons:
            with self.subTest(python=py.tag):
                before = m.stats()
                for flags, opt, expected in cases + cases[1:2]:  # -O twice: 2nd is warm
                    proc = harness.run_python(py, OPT_CODE, sys_path=[m.mountpoint],
                                              args=flags + ["-v"])
                    self.assertPythonOk(proc, "%s %s" % (py.tag, flags))
                    out = json.loads(proc.stdout)
                    want = pyc_path(m.mountpoint, "optmod", py, opt)
                    self.assertEqual(out, expected + [want], "flags %r" % flags)
                    pycs, sources = harness.code_object_sources(proc.stderr)
                    self.assertIn(want, pycs, "flags %r: code object not from %s" % (flags, want))
                    self.assertNotIn(m.mnt("optmod.py"), sources)
                delta = harness.stats_delta(before, m.stats(), py.tag)
                self.assertEqual(delta["compiles"], 3, "one compile per level: %r" % delta)
        m.assert_source_unchanged(self)

    def test_pyc_modes(self):
        expected_flags = {"timestamp": 0, "checked-hash": 3, "unchecked-hash": 1}
        for mode, flags in expected_flags.items():
            m = self.mount({"m.py": "V = 1\n"}, args=["--pyc-mode", mode])
            for py in self.pythons:
                with self.subTest(mode=mode, python=py.tag):
                    proc = harness.run_python(py, HEADER_CODE, sys_path=[m.mountpoint],
                                              args=["-v"])
                    self.assertPythonOk(proc)
                    out = json.loads(proc.stdout)
                    self.assertEqual(out["V"], 1)
                    self.assertTrue(out["magic"])
                    if py.version < (3, 7):  # no hash-based pycs before PEP 552
                        self.assertEqual((out["flags"], out["mtime_ok"], out["size_ok"]),
                                         (None, True, True))
                    elif flags:
                        self.assertEqual((out["flags"], out["hash_ok"]), (flags, True))
                    else:
                        self.assertEqual((out["flags"], out["mtime_ok"], out["size_ok"]),
                                         (0, True, True))
                    pycs, _ = harness.code_object_sources(proc.stderr)
                    self.assertIn(pyc_path(m.mountpoint, "m", py), pycs)
            m.assert_source_unchanged(self)
            m.close()
            self.assertNoMountLeft(m)

    def test_c_extension_through_mount(self):
        tree, exts = {"plain.py": "P = 1\n"}, {}
        for py in self.pythons:
            if py.ext_module:
                name, origin = py.ext_module
                with open(origin, "rb") as f:
                    tree[os.path.basename(origin)] = f.read()
                exts[py.tag] = (name, os.path.basename(origin))
        if not exts:
            self.skipTest("no interpreter has a lib-dynload extension to copy")
        m = self.mount(tree)
        for py in self.pythons:
            if py.tag not in exts:
                continue
            name, base = exts[py.tag]
            with self.subTest(python=py.tag, module=name):
                proc = harness.run_python(
                    py, "import %s, plain; print(%s.__file__)" % (name, name),
                    sys_path=[m.mountpoint])
                self.assertPythonOk(proc)
                self.assertEqual(proc.stdout.strip(), m.mnt(base))
        m.assert_source_unchanged(self)

    def test_syntax_error_is_cpythons_own(self):
        m = self.mount(SYNTAX_TREE)
        native = tempfile.mkdtemp(prefix=harness.TEMP_PREFIX + "native-")
        self.addCleanup(shutil.rmtree, native, True)
        harness.write_tree(native, SYNTAX_TREE)

        def normalized(out, root):
            return json.loads(out.replace(root + "/", "<ROOT>/"))

        for py in self.pythons:
            with self.subTest(python=py.tag):
                before = m.stats()
                for module in ("bad", "badindent"):
                    got = harness.run_python(py, SYNTAX_CODE, sys_path=[m.mountpoint],
                                             argv=[module])
                    want = harness.run_python(py, SYNTAX_CODE, sys_path=[native], argv=[module],
                                              env={"PYTHONDONTWRITEBYTECODE": "1"})
                    self.assertPythonOk(got)
                    self.assertPythonOk(want)
                    self.assertIsNotNone(json.loads(want.stdout))
                    self.assertEqual(json.loads(got.stdout)["filename"], m.mnt(module + ".py"))
                    self.assertEqual(normalized(got.stdout, m.mountpoint),
                                     normalized(want.stdout, native))
                    with self.assertRaises(FileNotFoundError, msg="pyc of a broken source"):
                        open(m.mnt("__pycache__", py.pyc_name(module)), "rb").close()
                delta = harness.stats_delta(before, m.stats(), py.tag)
                self.assertGreaterEqual(delta["compile_errors"], 2, repr(delta))
                self.assertEqual(delta["compiles"], 0, repr(delta))
        m.assert_source_unchanged(self)


if __name__ == "__main__":
    harness.main()
