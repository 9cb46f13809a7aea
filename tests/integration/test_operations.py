"""Operating pycachefs: warm, stats on a store, gc, clear, verify, configuration precedence,
--help/--version. Real stores (LMDB in temp dirs), real interpreters, real mounts.

Run by CTest, or by hand: python3 -I -B tests/integration/test_operations.py -v
"""

import json
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MiB = 1 << 20

# A package with modules worth importing, a duplicate, a syntax error, and things warm must skip.
WARM_TREE = {
    "pkg": {
        "__init__.py": "from . import alpha, beta\n",
        "alpha.py": "def f(x):\n    return x * 2\nVALUE = f(21)\n",
        "beta.py": "import json\nDATA = json.dumps({'b': 2})\n",
        "sub": {"__init__.py": "", "gamma.py": "GAMMA = [i for i in range(3)]\n"},
        "copy_of_alpha.py": "def f(x):\n    return x * 2\nVALUE = f(21)\n",
        "broken.py": "X = 1\ndef oops(:\n    pass\n",
        "__pycache__": {"stale.py": "this is not python\n"},
        "notes.txt": "not python\n",
    },
}
GOOD_FILES = 6  # .py files that compile (the duplicate counts: warm sees it as a file)


class Scratch:
    """A temp directory with a source tree and a store; removed at cleanup."""

    def __init__(self, tc, tree=None):
        self.base = tempfile.mkdtemp(prefix=harness.TEMP_PREFIX)
        tc.addCleanup(shutil.rmtree, self.base, True)
        self.source = os.path.join(self.base, "src")
        self.store = os.path.join(self.base, "store")
        os.mkdir(self.source)
        if tree:
            harness.write_tree(self.source, tree)

    def path(self, *parts):
        return os.path.join(self.base, *parts)


class OperationsTest(harness.MountTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Two interpreters (oldest and newest) keep the run short but prove per-tag behaviour.
        cls.two = [cls.pythons[0], cls.pythons[-1]] if len(cls.pythons) > 1 else cls.pythons
        cls.py = cls.pythons[-1]

    # -- helpers
    def tool(self, *args, env=None, timeout=120):
        return harness.run_tool([harness.pycachefs_bin()] + list(args),
                                env=harness.clean_env(env), timeout=timeout)

    def ok(self, proc, what):
        self.assertEqual(proc.returncode, 0, "%s failed (rc %d)\nstdout: %s\nstderr: %s"
                         % (what, proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
        return proc

    def warm(self, store, paths, pythons, *extra, env=None):
        args = ["warm"] + list(paths) + ["--store", store]
        for p in pythons:
            args += ["--python", p.path]
        return self.tool(*(args + list(extra)), env=env, timeout=300)

    def store_stats(self, store, *extra, env=None):
        proc = self.ok(self.tool("stats", "--store", store, "--json", *extra, env=env),
                       "stats --store")
        return json.loads(proc.stdout)

    def summary(self, out):
        counts = {}
        for key, label in (("compiled", "compiled"), ("stored", "already in store"),
                           ("errors", "compile errors"), ("failed", "failed")):
            m = re.search(r"^\s+%s\s+(\d+)\s*$" % re.escape(label), out, re.M)
            counts[key] = int(m.group(1)) if m else None
        return counts

    # ---------------------------------------------------------------------------------------
    def test_warm_then_mount_compiles_nothing(self):
        s = Scratch(self)
        harness.write_tree(s.source, WARM_TREE)
        self.ok(self.warm(s.store, [s.source], self.two), "warm")

        def prepare(m):  # the mount gets the warmed tree and store
            shutil.rmtree(m.source)
            shutil.copytree(s.source, m.source)
            shutil.rmtree(m.store)
            shutil.copytree(s.store, m.store)

        m = self.mount(None, prepare=prepare, pythons=self.two)
        code = ("import pkg, pkg.sub.gamma, pkg.copy_of_alpha\n"
                "assert pkg.alpha.VALUE == 42 and pkg.sub.gamma.GAMMA == [0, 1, 2]\n"
                "print(pkg.__file__)")
        for py in self.two:
            proc = harness.run_python(py, code, sys_path=[m.mountpoint], args=["-v"])
            self.assertPythonOk(proc, "import through the mount (%s)" % py.tag)
            pycs, sources = harness.code_object_sources(proc.stderr)
            ours = [p for p in pycs if p.startswith(m.mountpoint)]
            self.assertEqual(len(ours), 6, "%s: pycs %r" % (py.tag, pycs))
            self.assertEqual([p for p in sources if p.startswith(m.mountpoint)], [])
        st = m.stats()
        for py in self.two:
            per = harness.interpreter_stats(st, py.tag)
            self.assertEqual(per["compiles"], 0, "%s compiled after warm: %r" % (py.tag, per))
            self.assertEqual(per["compile_errors"], 0, per)
            self.assertGreaterEqual(per["store_hits"], 5, per)

    def test_warm_summary_errors_and_rerun(self):
        s = Scratch(self, WARM_TREE)
        os.symlink("..", os.path.join(s.source, "pkg", "sub", "loop"))  # must not loop
        proc = self.ok(self.warm(s.store, [s.source], [self.py]), "warm")
        counts = self.summary(proc.stdout)
        # The duplicate of alpha is "compiled" (joined alpha's compile) or already stored.
        self.assertEqual(counts["compiled"] + counts["stored"], GOOD_FILES, proc.stdout)
        self.assertGreaterEqual(counts["compiled"], GOOD_FILES - 1, proc.stdout)
        self.assertEqual(counts["errors"], 1, proc.stdout)
        broken = os.path.join(s.source, "pkg", "broken.py")
        self.assertRegex(proc.stdout, r"(?m)^\s+%s:2: SyntaxError: " % re.escape(broken))
        self.assertNotIn("stale.py", proc.stdout + proc.stderr)
        self.assertIn("warmed %d files" % (GOOD_FILES + 1), proc.stdout)
        self.assertFalse(os.path.exists(os.path.join(s.source, "pkg", "alpha.pyc")))

        again = self.ok(self.warm(s.store, [s.source], [self.py]), "second warm")
        counts = self.summary(again.stdout)
        self.assertEqual(counts["compiled"], 0, again.stdout)
        self.assertEqual(counts["stored"], GOOD_FILES, again.stdout)
        self.assertEqual(counts["errors"], 1, again.stdout)  # the negative entry still reports

        st = self.store_stats(s.store)
        per = st["interpreters"][self.py.tag]
        # Five distinct contents compile (the duplicate shares alpha's entry), one error entry.
        self.assertEqual(per["code_entries"], GOOD_FILES - 1, st)
        self.assertEqual(per["error_entries"], 1, st)
        # The pool compiled alpha's bytes once: the duplicate was a hit or joined the compile.
        self.assertEqual(st["counters"][self.py.tag]["compiles"], GOOD_FILES - 1, st)

    def test_warm_optimize_levels_and_bad_paths(self):
        s = Scratch(self, {"m.py": "'''doc'''\nassert True\n"})
        self.ok(self.warm(s.store, [s.source], [self.py], "--optimize", "0,1,2", "-j", "3"),
                "warm -O 0,1,2")
        per = self.store_stats(s.store)["interpreters"][self.py.tag]
        self.assertEqual(per["optimize"], {"0": 1, "1": 1, "2": 1}, per)

        missing = s.path("no-such-tree")
        proc = self.warm(s.store, [missing], [self.py])
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(missing, proc.stderr)
        proc = self.warm(s.store, [s.source], [self.py], "--optimize", "3")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--optimize", proc.stderr)

    def test_stats_json_fields_and_zero(self):
        s = Scratch(self, WARM_TREE)
        self.ok(self.warm(s.store, [s.source], self.two), "warm")
        st = self.store_stats(s.store)
        for key in ("store", "entries", "code_entries", "error_entries", "bytes", "limit",
                    "file_bytes", "counters", "totals", "interpreters"):
            self.assertIn(key, st)
        self.assertEqual(st["store"], s.store)
        self.assertEqual(st["limit"], 2 << 30)
        self.assertEqual(st["entries"], st["code_entries"] + st["error_entries"])
        self.assertEqual(st["error_entries"], len(self.two))
        self.assertGreater(st["bytes"], 0)
        self.assertGreaterEqual(st["file_bytes"], st["bytes"])
        for py in self.two:
            self.assertEqual(st["counters"][py.tag]["compiles"], GOOD_FILES - 1)
            self.assertEqual(st["counters"][py.tag]["compile_errors"], 1)
            self.assertEqual(st["interpreters"][py.tag]["code_entries"], GOOD_FILES - 1)
        text = self.ok(self.tool("stats", "--store", s.store), "stats").stdout
        self.assertIn("entries", text)
        self.assertIn(self.two[0].tag, text)

        zeroed = self.store_stats(s.store, "--zero")
        self.assertEqual(zeroed["entries"], st["entries"])  # entries stay
        for tag, c in zeroed["counters"].items():
            self.assertEqual((c["compiles"], c["hits"], c["misses"]), (0, 0, 0), (tag, c))

        missing = self.tool("stats", "--store", s.path("nothing-here"))
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no store at", missing.stderr)

    def test_verify_finds_corrupted_entry(self):
        marker = "PCFS_MARKER_%s" % os.urandom(6).hex()
        tree = {"good.py": "X = 1\n", "victim.py": "MARK = %r\n" % marker,
                "other.py": "def g():\n    return 3\n"}
        s = Scratch(self, tree)
        self.ok(self.warm(s.store, [s.source], [self.py]), "warm")
        clean = self.ok(self.tool("verify", "--store", s.store), "verify (clean)")
        self.assertIn("checked 3 entries, removed 0", clean.stdout)

        data_path = os.path.join(s.store, "data.mdb")
        with open(data_path, "rb") as f:
            data = bytearray(f.read())
        needle = marker.encode()
        hits = [m.start() for m in re.finditer(re.escape(needle), data)]
        self.assertTrue(hits, "marker not found in data.mdb")
        for at in hits:  # LMDB may keep a stale copy in a free page: flip them all
            data[at + len(needle) - 1] ^= 0x01
        with open(data_path, "r+b") as f:
            f.write(data)

        proc = self.tool("verify", "--store", s.store)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertIn("bad entry", proc.stdout)
        self.assertIn("removed 1", proc.stdout)
        self.assertEqual(self.store_stats(s.store)["entries"], 2)
        again = self.ok(self.tool("verify", "--store", s.store), "verify (after repair)")
        self.assertIn("checked 2 entries, removed 0", again.stdout)
        # The removed entry is simply compiled again.
        counts = self.summary(self.ok(self.warm(s.store, [s.source], [self.py]), "rewarm").stdout)
        self.assertEqual((counts["compiled"], counts["stored"]), (1, 2))

    def test_gc_reaches_limit(self):
        body = "".join("def f%d(a, b):\n    return a * %d + b - %d\n" % (i, i, i)
                       for i in range(60))
        tree = {"gen": {"m%03d.py" % n: "N = %d\n%s" % (n, body) for n in range(150)}}
        s = Scratch(self, tree)
        self.ok(self.warm(s.store, [s.source], [self.py]), "warm")
        before = self.store_stats(s.store)
        self.assertEqual(before["entries"], 150)
        target = 256 * 1024
        self.assertGreater(before["bytes"], target, "tree too small to test gc")
        proc = self.ok(self.tool("gc", "--store", s.store, "--max-size", "256K"), "gc")
        self.assertIn("removed", proc.stdout)
        after = self.store_stats(s.store)
        self.assertLessEqual(after["bytes"], target, after)
        self.assertLess(after["entries"], before["entries"])
        self.assertGreater(after["entries"], 0)
        # gc without --max-size uses the configured limit (2G here): nothing more goes.
        self.ok(self.tool("gc", "--store", s.store), "gc at the limit")
        self.assertEqual(self.store_stats(s.store)["entries"], after["entries"])

    def test_clear_while_mounted(self):
        m = self.mount({"pkg": {"__init__.py": "", "a.py": "A = 1\n"}}, pythons=[self.py])
        proc = harness.run_python(self.py, "import pkg.a", sys_path=[m.mountpoint])
        self.assertPythonOk(proc, "first import")
        harness.wait_until(lambda: self.store_stats(m.store)["entries"] >= 2, 10, 0.2)
        before = self.store_stats(m.store)
        self.assertGreaterEqual(before["entries"], 2)
        proc = self.ok(self.tool("clear", "--store", m.store), "clear")
        self.assertIn("removed %d entries" % before["entries"], proc.stdout)
        after = self.store_stats(m.store)
        self.assertEqual(after["entries"], 0)
        self.assertEqual(after["counters"], before["counters"])  # counters are kept
        # The live mount keeps working on the cleared store.
        with open(m.src("pkg", "b.py"), "w") as f:
            f.write("B = 2\n")
        proc = harness.run_python(self.py, "import pkg.a, pkg.b; print(pkg.b.B)",
                                  sys_path=[m.mountpoint])
        self.assertPythonOk(proc, "import after clear")
        self.assertEqual(proc.stdout.strip(), "2")

    def test_config_precedence(self):
        s = Scratch(self, {"m.py": "M = 1\n"})
        other_store = s.path("other-store")
        self.ok(self.warm(s.store, [s.source], [self.py]), "warm")
        self.ok(self.warm(other_store, [s.source], [self.py]), "warm other")
        conf = s.path("system.conf")
        with open(conf, "w") as f:
            f.write("# system-wide\nstore = %s\nmax_size = 1M\npyc_mode = checked-hash\n" % s.store)
        base_env = {"PYCACHEFS_CONF": conf}

        def effective(env=None, *args):
            st = json.loads(self.ok(self.tool("stats", "--json", *args,
                                              env=dict(base_env, **(env or {}))),
                                    "stats").stdout)
            return st["store"], st["limit"]

        self.assertEqual(effective(), (s.store, 1 * MiB))  # the config file alone
        with open(os.path.join(s.store, "pycachefs.conf"), "w") as f:
            f.write("max-size = 2M  # the store's own file beats the system one\n")
        self.assertEqual(effective(), (s.store, 2 * MiB))
        self.assertEqual(effective({"PYCACHEFS_MAX_SIZE": "3M"}), (s.store, 3 * MiB))
        # The environment picks another store (whose directory has no pycachefs.conf).
        self.assertEqual(effective({"PYCACHEFS_STORE": other_store}), (other_store, 1 * MiB))
        # The command line beats the environment.
        self.assertEqual(effective({"PYCACHEFS_STORE": other_store}, "--store", s.store),
                         (s.store, 2 * MiB))

        # pyc_mode through a mount: file < store file < env < -o < command line.
        def mounted_mode(env, args):
            class EnvMount(harness.Mount):
                def command(self):
                    pairs = ["%s=%s" % kv for kv in dict(base_env, **env).items()]
                    cmd = super().command()
                    i = cmd.index("--store")
                    del cmd[i:i + 2]  # the store comes from the configuration
                    return ["env"] + pairs + cmd + list(args)

            m = self.mount({"x.py": "X = 1\n"}, mount_class=EnvMount, pythons=[self.py])
            st = m.stats()
            m.close()
            return st["store"], st["pyc_mode"]

        with open(os.path.join(s.store, "pycachefs.conf"), "a") as f:
            f.write("pyc_mode = unchecked-hash\n")
        self.assertEqual(mounted_mode({}, []), (s.store, "unchecked-hash"))
        self.assertEqual(mounted_mode({"PYCACHEFS_PYC_MODE": "timestamp"}, []),
                         (s.store, "timestamp"))
        self.assertEqual(mounted_mode({"PYCACHEFS_PYC_MODE": "timestamp"},
                                      ["-o", "pyc_mode=checked-hash"]),
                         (s.store, "checked-hash"))
        self.assertEqual(mounted_mode({"PYCACHEFS_PYC_MODE": "timestamp"},
                                      ["-o", "pyc_mode=checked-hash", "--pyc-mode",
                                       "unchecked-hash"]),
                         (s.store, "unchecked-hash"))

        # A bad value names where it came from.
        with open(conf, "a") as f:
            f.write("max_size = lots\n")
        proc = self.tool("stats", "--json", env=base_env)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("%s:5" % conf, proc.stderr)
        with open(conf, "w") as f:
            f.write("store = %s\n" % s.store)
        proc = self.tool("stats", "--json", env=dict(base_env, PYCACHEFS_MAX_SIZE="x9"))
        self.assertEqual(proc.returncode, 2)
        self.assertIn("PYCACHEFS_MAX_SIZE", proc.stderr)

    def test_daemon_logs_each_compile_error_once(self):
        tree = {"pkg": {"__init__.py": "", "ok.py": "A = 1\n", "bad.py": "X = 1\ndef f(:\n"}}
        m = self.mount(tree, pythons=[self.py])
        for _ in range(3):
            proc = harness.run_python(self.py, "import pkg.bad", sys_path=[m.mountpoint])
            self.assertIn("SyntaxError", proc.stderr)
        bad = m.src("pkg", "bad.py")

        def lines():
            with open(m.log_file) as f:
                return [line for line in f if "bad.py" in line]

        harness.wait_until(lambda: lines(), 5, 0.1)
        found = lines()
        self.assertEqual(len(found), 1, "want one log line, got:\n%s" % m.log_tail())
        self.assertIn("warning", found[0])
        self.assertRegex(found[0], r"%s:2: SyntaxError: " % re.escape(bad))
        self.assertIn(self.py.tag, found[0])

    def test_help_and_version(self):
        version = self.ok(self.tool("--version"), "--version")
        self.assertRegex(version.stdout, r"^pycachefs \d+\.\d+")
        for cmd in ("mount", "unmount", "stats", "warm", "gc", "clear", "verify"):
            proc = self.ok(self.tool(cmd, "--help"), cmd + " --help")
            self.assertIn(cmd, proc.stdout)
            self.assertIn("--help", proc.stdout)
        top = self.ok(self.tool("--help"), "--help").stdout
        for cmd in ("warm", "gc", "clear", "verify", "stats"):
            self.assertIn(cmd, top)


if __name__ == "__main__":
    harness.main()
