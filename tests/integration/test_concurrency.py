"""Eight processes import a cold tree at the same moment: all succeed, every module is compiled
exactly once, and unmounting leaves no daemon, worker or mount behind.

Run by CTest, or by hand: python3 -I -B tests/integration/test_concurrency.py -v
"""

import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MODULES_PER_PACKAGE = 12
PROCESSES = 8

# Waits for the go file so that all processes hit the cold tree together, then imports all.
IMPORT_ALL = r"""
import importlib, json, os, sys, time
go, package, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + 60
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.002)
total = 0
for i in range(count):
    total += importlib.import_module("%s.m%02d" % (package, i)).VALUE
print(json.dumps(total))
"""


def package_tree(name):
    files = {"__init__.py": "PACKAGE = %r\n" % name}
    for i in range(MODULES_PER_PACKAGE):
        body = "".join("def f%d(x):\n    return x * %d + %d\n\n" % (j, j, i) for j in range(40))
        # ORIGIN makes every file unique: the store is content-addressed, so identical files
        # in two packages would share one compile.
        files["m%02d.py" % i] = "import os, sys\n\nORIGIN = %r\n%sVALUE = %d\n" % (
            "%s.m%02d" % (name, i), body, i)
    return files


EXPECTED_TOTAL = sum(range(MODULES_PER_PACKAGE))


class ConcurrencyTest(harness.MountTestCase):

    def start_importers(self, m, package, pythons, go):
        procs = []
        for py in pythons:
            cmd = [py.path, "-c", IMPORT_ALL, go, package, str(MODULES_PER_PACKAGE)]
            procs.append((py, subprocess.Popen(
                cmd, env=harness.clean_env({"PYTHONPATH": m.mountpoint}), cwd="/",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)))
        return procs

    def finish(self, procs):
        results = []
        for py, p in procs:
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            results.append((py, p.returncode, out, err))
        return results

    def run_together(self, m, package, pythons):
        go = os.path.join(m.base, "go-" + package)
        procs = self.start_importers(m, package, pythons, go)
        time.sleep(0.5)  # let every interpreter start up and wait at the barrier
        started = time.monotonic()
        with open(go, "w"):
            pass
        results = self.finish(procs)
        harness.log("%d concurrent cold imports of %s: %.2f s"
                    % (len(procs), package, time.monotonic() - started))
        for py, rc, out, err in results:
            self.assertEqual(rc, 0, "%s failed: %s" % (py.tag, err[-2000:]))
            self.assertEqual(json.loads(out), EXPECTED_TOTAL)

    def test_eight_processes_cold_tree(self):
        newest = self.pythons[-1]
        mixed = [self.pythons[i % len(self.pythons)] for i in range(PROCESSES)]
        m = self.mount({"same": package_tree("same"), "mixed": package_tree("mixed")})
        n = MODULES_PER_PACKAGE + 1  # + __init__

        before = m.stats()
        with self.subTest(case="one interpreter, 8 processes"):
            self.run_together(m, "same", [newest] * PROCESSES)
            delta = harness.stats_delta(before, m.stats(), newest.tag)
            self.assertEqual(delta["compiles"], n, "each module compiled once: %r" % delta)
            self.assertEqual(delta["compile_errors"], 0)

        before = m.stats()
        with self.subTest(case="8 processes across interpreters"):
            self.run_together(m, "mixed", mixed)
            after = m.stats()
            for py in {p.tag: p for p in mixed}.values():
                delta = harness.stats_delta(before, after, py.tag)
                self.assertEqual(delta["compiles"], n, "%s: %r" % (py.tag, delta))

        # Unmount: no mount, no daemon, no worker left.
        self.assertIsNotNone(m.pid, "daemon pid unknown")
        family = [m.pid] + harness.descendants(m.pid)
        harness.log("daemon %d has %d descendant processes before unmount"
                    % (m.pid, len(family) - 1))
        proc = m.unmount()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNoMountLeft(m)
        self.assertTrue(harness.wait_until(
            lambda: not any(harness.pid_alive(p) for p in family), 15),
            "left behind: %r" % [p for p in family if harness.pid_alive(p)])
        m.assert_source_unchanged(self)


if __name__ == "__main__":
    harness.main()
