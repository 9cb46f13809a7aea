"""Edits beneath a mount show up within the documented bound; edits through a --rw mount show
up at the very next import. Includes the hard case: same size, same mtime (CPython's own
timestamp check cannot notice it, so the daemon must).

Run by CTest, or by hand: python3 -I -B tests/integration/test_freshness.py -v
"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

VALUE_CODE = r"""
import json, sys
try:
    v = getattr(__import__(sys.argv[1]), "VALUE", None)
except ModuleNotFoundError:
    v = "<missing>"
except SyntaxError:
    v = "<syntax-error>"
print(json.dumps(v))
"""


def modname(prefix, py):
    return "%s_%s" % (prefix, py.tag.replace("-", "_"))


def write_same_stat(path, text):
    """Rewrites path with text of the same length and puts the old mtime back (ns exact)."""
    st = os.stat(path)
    data = text.encode()
    if len(data) != st.st_size:
        raise ValueError("same-size edit needs %d bytes, got %d" % (st.st_size, len(data)))
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise AssertionError("could not restore size/mtime of %s" % path)


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


class FreshnessTest(harness.MountTestCase):
    # The daemon picks fanotify when it may (root here); the subclass below forces inotify.
    WATCHER_ARGS = ()

    def value(self, m, py, module):
        proc = harness.run_python(py, VALUE_CODE, sys_path=[m.mountpoint], argv=[module])
        self.assertPythonOk(proc, "%s import %s" % (py.tag, module))
        return json.loads(proc.stdout)

    def poll(self, m, py, module, want, since, what):
        """Imports until VALUE == want; returns the observed delay (start of the first run that
        saw it, relative to `since`). Fails after FRESHNESS_POLL_SECONDS."""
        got = None
        while True:
            started = time.monotonic()
            got = self.value(m, py, module)
            if got == want:
                delay = started - since
                harness.log("freshness %s %-28s %.3f s" % (py.tag, what, delay))
                return delay
            if time.monotonic() - since > harness.FRESHNESS_POLL_SECONDS:
                self.fail("%s: %s not visible after %.1f s: still %r (want %r)\n%s"
                          % (py.tag, what, harness.FRESHNESS_POLL_SECONDS, got, want,
                             m.log_tail(15)))
            time.sleep(0.05)

    def test_edits_beneath_the_mount(self):
        tree = {}
        for py in self.pythons:
            tree[modname("f", py) + ".py"] = "VALUE = 'v1'\n"
            tree[modname("g", py) + ".py"] = "VALUE = (\n"
        m = self.mount(tree, args=list(self.WATCHER_ARGS))
        delays = []
        for py in self.pythons:
            with self.subTest(python=py.tag):
                f, g, late = modname("f", py), modname("g", py), modname("late", py)
                self.assertEqual(self.value(m, py, f), "v1")

                write_file(m.src(f + ".py"), "VALUE = 'v2-longer'\n")
                delays.append(self.poll(m, py, f, "v2-longer", time.monotonic(),
                                        "content+size change"))

                write_same_stat(m.src(f + ".py"), "VALUE = 'v3-longer'\n")
                delays.append(self.poll(m, py, f, "v3-longer", time.monotonic(),
                                        "same size, same mtime"))

                self.assertEqual(self.value(m, py, g), "<syntax-error>")
                write_file(m.src(g + ".py"), "VALUE = 'fixed'\n")
                delays.append(self.poll(m, py, g, "fixed", time.monotonic(),
                                        "syntax error fixed"))

                self.assertEqual(self.value(m, py, late), "<missing>")
                write_file(m.src(late + ".py"), "VALUE = 'late'\n")
                delays.append(self.poll(m, py, late, "late", time.monotonic(),
                                        "new module"))

                os.unlink(m.src(f + ".py"))
                delays.append(self.poll(m, py, f, "<missing>", time.monotonic(),
                                        "module deleted"))
        if delays:
            harness.log("freshness beneath the mount: max %.3f s, mean %.3f s over %d changes"
                        % (max(delays), sum(delays) / len(delays), len(delays)))
        pycache = [d for d, _, _ in os.walk(m.source) if os.path.basename(d) == "__pycache__"]
        self.assertEqual(pycache, [])

    def remount(self, m):
        proc = m.unmount()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertTrue(m.wait_daemon_exit(15))
        m.pid = None
        m.start()

    def test_edits_while_unmounted(self):
        """A fresh mount of an unchanged tree reads no source: the store keeps what each source
        stamp (inode, size, mtime and ctime, within one boot) hashed to. A source edited while
        nothing was mounted, same size and mtime put back, is read again and its new content
        served (its ctime changed); the other sources are still not read."""
        tree = {modname("u", py) + ".py": "VALUE = 'u1'\n" for py in self.pythons}
        m = self.mount(tree, args=list(self.WATCHER_ARGS))
        # Stamps younger than 2 s are never trusted (a same-size write may follow in the same
        # timestamp tick): the tree was written just now.
        time.sleep(2.2)
        for py in self.pythons:
            self.assertEqual(self.value(m, py, modname("u", py)), "u1")
        # (A cold store reads some twice: once to hash, once to compile.)
        self.assertGreaterEqual(m.stats()["sources_read"], len(self.pythons))
        self.remount(m)
        for py in self.pythons:
            self.assertEqual(self.value(m, py, modname("u", py)), "u1")
        self.assertEqual(m.stats()["sources_read"], 0, "an unchanged source was read again")
        m.unmount()
        self.assertTrue(m.wait_daemon_exit(15))
        edited = modname("u", self.pythons[0])
        write_same_stat(m.src(edited + ".py"), "VALUE = 'u2'\n")
        time.sleep(2.2)  # past the racy window: read once, then trusted
        m.pid = None
        m.start()
        for py in self.pythons:
            want = "u2" if modname("u", py) == edited else "u1"
            self.assertEqual(self.value(m, py, modname("u", py)), want)
        # The edited source only: read to compile it, and maybe once more by compile-ahead to
        # scan its imports (its new content's list is not stored yet). Any other read would be
        # an unchanged source read again.
        self.assertIn(m.stats()["sources_read"], (1, 2))

    def test_edits_through_rw_mount_seen_by_next_import(self):
        tree = {modname("f", py) + ".py": "VALUE = 'v1'\n" for py in self.pythons}
        m = self.mount(tree, rw=True, args=list(self.WATCHER_ARGS))
        for py in self.pythons:
            with self.subTest(python=py.tag):
                f, new = modname("f", py), modname("new", py)
                self.assertEqual(self.value(m, py, f), "v1")

                write_file(m.mnt(f + ".py"), "VALUE = 'rw-2-long'\n")
                self.assertEqual(self.value(m, py, f), "rw-2-long", "after a write")
                with open(m.src(f + ".py")) as src:
                    self.assertEqual(src.read(), "VALUE = 'rw-2-long'\n", "write-through")

                write_same_stat(m.mnt(f + ".py"), "VALUE = 'rw-3-long'\n")
                self.assertEqual(self.value(m, py, f), "rw-3-long",
                                 "after a same-size write with the mtime put back")

                tmp = m.mnt(f + ".py.tmp")  # an editor's save: write a temp file, rename it
                write_file(tmp, "VALUE = 'rw-4-renamed'\n")
                os.replace(tmp, m.mnt(f + ".py"))
                self.assertEqual(self.value(m, py, f), "rw-4-renamed", "after rename over")

                write_file(m.mnt(new + ".py"), "VALUE = 'created'\n")
                self.assertEqual(self.value(m, py, new), "created", "new module")
                self.assertTrue(os.path.isfile(m.src(new + ".py")))
        pycache = [d for d, _, _ in os.walk(m.source) if os.path.basename(d) == "__pycache__"]
        self.assertEqual(pycache, [], "CPython's pyc writes must not reach the source")


class FreshnessInotifyTest(FreshnessTest):
    """The same edits with the per-directory inotify watcher (what non-root daemons use)."""
    WATCHER_ARGS = ("--watcher", "inotify")

    def mount(self, *a, **kw):
        m = super().mount(*a, **kw)
        self.assertIn("inotify", m.stats()["watching"])
        return m


if __name__ == "__main__":
    harness.main()
