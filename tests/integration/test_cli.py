"""The command line: mount errors, the mount.fuse3-style -o form, unmount, SIGTERM, stats,
--real-pycache, listing without compiling, EROFS, and refused pyc writes on --rw mounts.

Run by CTest, or by hand: python3 -I -B tests/integration/test_cli.py -v
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PKG_TREE = {
    "pkg": {"__init__.py": "", "a.py": "A = 1\n", "b.py": "B = 2\n", "notes.txt": "text\n"},
    "data": {"x.txt": "no python here\n"},
}


class BareFormMount(harness.Mount):
    """`pycachefs SOURCE MOUNTPOINT -o allow_other,store=...,python=...` (mount.fuse3 style)."""

    def command(self):
        opts = ["allow_other", "store=" + self.store, "io_uring=" + harness.transport_value()]
        opts += ["python=" + p.path for p in self.pythons]
        return [self.binary, self.source, self.mountpoint, "-o", ",".join(opts)]


class Mount8Mount(harness.Mount):
    """`mount -t fuse -o ro,store=...,python=... 'BINARY#SOURCE' MOUNTPOINT`: mount(8) runs
    mount.fuse3, which runs the binary in the bare form (what an fstab line does)."""

    def command(self):
        opts = ["ro", "store=" + self.store, "pid_file=" + self.pid_file,
                "log_file=" + self.log_file, "io_uring=" + harness.transport_value()]
        opts += ["python=" + p.path for p in self.pythons]
        return ["mount", "-t", "fuse", "-o", ",".join(opts),
                "%s#%s" % (self.binary, self.source), self.mountpoint]


class CliTest(harness.MountTestCase):

    def one_line_error(self, proc, mentions):
        self.assertNotEqual(proc.returncode, 0, "expected failure, stdout=%r" % proc.stdout)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, "want a one-line message, got %r" % proc.stderr)
        self.assertIn(mentions, lines[0])

    # ---------------------------------------------------------------------------------------
    def test_mount_errors(self):
        py = self.pythons[-1]
        m = harness.Mount({"m.py": "M = 1\n"})
        self.addCleanup(m.close)
        base = [m.binary, "mount"]
        common = ["--store", m.store, "--log-file", m.log_file]
        missing = os.path.join(m.base, "no-such-source")
        not_dir = os.path.join(m.base, "a-file")
        with open(not_dir, "w"):
            pass
        full = os.path.join(m.base, "full")
        os.mkdir(full)
        for target in (full, not_dir, m.mountpoint):  # if a bad mount succeeded after all
            self.addCleanup(harness.release_mount, target)
        with open(os.path.join(full, "occupied"), "w"):
            pass
        cases = [
            ("missing source", [missing, m.mountpoint, "--python", py.path], missing),
            ("non-empty mount point", [m.source, full, "--python", py.path], full),
            ("mount point is a file", [m.source, not_dir, "--python", py.path], not_dir),
            ("no interpreter", [m.source, m.mountpoint, "--python", "/nonexistent"],
             "/nonexistent"),
        ]
        for what, args, mentions in cases:
            with self.subTest(case=what):
                started = time.monotonic()
                proc = harness.run_tool(base + args + common, timeout=60)
                self.one_line_error(proc, mentions)
                self.assertLess(time.monotonic() - started, 30)
                self.assertFalse(harness.is_mounted(m.mountpoint))
                self.assertFalse(harness.is_mounted(full))
        self.assertEqual(os.listdir(full), ["occupied"])
        with self.subTest(case="unmount of something not mounted"):
            self.one_line_error(harness.run_tool([m.binary, "unmount", m.mountpoint]),
                                m.mountpoint)

    def test_mounting_over_a_live_mount_is_refused(self):
        py = self.pythons[-1]
        m = self.mount({"m.py": "M = 1\n"}, pythons=[py])
        proc = harness.run_tool([m.binary, "mount", m.source, m.mountpoint, "--store", m.store,
                                 "--python", py.path, "--io-uring", "off"], timeout=60)
        self.one_line_error(proc, "already a live pycachefs mount")
        # The first mount still serves.
        self.assertPythonOk(harness.run_python(py, "import m", sys_path=[m.mountpoint]))
        self.assertEqual(len([x for x in harness.mounts() if x[0] == m.mountpoint]), 1)

    def test_bare_o_form(self):
        py = self.pythons[-1]
        m = self.mount(PKG_TREE, pythons=[py], mount_class=BareFormMount, use_pid_file=False)
        self.assertTrue(harness.is_mounted(m.mountpoint))
        st = m.stats()
        self.assertEqual(os.path.realpath(st["store"]), os.path.realpath(m.store))
        self.assertEqual(list(st["interpreters"]), [py.tag])
        self.assertEqual(st["pid"], m.pid)
        proc = harness.run_python(py, "import pkg.a; print(pkg.a.A)", args=["-v"],
                                  sys_path=[m.mountpoint])
        self.assertPythonOk(proc)
        self.assertEqual(proc.stdout.strip(), "1")
        pycs, _ = harness.code_object_sources(proc.stderr)
        self.assertIn(m.mnt("pkg", "__pycache__", py.pyc_name("a")), pycs)
        self.assertEqual(m.unmount().returncode, 0)
        self.assertNoMountLeft(m)

    def test_mount_8_through_mount_fuse3(self):
        py = self.pythons[-1]
        m = self.mount(PKG_TREE, pythons=[py], mount_class=Mount8Mount)
        with open("/proc/mounts") as f:
            self.assertIn("fuse.pycachefs", f.read())
        proc = harness.run_python(py, "import pkg.a; print(pkg.a.A)", sys_path=[m.mountpoint])
        self.assertPythonOk(proc)
        self.assertEqual(proc.stdout.strip(), "1")
        self.assertGreaterEqual(harness.interpreter_stats(m.stats(), py.tag)["pycs_served"], 1)
        self.assertEqual(m.unmount().returncode, 0)
        self.assertNoMountLeft(m)

    def test_mount_with_its_output_in_pipes_returns(self):
        """`pycachefs mount` whose output is read through pipes (`$(pycachefs mount ...)`, a
        subprocess with captured output) returns once the mount is live: no thread of the
        daemon keeps the caller's pipes open (the look-ahead's thread has a file table of its
        own, copied before the daemon let go of its caller's stdio: it held them once)."""
        py = self.pythons[-1]
        m = harness.Mount(PKG_TREE, pythons=[py])
        self.addCleanup(m.close)
        try:
            proc = subprocess.run(m.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=harness.clean_env(), cwd="/",
                                  timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("pycachefs mount with piped output did not return: the daemon holds the "
                      "pipes")
        finally:
            if harness.is_mounted(m.mountpoint):
                m.pid = m._read_pid()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(harness.is_mounted(m.mountpoint))
        self.assertEqual(m.unmount().returncode, 0)

    def test_extended_attributes_pass_through(self):
        py = self.pythons[-1]
        m = harness.Mount(PKG_TREE, pythons=[py])
        self.addCleanup(m.close)
        try:
            os.setxattr(m.src("pkg", "a.py"), "user.pcfs-test", b"value")
        except OSError as e:
            self.skipTest("no user xattrs on the source filesystem: %s" % e)
        m.start()
        self.assertEqual(os.getxattr(m.mnt("pkg", "a.py"), "user.pcfs-test"), b"value")
        self.assertIn("user.pcfs-test", os.listxattr(m.mnt("pkg", "a.py")))
        with self.assertRaises(OSError):
            os.setxattr(m.mnt("pkg", "a.py"), "user.other", b"x")  # read-only mount
        # The stats attribute exists only on the mount root.
        self.assertIn(b'"pid"', os.getxattr(m.mountpoint, "user.pycachefs.stats"))

    def test_unmount_and_lazy_unmount(self):
        py = self.pythons[-1]
        m = self.mount(PKG_TREE, pythons=[py])
        self.assertIsNotNone(m.pid)
        family = [m.pid] + harness.descendants(m.pid)
        proc = m.unmount()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNoMountLeft(m)
        self.assertTrue(harness.wait_until(
            lambda: not any(harness.pid_alive(p) for p in family), 15))

        m2 = self.mount(PKG_TREE, pythons=[py])
        busy = open(m2.mnt("pkg", "a.py"))  # keeps the mount busy
        try:
            proc = m2.unmount(lazy=True)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertFalse(harness.is_mounted(m2.mountpoint), "lazy unmount must detach now")
            self.assertEqual(busy.read(), "A = 1\n", "open files keep working after detach")
        finally:
            busy.close()
        self.assertTrue(m2.wait_daemon_exit(15), "daemon must exit once the last file closed")

    def test_sigterm_unmounts(self):
        py = self.pythons[-1]
        with self.subTest(mode="daemonized"):
            m = self.mount(PKG_TREE, pythons=[py])
            family = [m.pid] + harness.descendants(m.pid)
            os.kill(m.pid, signal.SIGTERM)
            self.assertNoMountLeft(m)
            self.assertTrue(harness.wait_until(
                lambda: not any(harness.pid_alive(p) for p in family), 15))
        with self.subTest(mode="foreground -f"):
            m = self.mount(PKG_TREE, pythons=[py], foreground=True)
            self.assertTrue(harness.is_mounted(m.mountpoint))
            self.assertIsNone(m.process.poll(), "-f must stay in the foreground")
            m.process.send_signal(signal.SIGTERM)
            self.assertTrue(m.wait_daemon_exit(15))
            self.assertEqual(m.process.returncode, 0, m.output_tail())
            self.assertNoMountLeft(m)

    def test_stats_json(self):
        m = self.mount(PKG_TREE)
        st = m.stats()
        with open(m.pid_file) as f:
            self.assertEqual(st["pid"], int(f.read().strip()))
        self.assertEqual(os.path.realpath(st["source"]), os.path.realpath(m.source))
        self.assertEqual(os.path.realpath(st["mountpoint"]), os.path.realpath(m.mountpoint))
        self.assertEqual(os.path.realpath(st["store"]), os.path.realpath(m.store))
        self.assertEqual(set(st["totals"]), set(harness.STAT_KEYS) | set(st["totals"]))
        for key in harness.STAT_KEYS:
            self.assertIn(key, st["totals"])
            self.assertEqual(st["totals"][key], 0, "fresh mount: %s" % key)
        self.assertEqual(sorted(st["interpreters"]), sorted(p.tag for p in self.pythons))
        for py in self.pythons:
            entry = st["interpreters"][py.tag]
            self.assertEqual(os.path.realpath(entry["path"]), os.path.realpath(py.path))
            for key in harness.STAT_KEYS:
                self.assertIn(key, entry)
        py = self.pythons[-1]
        # Import every module of pkg: the daemon may compile siblings ahead of time, so only
        # the whole directory gives an exact count (pkg/__init__, pkg/a, pkg/b).
        self.assertPythonOk(harness.run_python(py, "import pkg.a, pkg.b",
                                               sys_path=[m.mountpoint]))
        st = m.stats()
        mine = st["interpreters"][py.tag]
        self.assertEqual(mine["compiles"], 3, repr(mine))
        self.assertGreater(mine["bytes_served"], 0)
        self.assertGreater(mine["compile_seconds"], 0)
        for key in ("compiles", "pycs_served", "bytes_served", "compile_errors"):
            self.assertEqual(st["totals"][key],
                             sum(e[key] for e in st["interpreters"].values()), key)
        # What reached the daemon, by request kind: 3 pyc LOOKUPs and, for CPython <= 3.13,
        # one TCGETS each; the pycs reach the page cache without READs.
        self.assertGreaterEqual(st["requests"]["lookup"], 3, repr(st["requests"]))
        if st["pyc_files"]["links"]:
            # Link mode: each pyc is a real file the kernel reads without the daemon.
            self.assertGreaterEqual(st["pyc_files"]["written"], 3, repr(st))
            self.assertEqual(st["pyc_reads"], 0, repr(st))
        else:
            self.assertGreaterEqual(st["pyc_reads"] + st["page_cache_pushes"], 3, repr(st))
        proc = harness.run_tool([m.binary, "stats", m.mountpoint])  # human form works too
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("requests     ", proc.stdout)
        self.assertRegex(proc.stdout, r"page cache   \d+ pycs pushed by the daemon, \d+ pyc READs")
        self.assertRegex(proc.stdout, r"sources      \d+ read")
        self.assertRegex(proc.stdout, r"pyc files    (links to /\S+: \d+ files|FUSE files; links)")
        self.assertRegex(proc.stdout, r"look-ahead   (\d+ jobs, \d+ lookups \(\d+ found\), \d+ dropped"
                                      r".* \d+ files read ahead \(\d+ bytes\)|off)")

    def test_real_pycache_hidden_by_default_shown_on_request(self):
        py = self.pythons[-1]
        tree = {"pkg": {"__init__.py": "", "mod.py": "VALUE = 'ok!'\n",
                        "__pycache__": {"marker.txt": "real pycache\n"}}}

        def plant_lying_pyc(m):
            # A pyc whose header matches mod.py's mtime and size, but whose body says 'bad':
            # CPython would accept it, so serving it would be visible.
            code = ("import importlib._bootstrap_external as be, marshal, os, sys\n"
                    "src = sys.argv[1]; st = os.stat(src)\n"
                    "code = compile(\"VALUE = 'bad'\\n\", src, 'exec')\n"
                    "data = bytearray(be.MAGIC_NUMBER) + bytes(4) if sys.version_info >= (3, 7)"
                    " else bytearray(be.MAGIC_NUMBER)\n"
                    "data += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, 'little')\n"
                    "data += (st.st_size & 0xFFFFFFFF).to_bytes(4, 'little')\n"
                    "data += marshal.dumps(code)\n"
                    "open(sys.argv[2], 'wb').write(data)\n")
            proc = harness.run_python(py, code, argv=[m.src("pkg", "mod.py"),
                                                      m.src("pkg", "__pycache__",
                                                            py.pyc_name("mod"))])
            self.assertPythonOk(proc, "planting a pyc")

        m = self.mount(tree, pythons=[py], prepare=plant_lying_pyc)
        listing = os.listdir(m.mnt("pkg", "__pycache__"))
        self.assertNotIn("marker.txt", listing)
        self.assertFalse(os.path.exists(m.mnt("pkg", "__pycache__", "marker.txt")))
        self.assertIn(py.pyc_name("mod"), listing)
        proc = harness.run_python(py, "import pkg.mod; print(pkg.mod.VALUE)",
                                  sys_path=[m.mountpoint])
        self.assertPythonOk(proc)
        self.assertEqual(proc.stdout.strip(), "ok!", "the real (stale) pyc leaked through")
        m.assert_source_unchanged(self)

        shown = self.mount(tree, pythons=[py], args=["--real-pycache", "show"])
        with open(shown.mnt("pkg", "__pycache__", "marker.txt")) as f:
            self.assertEqual(f.read(), "real pycache\n")
        self.assertIn("marker.txt", os.listdir(shown.mnt("pkg", "__pycache__")))
        shown.assert_source_unchanged(self)

    def test_listing_virtual_pycache_does_not_compile(self):
        m = self.mount(PKG_TREE)
        self.assertIn("__pycache__", os.listdir(m.mnt("pkg")))
        self.assertNotIn("__pycache__", os.listdir(m.mnt("data")))
        self.assertNotIn("__pycache__", os.listdir(m.mountpoint), "root has no *.py")
        listing = set(os.listdir(m.mnt("pkg", "__pycache__")))
        proc = subprocess.run(["ls", "-1", m.mnt("pkg", "__pycache__")], stdout=subprocess.PIPE,
                              env=harness.clean_env(), universal_newlines=True, timeout=30)
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(set(proc.stdout.split()), listing)
        for py in self.pythons:
            for base in ("__init__", "a", "b"):
                self.assertIn(py.pyc_name(base), listing)
        self.assertFalse([n for n in listing if n.startswith("notes.")], listing)
        self.assertTrue(all(n.endswith(".pyc") for n in listing), listing)
        self.assertEqual(m.stats()["totals"]["compiles"], 0, "listing must not compile")

    def test_read_only_mount_gives_erofs(self):
        m = self.mount(PKG_TREE, pythons=self.pythons[-1:])
        pyc = m.mnt("pkg", "__pycache__", self.pythons[-1].pyc_name("a"))
        attempts = {
            "create": lambda: open(m.mnt("pkg", "new.py"), "x").close(),
            "append": lambda: open(m.mnt("pkg", "a.py"), "a").close(),
            "truncate": lambda: os.truncate(m.mnt("pkg", "a.py"), 0),
            "mkdir": lambda: os.mkdir(m.mnt("newdir")),
            "unlink": lambda: os.unlink(m.mnt("pkg", "b.py")),
            "rename": lambda: os.rename(m.mnt("pkg", "b.py"), m.mnt("pkg", "c.py")),
            "chmod": lambda: os.chmod(m.mnt("pkg", "a.py"), 0o600),
            "utime": lambda: os.utime(m.mnt("pkg", "a.py"), (1, 1)),
            "create in __pycache__": lambda: open(pyc + ".1234", "xb").close(),
            "write a pyc": lambda: open(pyc, "wb").close(),
        }
        with open(pyc, "rb") as f:  # looked up: a link or a FUSE file
            before = f.read()
        links = m.stats()["pyc_files"]["links"]
        for what, attempt in attempts.items():
            with self.subTest(op=what):
                with self.assertRaises(OSError) as ctx:
                    attempt()
                expected = {errno.EROFS}
                if links and what == "write a pyc":
                    # Through the link, the real file refuses: immutable (root) or 0444.
                    expected = {errno.EPERM, errno.EACCES}
                self.assertIn(ctx.exception.errno, expected, "%s: %s" % (what, ctx.exception))
        with open(pyc, "rb") as f:
            self.assertEqual(f.read(), before)
        m.assert_source_unchanged(self)

    def test_rw_mount_refuses_cpython_pyc_writes_silently(self):
        if len(self.pythons) < 2:
            self.skipTest("needs two interpreters with different cache tags")
        served, other = self.pythons[-1], self.pythons[0]
        m = self.mount(PKG_TREE, pythons=[served], rw=True)
        # `other` is not served: it finds no pyc, compiles itself and tries to write one.
        proc = harness.run_python(other, "import pkg.a; print(pkg.a.A)", args=["-v"],
                                  sys_path=[m.mountpoint])
        self.assertPythonOk(proc, "import with an unserved interpreter")
        self.assertEqual(proc.stdout.strip(), "1")
        _, sources = harness.code_object_sources(proc.stderr)
        self.assertIn(m.mnt("pkg", "a.py"), sources, "expected CPython to compile itself")
        self.assertFalse(os.path.exists(m.mnt("pkg", "__pycache__", other.pyc_name("a"))))
        with self.assertRaises(OSError, msg="pyc temp file created in the virtual __pycache__"):
            with open(m.mnt("pkg", "__pycache__", served.pyc_name("a") + ".4242"), "xb") as f:
                f.write(b"junk")
        # The served interpreter still gets its pyc, and ordinary writes do reach the source.
        proc = harness.run_python(served, "import pkg.a; print(pkg.a.A)", args=["-v"],
                                  sys_path=[m.mountpoint])
        self.assertPythonOk(proc)
        pycs, _ = harness.code_object_sources(proc.stderr)
        self.assertIn(m.mnt("pkg", "__pycache__", served.pyc_name("a")), pycs)
        with open(m.mnt("pkg", "written.txt"), "w") as f:
            f.write("through the mount\n")
        with open(m.src("pkg", "written.txt")) as f:
            self.assertEqual(f.read(), "through the mount\n")
        pycache = [d for d, _, _ in os.walk(m.source) if os.path.basename(d) == "__pycache__"]
        self.assertEqual(pycache, [], "nothing may appear in the source's __pycache__")


if __name__ == "__main__":
    harness.main()
