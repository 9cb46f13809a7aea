"""A synthesized pyc is no more readable than its source: a 0600 root-owned module gives another
user EACCES on every pyc, a 0644 module's pyc is readable and used by that user.

Needs root (useradd, allow_other). Run by CTest, or by hand:
python3 -I -B tests/integration/test_security.py -v
"""

import errno
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Prints {path: "ok:<first 4 bytes hex>" | errno name} for every path in argv.
PROBE_CODE = r"""
import errno, json, sys
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            out[path] = "ok:" + f.read()[:4].hex()
    except OSError as e:
        out[path] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""

TREE = {"public.py": "PUBLIC = 'for everyone'\n", "secret.py": "SECRET = 'root only'\n"}


@unittest.skipUnless(os.geteuid() == 0, "needs root (useradd, setpriv, allow_other)")
class TwoUsersTest(harness.MountTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.user_python = harness.python_for_other_users()
        if cls.user_python is None:
            raise AssertionError("no /usr/bin/python3.X usable by an unprivileged account")
        cls.magics = {}
        for py in cls.pythons + [cls.user_python]:
            proc = harness.run_python(py, "import importlib.util as u; print(u.MAGIC_NUMBER.hex())")
            cls.magics[py.tag] = proc.stdout.strip()

    def setUp(self):
        self.user = harness.TempUser()
        self.addCleanup(self.user.remove)

    def probe(self, m, names, user):
        paths = [m.mnt("__pycache__", py.pyc_name(n)) for n in names for py in self.pythons]
        paths += [m.mnt(n + ".py") for n in names]
        proc = harness.run_python(self.user_python, PROBE_CODE, argv=paths, user=user)
        self.assertPythonOk(proc, "probe as %r" % (user,))
        return json.loads(proc.stdout)

    def test_pyc_permissions_follow_the_source(self):
        def prepare(m):
            os.chmod(m.src("secret.py"), 0o600)
            os.chown(m.src("secret.py"), 0, 0)

        m = self.mount(TREE, prepare=prepare, args=["-o", "allow_other"])
        u = self.user
        for phase in ("cold", "after root read it", "warm"):
            if phase == "after root read it":
                as_root = self.probe(m, ["secret", "public"], None)
                for py in self.pythons:
                    for name in ("secret", "public"):
                        got = as_root[m.mnt("__pycache__", py.pyc_name(name))]
                        self.assertEqual(got, "ok:" + self.magics[py.tag], "root, %s %s"
                                         % (name, py.tag))
                continue
            res = self.probe(m, ["secret", "public"], (u.uid, u.gid))
            for py in self.pythons:
                with self.subTest(phase=phase, python=py.tag):
                    self.assertEqual(res[m.mnt("__pycache__", py.pyc_name("secret"))], "EACCES",
                                     "another user read the pyc of a 0600 source")
                    self.assertEqual(res[m.mnt("__pycache__", py.pyc_name("public"))],
                                     "ok:" + self.magics[py.tag])
            self.assertEqual(res[m.mnt("secret.py")], "EACCES")
            self.assertTrue(res[m.mnt("public.py")].startswith("ok:"))

        # The other user imports the public module from the served pyc (if its tag is served)
        # and gets CPython's PermissionError for the secret one.
        py = self.user_python
        proc = harness.run_python(py, "import public; print(public.PUBLIC)", args=["-v"],
                                  sys_path=[m.mountpoint], user=(u.uid, u.gid))
        self.assertPythonOk(proc, "import public as %s" % u.name)
        self.assertEqual(proc.stdout.strip(), "for everyone")
        if py.tag in {p.tag for p in self.pythons}:
            pycs, _ = harness.code_object_sources(proc.stderr)
            self.assertIn(m.mnt("__pycache__", py.pyc_name("public")), pycs)
        proc = harness.run_python(py, "import secret", sys_path=[m.mountpoint],
                                  user=(u.uid, u.gid))
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("PermissionError", proc.stderr)
        self.assertNotIn("root only", proc.stdout + proc.stderr)
        m.assert_source_unchanged(self)

    def test_without_allow_other_other_users_are_locked_out(self):
        m = self.mount(TREE, pythons=self.pythons[-1:])
        proc = harness.run_python(
            self.user_python,
            "import errno, os, sys\ntry:\n    os.listdir(sys.argv[1]); print('listed')\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])",
            argv=[m.mountpoint], user=(self.user.uid, self.user.gid))
        self.assertPythonOk(proc)
        self.assertEqual(proc.stdout.strip(), "EACCES")


if __name__ == "__main__":
    harness.main()
