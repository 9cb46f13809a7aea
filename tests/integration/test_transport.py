"""FUSE over io_uring: when it is used, that every CPU's queue serves, and that a request blocked
on a compile does not stall the others. (The whole integration suite also runs once over
io_uring: CTest's integration_uring.* tests.)

Needs root (it flips /sys/module/fuse/parameters/enable_uring and puts it back) and a kernel
with FUSE over io_uring; otherwise it is skipped. Run by CTest, or by hand:
python3 -I -B tests/integration/test_transport.py -v
"""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

TREE = {
    "pkg": {"__init__.py": "", "a.py": "A = 1\n", "b.py": "from . import a\nB = a.A + 1\n"},
    "many": {"m%03d.py" % i: "V = %d\n" % i for i in range(200)},
}


def set_switch(value):
    with open(harness.URING_SWITCH, "w") as f:
        f.write(value)


class TransportTest(harness.MountTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.saved = harness.uring_switch()
        if cls.saved is None:
            raise unittest.SkipTest("this kernel has no FUSE over io_uring")
        if os.geteuid() != 0:
            raise unittest.SkipTest("switching FUSE over io_uring on and off needs root")

    @classmethod
    def tearDownClass(cls):
        set_switch(cls.saved)

    def py(self):
        return [p for p in self.pythons if p.version[:2] == (3, 11)][0]

    def test_on_without_the_kernel_switch_fails_clearly_and_mounts_nothing(self):
        set_switch("N")
        m = harness.Mount(TREE, pythons=[self.py()], args=["--io-uring", "on"])
        self.addCleanup(m.close)
        with self.assertRaises(AssertionError) as ctx:
            m.start()
        self.assertIn("enable_uring", str(ctx.exception))
        self.assertFalse(harness.is_mounted(m.mountpoint))

    def test_auto_follows_the_kernel_switch(self):
        for switch, expected in (("N", "/dev/fuse"), ("Y", "io_uring")):
            set_switch(switch)
            with self.subTest(enable_uring=switch):
                m = self.mount(TREE, pythons=[self.py()], args=["--io-uring", "auto"])
                proc = harness.run_python(self.py(), "import pkg.b; print(pkg.b.B)",
                                          sys_path=[m.mountpoint])
                self.assertPythonOk(proc)
                self.assertEqual(proc.stdout.strip(), "2")
                self.assertEqual(m.stats()["transport"], expected)
                m.close()

    def test_off_and_the_default_ignore_the_kernel_switch(self):
        set_switch("Y")
        for args, flag in ((["--io-uring", "off"], True), ([], False)):
            with self.subTest(args=args):
                m = self.mount(TREE, pythons=[self.py()], args=args, transport_flag=flag)
                os.listdir(m.mnt("many"))
                st = m.stats()
                self.assertEqual(st["transport"], "/dev/fuse")
                self.assertNotIn("ring_requests", st)
                m.close()

    def test_every_cpu_queue_serves_its_own_processes(self):
        set_switch("Y")
        m = self.mount(TREE, pythons=[self.py()], args=["--io-uring", "on"])
        cpus = sorted(os.sched_getaffinity(0))
        before = m.stats()
        self.assertEqual(before["transport"], "io_uring")
        # One queue per possible CPU (which may be more than the online ones).
        self.assertGreaterEqual(before["ring_queues"], len(cpus))
        for cpu in cpus:
            # Requests are queued on the requester's CPU: names never looked up before each
            # cost a LOOKUP, so the queue of the CPU the process is pinned to must serve them.
            was = m.stats()["ring_requests_per_queue"][cpu]
            code = ("import os\nos.sched_setaffinity(0, {%d})\n"
                    "for i in range(300): os.path.exists(%r + '/nope%d-' + str(i))\n"
                    % (cpu, m.mountpoint, cpu))
            self.assertPythonOk(harness.run_python(self.py(), code))
            now = m.stats()["ring_requests_per_queue"][cpu]
            self.assertGreaterEqual(now - was, 300, "queue %d served %d" % (cpu, now - was))
        human = harness.run_tool([m.binary, "stats", m.mountpoint])
        self.assertEqual(human.returncode, 0, human.stderr)
        self.assertIn("transport    io_uring (%d ring workers; requests per CPU queue "
                      % (2 * before["ring_queues"]), human.stdout)

    def test_a_request_waiting_on_a_compile_does_not_stall_its_queue(self):
        set_switch("Y")
        # Thousands of functions: seconds of compile time for the first import.
        slow = "".join("def f%d(a, b):\n    return a * %d + b\n" % (i, i) for i in range(150000))
        tree = dict(TREE, slow={"__init__.py": "", "big.py": slow})
        m = self.mount(tree, pythons=[self.py()], args=["--io-uring", "on", "--compile-ahead", "off"])
        cpu = sorted(os.sched_getaffinity(0))[0]
        env = harness.clean_env()
        importer = subprocess.Popen(
            [self.py().path, "-S", "-c",
             "import os, sys; os.sched_setaffinity(0, {%d}); sys.path.insert(0, %r); "
             "import slow.big" % (cpu, m.mountpoint)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: importer.poll() is None and importer.kill())
        # Wait until the importer's LOOKUP of the pyc is with the daemon, which is compiling.
        self.assertTrue(harness.wait_until(
            lambda: self._waiting_on_fuse(importer.pid) and self._compiling(m), 30),
            "the importer never reached the compile")
        # Requests that need no compile (a listing, lookups), so that even a slow sanitizer
        # build of the daemon answers them long before the big compile ends.
        code = ("import os\nos.sched_setaffinity(0, {%d})\n"
                "print(sum(n.endswith('.py') for n in os.listdir(%r)))\n"
                "print(sum(os.path.exists(%r + '/m%%03d.py' %% i) for i in range(50)))\n"
                % (cpu, m.mnt("many"), m.mnt("many")))
        other = harness.run_python(self.py(), code, timeout=60)
        still_compiling = self._waiting_on_fuse(importer.pid)
        self.assertPythonOk(other, "a second process on the same CPU")
        self.assertEqual(other.stdout.split(), ["200", "50"])
        self.assertTrue(still_compiling,
                        "the importer got its reply first: the test proves nothing")
        out, err = importer.communicate(timeout=120)
        self.assertEqual(importer.returncode, 0, err.decode()[-2000:])

    def _waiting_on_fuse(self, pid):
        # The kernel function a process sleeps in while its FUSE request awaits the reply.
        try:
            with open("/proc/%d/wchan" % pid) as f:
                return f.read().strip() == "request_wait_answer"
        except OSError:
            return False

    def _compiling(self, m):
        # A compile worker (a child of the daemon) is running: it has the big module.
        for pid in harness.descendants(m.pid):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "R":
                        return True
            except OSError:
                pass
        return False


if __name__ == "__main__":
    harness.main()
