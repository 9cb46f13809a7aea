"""Load and races: 16 processes import at random from a mounted tree while another process edits
the sources continuously (value changes, same-size and same-second edits included). Every import
must run the code of a version of the source that existed around import time, never older than
what was on disk (documented freshness bound) before the import began; no deadlock, bounded
daemon memory.

Run by CTest, or by hand: python3 -I -B tests/integration/test_load.py -v
"""

import json
import os
import random
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MODULES = 12
IMPORTERS = 16
DURATION = 8.0  # seconds of editing under load
# How long a change beneath the mount may take to reach importers (documented bound: 1 s; the
# measured delay is milliseconds). An import that started later than this after an edit must see
# that edit or a newer one.
FRESHNESS_BOUND = 1.0

# Each importer process: repeatedly picks a module, records the time, imports it fresh
# (a new module object, the import system's caches invalidated), records VALUE.
IMPORTER = r"""
import importlib, json, random, sys, time
count, until, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
out = []
while time.time() < until:
    name = "lpkg.m%02d" % rng.randrange(count)
    importlib.invalidate_caches()
    sys.modules.pop(name, None)
    start = time.time()
    mod = importlib.import_module(name)
    out.append((name, start, time.time(), mod.VALUE))
print(json.dumps(out))
"""


def module_source(value):
    # Fixed width: most edits keep the file size, so CPython's own (mtime, size) check could not
    # tell the versions apart within one second.
    return "def f(x):\n    return x + 1\n\nVALUE = %8d\n" % value


class LoadTest(harness.MountTestCase):

    def test_sixteen_importers_and_a_continuous_editor(self):
        py = max(self.pythons, key=lambda p: p.version)
        tree = {"lpkg": dict({"__init__.py": ""},
                             **{"m%02d.py" % i: module_source(0) for i in range(MODULES)})}
        m = self.mount(tree, pythons=[py])
        history = {i: [(0.0, 0)] for i in range(MODULES)}  # module -> [(time written, value)]
        stop = threading.Event()
        edits = [0]

        def editor():
            rng = random.Random(1)
            value = 0
            while not stop.is_set():
                i = rng.randrange(MODULES)
                value += 1
                path = m.src("lpkg", "m%02d.py" % i)
                st = os.stat(path)
                data = module_source(value).encode()
                if rng.random() < 0.5:
                    # In place, one write of the same size (never an empty or partial file),
                    # and the old mtime put back: CPython's own check cannot see this edit.
                    fd = os.open(path, os.O_WRONLY)
                    os.write(fd, data)
                    os.close(fd)
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                else:
                    # As editors save: a new file renamed over the old one.
                    tmp = path + ".tmp"
                    with open(tmp, "wb") as f:
                        f.write(data)
                    os.rename(tmp, path)
                history[i].append((time.time(), value))
                edits[0] += 1
                time.sleep(rng.uniform(0.001, 0.02))

        until = time.time() + DURATION
        procs = [subprocess.Popen([py.path, "-c", IMPORTER, str(MODULES), str(until), str(n)],
                                  env=harness.clean_env({"PYTHONPATH": m.mountpoint}), cwd="/",
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True)
                 for n in range(IMPORTERS)]
        thread = threading.Thread(target=editor)
        thread.start()
        results = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=DURATION + 120)
                self.assertEqual(p.returncode, 0, "importer failed:\n" + err[-3000:])
                results.extend(json.loads(out))
        finally:
            stop.set()
            thread.join()
            for p in procs:
                if p.poll() is None:
                    p.kill()

        stale = []
        for name, start, end, value in results:
            i = int(name[-2:])
            versions = history[i]
            values = [v for _, v in versions]
            self.assertIn(value, values, "%s returned a value never written: %r" % (name, value))
            # The newest version written at least FRESHNESS_BOUND before the import began.
            floor = max(v for t, v in versions if t <= start - FRESHNESS_BOUND)
            # The newest version written before the import ended.
            ceiling = max(v for t, v in versions if t <= end + 0.05)
            if not floor <= value <= ceiling:
                stale.append((name, round(start, 3), value, floor, ceiling))
        harness.log("%d imports by %d processes during %d edits; %d outside bounds"
                    % (len(results), IMPORTERS, edits[0], len(stale)))
        self.assertFalse(stale, "imports ran code older than the freshness bound: %r" % stale[:10])
        self.assertGreater(len(results), IMPORTERS * 5)

        rss = 0
        with open("/proc/%d/status" % m.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1])
        harness.log("daemon peak RSS after the load: %.1f MiB" % (rss / 1024.0))
        self.assertLess(rss, 512 * 1024, "daemon memory grew unbounded: %d KiB" % rss)


if __name__ == "__main__":
    harness.main()
