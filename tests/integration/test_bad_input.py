"""Bad input through a real mount: every case must get CPython's own behaviour (the same outcome,
exception type and message as importing the same file natively from a plain directory copy) or a
clean ENOENT, never hang, never serve wrong code, and the daemon must keep serving afterwards.

Cases: a 10 MB source, deeply nested expressions, coding cookies, BOMs, NUL bytes, invalid
UTF-8, a FIFO / a character device / a directory / a symlink loop named like a module, symlinks,
an unreadable source, odd file names (spaces, newlines, non-UTF-8 bytes), names whose pyc name
exceeds NAME_MAX, and sources replaced or removed while other processes import them.

Run by CTest, or by hand: python3 -I -B tests/integration/test_bad_input.py -v
"""

import ast
import errno
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Imports each name, then stats each path; prints JSON (ASCII only, so odd names survive).
PROBE = r"""
import errno, importlib, json, os, sys
req = json.loads(sys.argv[1])
sys.path[:0] = req["path"]
out = {"imports": [], "stats": []}
for name in req["names"]:
    try:
        mod = importlib.import_module(name)
        out["imports"].append(["ok", repr(getattr(mod, "VALUE", None))])
    except BaseException as e:
        out["imports"].append([type(e).__name__, str(e)])
for p in req["stat"]:
    try:
        out["stats"].append("ok:%d" % os.stat(p).st_size)
    except OSError as e:
        out["stats"].append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(out))
"""

O_PATH = getattr(os, "O_PATH", 0o10000000)
ALIVE = {"alive": {"okmod.py": "VALUE = 'still serving'\n"}}


# Special tree entries (plain str/bytes values are regular files, dicts are directories).
class Fifo:
    pass


class CharDev:
    def __init__(self, major, minor):
        self.dev = os.makedev(major, minor)


class Symlink:
    def __init__(self, target):
        self.target = target


class File:
    def __init__(self, data, mode):
        self.data, self.mode = data, mode


def build(root, spec):
    """Like harness.write_tree, plus the special entries above and bytes names."""
    os.makedirs(root, exist_ok=True)
    for name, value in spec.items():
        path = os.path.join(os.fsencode(root), os.fsencode(name))
        if isinstance(value, dict):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
            build(path, value)
        elif isinstance(value, Fifo):
            os.mkfifo(path, 0o644)
        elif isinstance(value, CharDev):
            os.mknod(path, 0o644 | stat.S_IFCHR, value.dev)
        elif isinstance(value, Symlink):
            os.symlink(value.target, path)
        else:
            data, mode = (value.data, value.mode) if isinstance(value, File) else (value, 0o644)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            os.chmod(path, mode)


def pyc_sources(verbose_stderr):
    """The pycs `python -v` says it used. Like harness.code_object_sources, but tolerant of
    lines another message was glued to (3.6's parser prints `s_push: parser stack overflow`
    without a newline)."""
    pycs = []
    for line in verbose_stderr.splitlines():
        at = line.find("# code object from ")
        if at < 0:
            continue
        raw = line[at + len("# code object from "):].strip()
        try:
            pycs.append(ast.literal_eval(raw))
        except (ValueError, SyntaxError):
            continue
    return pycs


class BadInputTest(harness.MountTestCase):

    def newest(self):
        return max(self.pythons, key=lambda p: p.version)

    def setUp(self):
        self.native_base = tempfile.mkdtemp(prefix=harness.TEMP_PREFIX + "native-")
        os.chmod(self.native_base, 0o755)
        self.addCleanup(harness._rmtree, self.native_base)

    def make(self, spec, **kw):
        """A mount and a native copy of the same tree (plus the `alive` package)."""
        spec = dict(spec, **ALIVE)
        native = os.path.join(self.native_base, "tree")
        build(native, spec)
        m = self.mount(prepare=lambda m: build(m.source, spec), **kw)
        self.addCleanup(self.assert_still_serving, m)
        return m, native

    def assert_still_serving(self, m):
        """The daemon answers stats and serves a normal module from a pyc after the case."""
        if m.closed:
            return
        py = self.newest()
        harness.stats(m.mountpoint)
        proc = harness.run_python(py, "import okmod; print(okmod.VALUE)", args=["-B", "-v"],
                                  sys_path=[m.mnt("alive")], timeout=60)
        self.assertPythonOk(proc, "import of a normal module after the case")
        self.assertEqual(proc.stdout.strip(), "still serving")
        pycs, _ = harness.code_object_sources(proc.stderr)
        self.assertIn(m.mnt("alive", "__pycache__", py.pyc_name("okmod")), pycs)
        self.assertTrue(harness.pid_alive(m.pid))

    def probe(self, py, root, names=(), stat_paths=(), subdir="", user=None, timeout=60):
        """(outcomes, pycs used, stat results) of importing names from root/subdir. Paths in
        messages are made relative to the root, so a mount and a native copy compare equal."""
        req = {"path": [os.path.join(root, subdir)], "names": list(names),
               "stat": list(stat_paths)}
        try:
            proc = harness.run_python(py, PROBE, args=["-B", "-v"], argv=[json.dumps(req)],
                                      user=user, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("importing %r from %s with %s hung (> %d s)" % (names, root, py.tag,
                                                                    timeout))
        if proc.returncode != 0 or not proc.stdout.strip():
            # The interpreter itself died (e.g. a C stack overflow): that is the outcome.
            return [["died", "rc %d" % proc.returncode]] * len(names), [], []
        out = json.loads(proc.stdout)
        imports = [[kind, msg.replace(root, "<ROOT>")] for kind, msg in out["imports"]]
        return imports, pyc_sources(proc.stderr), out["stats"]

    def compare(self, m, native, py, names, subdir="", user=None, served=(), timeout=60):
        """Asserts mount == native for every name; names in `served` that import must come
        from the mount's pycs when py's tag is served. Returns the outcomes."""
        got, pycs, _ = self.probe(py, m.mountpoint, names, subdir=subdir, user=user,
                                  timeout=timeout)
        want, _, _ = self.probe(py, native, names, subdir=subdir, user=user, timeout=timeout)
        for name, g, w in zip(names, got, want):
            with self.subTest(python=py.tag, module=name):
                self.assertEqual(g, w, "%s: mount differs from a native import" % py.tag)
        if py.tag in {p.tag for p in m.pythons}:
            for name in served:
                if got[list(names).index(name)][0] != "ok":
                    continue  # CPython itself rejects it (e.g. 3.6's parser stack limit)
                self.assertIn(m.mnt(subdir, "__pycache__", py.pyc_name(name)), pycs,
                              "%s: %r was not imported from a served pyc" % (py.tag, name))
        return got

    def pyc_stats(self, m, subdir, names, timeout=30):
        """os.stat of every tag's pyc of each name through the mount: {(name, tag): result}."""
        paths = [(n, py.tag, m.mnt(subdir, "__pycache__", py.pyc_name(n)))
                 for n in names for py in m.pythons]
        _, _, res = self.probe(self.newest(), m.mountpoint, stat_paths=[p for _, _, p in paths],
                               timeout=timeout)
        return {(n, t): r for (n, t, _), r in zip(paths, res)}

    # ------------------------------------------------------------------------------------------

    def test_ten_megabyte_source_compiled_once(self):
        py = self.newest()
        funcs = "".join("def f%d(x):\n    return x + %d\n\n" % (i, i) for i in range(3000))
        blob = "BLOB = (\n" + "".join("    %r\n" % ("x" * 70) for _ in range(50000)) + ")\n"
        pad = "".join("# padding line %08d %s\n" % (i, "y" * 60) for i in range(80000))
        src = funcs + blob + pad + "VALUE = len(BLOB) + f2999(1)\n"
        self.assertGreater(len(src), 10 * 1000 * 1000)
        m, native = self.make({"big.py": src}, pythons=[py])
        st0 = m.stats()
        got = self.compare(m, native, py, ["big"], served=["big"])
        self.assertEqual(got, [["ok", repr(50000 * 70 + 3000)]])
        self.compare(m, native, py, ["big"], served=["big"])
        delta = harness.stats_delta(st0, m.stats(), py.tag)
        self.assertEqual(delta["compiles"], 1, "10 MB source compiled %d times" % delta["compiles"])
        size = os.stat(m.mnt("__pycache__", py.pyc_name("big"))).st_size
        harness.log("10 MB source: %d bytes of source, served pyc %d bytes, compiled once"
                    % (len(src), size))

    def test_deeply_nested_expressions_every_version(self):
        cases = {
            "parens_ok": "VALUE = " + "(" * 50 + "1" + ")" * 50 + "\n",
            "parens_150": "VALUE = " + "(" * 150 + "1" + ")" * 150 + "\n",
            "parens": "VALUE = " + "(" * 1000 + "1" + ")" * 1000 + "\n",
            "unary": "VALUE = " + "-" * 100000 + "1\n",
            "binop": "VALUE = 1" + "+1" * 100000 + "\n",
            "lists": "VALUE = " + "[" * 5000 + "]" * 5000 + "\n",
        }
        m, native = self.make({"deep": {n + ".py": s for n, s in cases.items()}})
        seen = {}
        for py in self.pythons:
            for name in cases:  # one process per case: a crash must not hide the others
                got = self.compare(m, native, py, [name], subdir="deep", timeout=120,
                                   served=[name])
                seen.setdefault(name, set()).add("%s %s" % (got[0][0], got[0][1][:40]))
        self.assertEqual(seen["parens_ok"], {"ok 1"})
        harness.log("nested expressions, outcomes over %d versions: %r"
                    % (len(self.pythons), {k: sorted(v) for k, v in seen.items()}))

    def test_encodings_cookies_bom_and_nul_every_version(self):
        cases = {
            "utf8": "VALUE = 'caf\u00e9 \u2603'\n".encode("utf-8"),
            "latin1_cookie": b"# -*- coding: latin-1 -*-\nVALUE = 'caf\xe9'\n",
            "cp1252_cookie": b"# vim: set fileencoding=cp1252 :\nVALUE = '\x80uro'\n",
            "wrong_cookie": b"# coding: utf-8\nVALUE = 'caf\xe9'\n",
            "unknown_cookie": b"# coding: no-such-codec\nVALUE = 1\n",
            "bom": b"\xef\xbb\xbfVALUE = 'bom \xe2\x98\x83'\n",
            "bom_utf8_cookie": b"\xef\xbb\xbf# coding: utf-8\nVALUE = 'bom+cookie'\n",
            "bom_latin1_cookie": b"\xef\xbb\xbf# coding: latin-1\nVALUE = 'x'\n",
            "nul_code": b"VALUE = 1\n\x00\n",
            "nul_string": b"VALUE = 'a\x00b'\n",
            "nul_comment": b"VALUE = 2  # \x00\n",
            "invalid_utf8": b"VALUE = '\xff\xfe'\n",
            "invalid_utf8_comment": b"VALUE = 3  # \xc3\x28\n",
            "truncated_utf8": b"VALUE = 4\n# \xe2\x98",
        }
        m, native = self.make({"enc": {n + ".py": s for n, s in cases.items()}})
        names = sorted(cases)
        table = {}
        for py in self.pythons:
            got = self.compare(m, native, py, names, subdir="enc",
                               served=["utf8", "latin1_cookie", "cp1252_cookie", "bom",
                                       "bom_utf8_cookie"])
            for name, outcome in zip(names, got):
                table.setdefault(name, set()).add(outcome[0])
        harness.log("encodings, outcome types over all versions: %r"
                    % {k: sorted(v) for k, v in table.items()})
        self.assertEqual(table["latin1_cookie"], {"ok"})
        self.assertEqual(table["bom"], {"ok"})
        self.assertNotIn("ok", table["wrong_cookie"])

    def test_fifo_device_directory_and_symlink_loop_named_like_modules(self):
        spec = {"odd": {"x.py": Fifo(), "d.py": CharDev(1, 3), "y.py": {"__init__.py": ""},
                        "loop.py": Symlink("loop.py"), "dangling.py": Symlink("nowhere.py"),
                        "fine.py": "VALUE = 'fine'\n"}}
        m, native = self.make(spec)
        names = ["x", "d", "y", "loop", "dangling", "fine"]
        for py in self.pythons:
            got = self.compare(m, native, py, names, subdir="odd", timeout=30, served=["fine"])
            self.assertEqual([g[0] for g in got], ["ModuleNotFoundError"] * 5 + ["ok"])
        # The virtual __pycache__ lists and stats promptly; odd entries have no pyc.
        start = time.monotonic()
        ls = subprocess.run(["ls", "-l", m.mnt("odd", "__pycache__")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=30,
                            env=harness.clean_env())
        res = self.pyc_stats(m, "odd", names)
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 20)
        self.assertIn(ls.returncode, (0, 1), ls.stderr)
        self.assertNotIn("Input/output error", ls.stderr)
        for (name, tag), r in res.items():
            want = "ENOENT" if name != "fine" else r
            self.assertEqual(r, want, "stat of %s's %s pyc" % (name, tag))
            if name == "fine":
                self.assertTrue(r.startswith("ok:"), r)
        # Nobody holds the FIFO open (a reader would make this open succeed), and the daemon
        # has no descriptor on it or on the device.
        fifo = m.src("odd", "x.py")
        with self.assertRaises(OSError) as cm:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        self.assertEqual(cm.exception.errno, errno.ENXIO)
        for fd in os.listdir("/proc/%d/fd" % m.pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (m.pid, fd))
                with open("/proc/%d/fdinfo/%s" % (m.pid, fd)) as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError, ValueError):
                continue
            if target in (fifo, m.src("odd", "d.py")):
                # The inode table's O_PATH handle opens nothing (no read, no FIFO wait).
                self.assertTrue(flags & O_PATH, "the daemon opened %s (fd %s, flags %o)"
                                % (target, fd, flags))
        harness.log("FIFO/device/dir/loop: ls -l and %d pyc stats took %.2f s"
                    % (len(res), elapsed))

    def test_symlink_to_a_module_inside_the_tree(self):
        spec = {"real": {"target.py": "VALUE = 'target'\n"},
                "link": {"linked.py": Symlink("../real/target.py")}}
        m, native = self.make(spec)
        for py in self.pythons:
            got = self.compare(m, native, py, ["linked"], subdir="link", served=["linked"])
            self.assertEqual(got, [["ok", repr("target")]])

    @unittest.skipUnless(os.geteuid() == 0, "needs root (useradd, setpriv, allow_other)")
    def test_unreadable_source(self):
        user_py = harness.python_for_other_users()
        if user_py is None:
            self.skipTest("no /usr/bin/python3.X usable by an unprivileged account")
        spec = {"locked": {"secret.py": File("VALUE = 'secret'\n", 0o000),
                           "public.py": "VALUE = 'public'\n"}}
        m, native = self.make(spec, args=["-o", "allow_other"])
        with harness.TempUser() as u:
            user = (u.uid, u.gid)
            got = self.compare(m, native, user_py, ["secret", "public"], subdir="locked",
                               user=user, served=["public"])
            self.assertEqual(got[0][0], "PermissionError")
            self.assertIn("<ROOT>/locked/secret.py", got[0][1])
            self.assertEqual(got[1], ["ok", repr("public")])
            paths = [m.mnt("locked", "__pycache__", py.pyc_name("secret")) for py in m.pythons]
            _, _, res = self.probe(user_py, m.mountpoint, stat_paths=paths, user=user)
            self.assertEqual(res, ["EACCES"] * len(paths))
        # Root may read a 0000 file, natively and through the mount.
        got = self.compare(m, native, self.newest(), ["secret"], subdir="locked",
                           served=["secret"])
        self.assertEqual(got, [["ok", repr("secret")]])

    def test_names_with_spaces_newlines_and_non_utf8_bytes(self):
        names = {"with space": "VALUE = 'space'\n", "new\nline": "VALUE = 'newline'\n",
                 os.fsdecode(b"bad\xffbyte"): "VALUE = 'non-utf8'\n",
                 "tab\there": "VALUE = 'tab'\n", "caf\u00e9": "VALUE = 'unicode'\n"}
        spec = {"names": {os.fsencode(n) + b".py": s for n, s in names.items()}}
        m, native = self.make(spec)
        for py in self.pythons:
            got = self.compare(m, native, py, list(names), subdir="names", served=list(names))
            self.assertEqual([g[0] for g in got], ["ok"] * len(names))
        res = self.pyc_stats(m, "names", list(names))
        for key, r in res.items():
            self.assertTrue(r.startswith("ok:") or r == "ENOENT", "pyc of %r: %s" % (key, r))
        self.assertTrue(all(r.startswith("ok:") for r in res.values()), res)

    def test_module_name_whose_pyc_name_exceeds_name_max(self):
        longest_tag = max(len(py.pyc_name("")) for py in self.pythons)
        fits = "f" * (255 - longest_tag)   # every pyc name is at most 255 bytes
        too_long = "t" * 250               # t...t.py fits, no pyc name does
        self.assertLessEqual(len(too_long) + 3, 255)
        spec = {"long": {fits + ".py": "VALUE = 'fits'\n", too_long + ".py": "VALUE = 'long'\n"}}
        m, native = self.make(spec)
        for py in self.pythons:
            got = self.compare(m, native, py, [fits, too_long], subdir="long", served=[fits])
            self.assertEqual(got, [["ok", repr("fits")], ["ok", repr("long")]])
        # Natively a pyc name over 255 bytes cannot exist (ENAMETOOLONG); FUSE would allow names
        # up to 1024 bytes, but the mount behaves like a real directory: ENAMETOOLONG, and such
        # names are never listed (tools assume NAME_MAX).
        res = self.pyc_stats(m, "long", [fits, too_long])
        for (name, tag), r in res.items():
            if name == fits:
                self.assertTrue(r.startswith("ok:"), (tag, r))
            else:
                self.assertEqual(r, "ENAMETOOLONG", (tag, r))
        listed = [n for n in os.listdir(m.mnt("long", "__pycache__")) if len(os.fsencode(n)) > 255]
        self.assertEqual(listed, [])
        harness.log("pyc names over NAME_MAX: stat gives %r; %d such names listed in the "
                    "virtual __pycache__" % (sorted({r.split(":")[0] for (n, _), r in res.items()
                                                     if n == too_long}), len(listed)))

    def test_source_replaced_or_removed_while_importing(self):
        """A writer replaces (rename over, same size or not) and removes the source hundreds of
        times while importers loop; every import must run a version that existed or fail the
        way CPython does natively for a vanished file."""
        pys = [self.newest(), min(self.pythons, key=lambda p: p.version)]

        def version(n):
            pad = "#" * (n % 7) if n % 2 else "#" * 3  # same-size and different-size versions
            return "VALUE = %d\nTWICE = %d\n%s\n" % (n, 2 * n, pad)

        m, _ = self.make({"race": {"racy.py": version(0)}}, pythons=pys)
        written = {0}
        stop = threading.Event()
        src = m.src("race", "racy.py")
        tmp = m.src("race", "racy.tmp")

        def writer():
            n = 0
            while n < 400 and not stop.is_set():
                n += 1
                written.add(n)
                with open(tmp, "w") as f:
                    f.write(version(n))
                if n % 4 == 1:
                    try:
                        os.unlink(src)
                    except FileNotFoundError:
                        pass
                    time.sleep(0.003)
                os.rename(tmp, src)
                time.sleep(0.004)

        importer = r"""
import importlib, importlib.machinery as mach, json, sys, time
sys.path.insert(0, sys.argv[1])
compiled = [0]
orig = mach.SourceFileLoader.source_to_code
def counting(self, *a, **kw):
    compiled[0] += 1
    return orig(self, *a, **kw)
mach.SourceFileLoader.source_to_code = counting
ok, errors, n = [], [], 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    n += 1
    importlib.invalidate_caches()
    sys.modules.pop("racy", None)
    try:
        mod = importlib.import_module("racy")
        ok.append([getattr(mod, "VALUE", None), getattr(mod, "TWICE", None)])
    except BaseException as e:
        errors.append([type(e).__name__, str(e)])
print(json.dumps({"ok": ok, "errors": errors, "imports": n, "source_compiles": compiled[0]}))
"""
        procs = [subprocess.Popen([py.path, "-B", "-c", importer, m.mnt("race"), "6"],
                                  env=harness.clean_env(), cwd="/", stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, universal_newlines=True)
                 for py in pys for _ in range(2)]
        t = threading.Thread(target=writer)
        t.start()
        try:
            outs = [p.communicate(timeout=90) for p in procs]
        finally:
            stop.set()
            t.join()
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        allowed = {"ModuleNotFoundError", "ImportError", "FileNotFoundError"}
        summary = []
        for p, (out, err), py in zip(procs, outs, [py for py in pys for _ in range(2)]):
            self.assertEqual(p.returncode, 0, err[-2000:])
            res = json.loads(out)
            for value, twice in res["ok"]:
                self.assertIn(value, written, "imported a version that never existed")
                self.assertEqual(twice, 2 * value, "inconsistent code for version %r" % value)
            for kind, msg in res["errors"]:
                self.assertIn(kind, allowed, "%s: %s" % (kind, msg))
                for bad in ("magic", "marshal", "EOF", "Input/output"):
                    self.assertNotIn(bad, msg)
            self.assertGreater(len(res["ok"]), 0)
            summary.append("%s: %d imports, %d ok (%d compiled by CPython), errors %r"
                           % (py.tag, res["imports"], len(res["ok"]), res["source_compiles"],
                              sorted({k for k, _ in res["errors"]})))
        self.assertGreater(len(written), 100, "the writer made too few changes")
        harness.log("race, %d versions written: %s" % (len(written), "; ".join(summary)))
        # Afterwards the final version is served, from a pyc.
        final = max(written)
        for py in pys:
            got, pycs, _ = self.probe(py, m.mountpoint, ["racy"], subdir="race")
            self.assertEqual(got, [["ok", repr(final)]])
            self.assertIn(m.mnt("race", "__pycache__", py.pyc_name("racy")), pycs)


if __name__ == "__main__":
    harness.main()
