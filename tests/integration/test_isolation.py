"""Isolation and containment of the daemon: the store is private (0700 directory, 0600 files,
whatever the umask), compile workers run with a minimal environment (no PYTHON* variables, no
user site, `-I -S`, cwd `/`) even when the daemon's own environment is poisoned, the daemon
writes nothing outside its store (and, with --rw, the source tree; checked with strace), and a
user who may not read a source can neither read nor stat nor trigger the compile of its pyc.

Needs root (strace attach, useradd, allow_other). Run by CTest, or by hand:
python3 -I -B tests/integration/test_isolation.py -v
"""

import codecs
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

TREE = {
    "pkg": {"__init__.py": "VALUE = 'pkg'\n",
            **{"m%d.py" % i: "VALUE = %d\ndef f():\n    return VALUE * 2\n" % i for i in range(6)},
            "broken.py": "def oops(:\n"},
    "other": {"solo.py": "VALUE = 'solo'\n"},
    # Alone in namespace packages: nothing compiles them ahead, so the importer's request does,
    # under the name CPython sees (below the mount), which a compile error or warning makes
    # CPython read back.
    "lone_error": {"broken.py": "return 1\n"},
    "lone_warning": {"warns.py": "x = 1\nassert (x, 1)\n"},
}
IMPORTS = ("import pkg, pkg.m0, pkg.m1, pkg.m2, pkg.m3, pkg.m4, pkg.m5, solo\n"
           "print(pkg.m5.f() + len(solo.VALUE))\n")
# Markers the poisoned environment would create if anything honoured it.
POISON_CODE = "open(%r, 'w').write('poisoned')\n"


def newest_and_oldest(pythons):
    by_version = sorted(pythons, key=lambda p: p.version)
    return [by_version[-1], by_version[0]] if len(by_version) > 1 else by_version


# ---------------------------------------------------------------------------------------------
# strace output

_LINE_RE = re.compile(r"^(?P<ts>\d+\.\d+) (?P<call>\w+)\((?P<args>.*)\)\s+=\s+"
                      r"(?P<ret>-?\d+|\?)(?P<rest>.*)$")
_FD_RE = re.compile(r"^(?:-?\d+|AT_FDCWD)<(?P<path>.*)>$")
_PROC_FD_RE = re.compile(r"^/proc/(?:self|thread-self|\d+)(?:/task/\d+)?/fd/(\d+)$")
_OPEN_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE")
# Calls that change the file system (every one of them counts, whatever its flags).
_MODIFYING = {"creat", "mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink",
              "unlinkat", "rmdir", "link", "linkat", "symlink", "symlinkat", "truncate",
              "ftruncate", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat",
              "lchown", "mknod", "mknodat"}
# Also traced, to follow descriptors (dup, F_DUPFD), working directories and which thread
# belongs to which process (clone), so `/proc/self/fd/N` and relative paths resolve.
TRACED = (["openat", "open", "creat", "chdir", "fchdir", "dup", "dup2", "dup3", "fcntl",
           "clone", "clone3", "fork", "vfork"] + sorted(_MODIFYING))


def split_args(args):
    """Top-level comma split of a strace argument list (strings and <paths> kept whole)."""
    out, cur, i, depth_angle, depth_brace = [], [], 0, 0, 0
    while i < len(args):
        c = args[i]
        if c == '"':
            j = i + 1
            while j < len(args) and args[j] != '"':
                j += 2 if args[j] == "\\" else 1
            cur.append(args[i:j + 1])
            i = j + 1
            continue
        if c == "<":
            depth_angle += 1
        elif c == ">" and depth_angle:
            depth_angle -= 1
        elif c in "{[":
            depth_brace += 1
        elif c in "}]":
            depth_brace -= 1
        elif c == "," and not depth_angle and not depth_brace:
            out.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    if cur:
        out.append("".join(cur).strip())
    return out


def _unescape(text):
    return os.fsdecode(codecs.escape_decode(text.encode("latin-1", "backslashreplace"))[0])


def unquote(token):
    """A strace string literal ("...", octal/hex/C escapes) as a str (surrogateescape)."""
    token = token.strip()
    if token.endswith("..."):
        token = token[:-3]
    if not (token.startswith('"') and token.endswith('"')):
        return None
    return _unescape(token[1:-1])


def fd_path(token):
    m = _FD_RE.match(token.strip())
    if not m:
        return None
    path = m.group("path")
    if path.endswith(" (deleted)"):
        path = path[:-len(" (deleted)")]
    return _unescape(path)


class _Process:
    def __init__(self, cwd, fds=None):
        self.cwd = cwd
        self.fds = dict(fds or {})


def parse_traces(files, initial_cwd="/", groups=None):
    """[(call, [target paths], raw line)] for every successful traced call in the `strace -ff
    -ttt -y` files {tid: path}, replayed in time order per process (threads share their
    process's descriptors and working directory). groups: {tid: tgid} known in advance."""
    lines = []
    for tid, path in files.items():
        with open(path, encoding="latin-1") as f:
            for line in f:
                m = _LINE_RE.match(line.rstrip("\n"))
                if m:
                    lines.append((float(m.group("ts")), tid, m))
    lines.sort(key=lambda x: x[0])
    group = dict(groups or {})
    procs = {}
    events = []

    def proc_of(tid):
        tgid = group.setdefault(tid, tid)
        return procs.setdefault(tgid, _Process(initial_cwd))

    for _, tid, m in lines:
        line = m.string
        if m.group("ret") == "?" or int(m.group("ret")) < 0:
            continue
        call, args, proc = m.group("call"), split_args(m.group("args")), proc_of(tid)
        ret_fd = fd_path(m.group("ret") + m.group("rest").strip())

        def resolve(dir_token, name_token):
            name = unquote(name_token)
            if name is None:
                return None
            fdm = _PROC_FD_RE.match(name)
            if fdm:
                return proc.fds.get(int(fdm.group(1)))
            if name.startswith("/"):
                return os.path.normpath(name)
            base = fd_path(dir_token) if dir_token is not None else proc.cwd
            return os.path.normpath(os.path.join(base or proc.cwd, name)) if base else None

        if call in ("clone", "clone3", "fork", "vfork"):
            child = int(m.group("ret"))
            if "CLONE_THREAD" in m.group("args"):
                group[child] = group.setdefault(tid, tid)
            else:
                group[child] = child
                procs[child] = _Process(proc.cwd, proc.fds)
            continue
        if ret_fd is not None and call in ("open", "openat", "creat", "dup", "dup2", "dup3",
                                           "fcntl"):
            proc.fds[int(m.group("ret"))] = ret_fd
        targets = []
        if call == "chdir":
            proc.cwd = resolve(None, args[0]) or proc.cwd
            continue
        if call == "fchdir":
            proc.cwd = fd_path(args[0]) or proc.cwd
            continue
        if call in ("dup", "dup2", "dup3", "fcntl"):
            continue
        if call in ("open", "openat"):
            dir_token, name_token, flags = ((args[0], args[1], args[2]) if call == "openat"
                                            else (None, args[0], args[1]))
            target = ret_fd or resolve(dir_token, name_token)
            if "O_PATH" in flags or not any(f in flags for f in _OPEN_WRITE_FLAGS):
                events.append((call + ":read", [target], line))
                continue
            targets.append(target)
        elif call in ("ftruncate", "fchmod", "fchown"):
            targets.append(fd_path(args[0]))
        elif call in ("creat", "mkdir", "unlink", "rmdir", "truncate", "chmod", "chown",
                      "lchown", "mknod"):
            targets.append(resolve(None, args[0]))
        elif call in ("mkdirat", "unlinkat", "fchmodat", "fchownat", "mknodat"):
            targets.append(resolve(args[0], args[1]))
        elif call in ("rename", "link", "symlink"):
            targets += [resolve(None, args[1])] + ([resolve(None, args[0])]
                                                   if call != "symlink" else [])
        elif call in ("renameat", "renameat2", "linkat"):
            targets += [resolve(args[0], args[1]), resolve(args[2], args[3])]
        elif call == "symlinkat":
            targets.append(resolve(args[1], args[2]))
        else:
            continue
        events.append((call, targets, line))
    return events


def trace_files(trace_dir, prefix="tr."):
    return {int(n[len(prefix):]): os.path.join(trace_dir, n) for n in os.listdir(trace_dir)
            if n.startswith(prefix) and n[len(prefix):].isdigit()}


def within(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


class StracedMount(harness.Mount):
    """A foreground mount whose daemon runs under `strace -f` for its whole life (start-up,
    worker spawns and shut-down included)."""

    def __init__(self, *a, trace_prefix, **kw):
        super().__init__(*a, foreground=True, **kw)
        self.trace_prefix = trace_prefix

    def command(self):
        return (["strace", "-f", "-ff", "-ttt", "-y", "-qq", "-s", "4096", "-o", self.trace_prefix,
                 "-e", "trace=" + ",".join(TRACED)] + super().command())


@unittest.skipUnless(os.geteuid() == 0, "needs root (strace, useradd, allow_other)")
class IsolationTest(harness.MountTestCase):

    def tempdir(self, mode=0o755):
        d = tempfile.mkdtemp(prefix=harness.TEMP_PREFIX + "iso-")
        os.chmod(d, mode)
        self.addCleanup(harness._rmtree, d)
        return d

    def import_session(self, m, pythons):
        """Imports every module with each interpreter (twice: compile, then served), a compile
        error, a listing and a stats call."""
        for py in pythons:
            for _ in range(2):
                proc = harness.run_python(py, IMPORTS, args=["-B"],
                                          sys_path=[m.mountpoint, m.mnt("other")])
                self.assertPythonOk(proc, "imports through the mount (daemon alive: %s)\n%s"
                                    % (harness.pid_alive(m.pid), m.log_tail()))
                self.assertEqual(proc.stdout.strip(), "14")
            for module in ("pkg.broken", "lone_error.broken"):
                proc = harness.run_python(py, "import " + module, args=["-B"],
                                          sys_path=[m.mountpoint])
                self.assertIn("SyntaxError", proc.stderr)
            proc = harness.run_python(py, "import lone_warning.warns", args=["-B"],
                                      sys_path=[m.mountpoint])
            self.assertPythonOk(proc, "a module with a compile-time warning")
        subprocess.run(["ls", "-lR", m.mountpoint], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, env=harness.clean_env())
        return m.stats()

    # -----------------------------------------------------------------------------------------

    def test_store_created_0700_with_0600_files_whatever_the_umask(self):
        base = self.tempdir()
        store = os.path.join(base, "missing-parent", "store")
        py = max(self.pythons, key=lambda p: p.version)
        m = harness.Mount(TREE, pythons=[py], store=store)
        self.addCleanup(m.close)
        old = os.umask(0)  # the daemon inherits it: modes must not depend on it
        try:
            m.start()
        finally:
            os.umask(old)
        self.import_session(m, [py])
        for d, _, files in os.walk(store):
            self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o700, d)
            for name in files:
                p = os.path.join(d, name)
                self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o600, p)
        self.assertTrue(os.path.exists(os.path.join(store, "data.mdb")))
        parent_mode = stat.S_IMODE(os.stat(os.path.dirname(store)).st_mode)
        harness.log("store files %s; missing parent created with mode %o under umask 0"
                    % (sorted(os.listdir(store)), parent_mode))

    def test_workers_run_isolated_from_a_poisoned_environment(self):
        poison = self.tempdir()
        markers = {k: os.path.join(poison, k + ".marker")
                   for k in ("sitecustomize", "usercustomize", "startup")}
        os.makedirs(os.path.join(poison, "path"))
        with open(os.path.join(poison, "path", "sitecustomize.py"), "w") as f:
            f.write(POISON_CODE % markers["sitecustomize"])
        with open(os.path.join(poison, "startup.py"), "w") as f:
            f.write(POISON_CODE % markers["startup"])
        userbase = os.path.join(poison, "userbase")
        for py in self.pythons:
            site = os.path.join(userbase, "lib", "python%d.%d" % py.version[:2], "site-packages")
            os.makedirs(site, exist_ok=True)
            with open(os.path.join(site, "usercustomize.py"), "w") as f:
                f.write(POISON_CODE % markers["usercustomize"])
        env = {"PYTHONPATH": os.path.join(poison, "path"), "PYTHONHOME": "/nonexistent-poison",
               "PYTHONSTARTUP": os.path.join(poison, "startup.py"), "PYTHONINSPECT": "1",
               "PYTHONUSERBASE": userbase, "PYTHONWARNINGS": "error", "PYTHONVERBOSE": "1",
               "PYTHONIOENCODING": "poison-codec", "HOME": poison,
               "POISON_VARIABLE": "poison-value"}
        pys = newest_and_oldest(self.pythons)
        m = self.mount(TREE, pythons=pys, env=env)
        st = self.import_session(m, pys)
        for py in pys:
            self.assertGreater(harness.interpreter_stats(st, py.tag)["compiles"], 0,
                               "%s compiled nothing under a poisoned environment" % py.tag)
        workers = harness.descendants(m.pid)
        self.assertGreaterEqual(len(workers), len(pys), "expected a worker per interpreter")
        allowed = {"PATH", "LC_ALL", "LANG"}
        seen = []
        for pid in workers:
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    environ = [e for e in f.read().split(b"\0") if e]
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
                cwd = os.readlink("/proc/%d/cwd" % pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            keys = {e.split(b"=", 1)[0].decode("utf-8", "replace") for e in environ}
            with self.subTest(worker=pid, argv=argv[:3]):
                self.assertLessEqual(keys, allowed, "worker %d environment: %r" % (pid, environ))
                self.assertFalse([k for k in keys if k.startswith("PYTHON")])
                self.assertNotIn(b"poison", b"\0".join(environ))
                self.assertIn("-I", argv[:argv.index("-c")] if "-c" in argv else argv)
                self.assertIn("-S", argv[:argv.index("-c")] if "-c" in argv else argv)
                self.assertEqual(cwd, "/")
            seen.append((pid, os.path.basename(argv[0]), sorted(keys)))
        self.assertGreaterEqual(len(seen), len(pys))
        for name, marker in markers.items():
            self.assertFalse(os.path.exists(marker), "a worker ran the poisoned %s" % name)
        harness.log("workers (pid, binary, environment keys): %r" % seen)

    def check_writes(self, events, allowed_roots, what, allowed_files=()):
        """Every successful modifying call targets one of allowed_roots or allowed_files (or
        /dev/fuse, /dev/null, a pipe); returns (modifying count, read opens)."""
        bad, modifying, reads = [], 0, []
        for call, targets, line in events:
            if call.endswith(":read"):
                reads.extend(t for t in targets if t)
                continue
            modifying += 1
            for t in targets:
                if t is None:
                    bad.append("unresolved target: " + line)
                elif t in ("/dev/fuse", "/dev/null") + tuple(allowed_files) or t.startswith(("pipe:", "socket:",
                                                                        "anon_inode:")):
                    continue
                elif re.fullmatch(r"/tmp/tsan\.rodata\.\d+", t):
                    # The ThreadSanitizer runtime of a `scripts/test --sanitize thread` build
                    # creates and at once unlinks this at start-up: not the daemon's doing.
                    continue
                elif re.fullmatch(r"(/run/pycachefs|/tmp/pcfs-it-pyclinks-\w+)"
                                  r"(/(tmp|pycachefs)\.\d+\.\w+(/(\w+\.pyc|probe))?)?", t):
                    # Link mode (--pyc-links auto): its private pyc directory, and those of
                    # killed daemons, which the next mount removes.
                    continue
                elif not any(within(t, r) for r in allowed_roots):
                    bad.append(line)
        self.assertEqual(bad, [], "%s: the daemon wrote outside %r" % (what, allowed_roots))
        return modifying, reads

    def assert_never_inside_own_mount(self, m, events):
        """Neither the daemon nor its workers go through their own mount (a request waiting on
        a compile that reads through the mount could deadlock the file system). The mount
        point itself is opened at start-up, before the mount exists."""
        inside = [line for _, targets, line in events
                  if any(t and t.startswith(m.mountpoint + "/") for t in targets)]
        self.assertEqual(inside, [], "the daemon or a worker accessed its own mount")

    def test_daemon_writes_only_into_its_store_for_its_whole_life(self):
        """strace -f from the daemon's start to its exit, read-only mount."""
        trace_dir = self.tempdir()
        pys = newest_and_oldest(self.pythons)
        tree = dict(TREE, odd={"x.py": "FIFO", "y.py": "VALUE = 'y'\n"})

        def prepare(m):
            os.unlink(m.src("odd", "x.py"))
            os.mkfifo(m.src("odd", "x.py"))

        m = self.mount(tree, prepare=prepare, pythons=pys, mount_class=StracedMount,
                       trace_prefix=os.path.join(trace_dir, "tr"))
        self.import_session(m, pys)
        for py in pys:
            proc = harness.run_python(py, "import errno, os, sys\ntry:\n    os.stat(sys.argv[1])"
                                      "\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
                                      argv=[m.mnt("odd", "__pycache__", py.pyc_name("x"))],
                                      timeout=30)
            self.assertEqual(proc.stdout.strip(), "ENOENT")
        pyc_dir = m.stats()["pyc_files"].get("dir")
        m.close()  # strace exits with the daemon: the trace is complete
        if pyc_dir:
            self.assertFalse(os.path.exists(pyc_dir), "the pyc directory outlived the daemon")
        files = trace_files(trace_dir)
        events = parse_traces(files)
        # Besides the store only the log and pid files the command line named.
        modifying, reads = self.check_writes(events, [m.store], "whole life, read-only",
                                             allowed_files=[m.log_file, m.pid_file])
        # The trace saw what it had to: the store's creation and the sources being read.
        self.assertGreater(modifying, 0, "no store write traced: the trace is blind")
        self.assertTrue(any(r.endswith("/pkg/m3.py") for r in reads), "no source read traced")
        self.assert_never_inside_own_mount(m, events)
        fifo = m.src("odd", "x.py")
        fifo_opens = [line for call, t, line in events if fifo in t and "O_PATH" not in line]
        self.assertEqual(fifo_opens, [], "the daemon opened a FIFO")
        harness.log("strace (whole life, %d processes/threads): %d modifying calls, all in the "
                    "store; %d read opens" % (len(files), modifying, len(reads)))

    def test_daemon_writes_only_into_store_and_source_with_rw(self):
        """strace -f -p on the running daemon (all threads, workers), --rw mount, writes
        through the mount included."""
        trace_dir = self.tempdir()
        pys = newest_and_oldest(self.pythons)
        m = self.mount(TREE, pythons=pys, rw=True)
        # -f attaches every thread of a -p process; workers are processes of their own.
        pids = [m.pid] + harness.descendants(m.pid)
        daemon_threads = [int(t) for t in os.listdir("/proc/%d/task" % m.pid)]
        threads = len(daemon_threads)
        daemon_cwd = os.readlink("/proc/%d/cwd" % m.pid)
        err_path = os.path.join(trace_dir, "strace.err")
        cmd = ["strace", "-f", "-ff", "-ttt", "-y", "-s", "4096", "-o",
               os.path.join(trace_dir, "tr"),
               "-e", "trace=" + ",".join(TRACED)]
        for pid in pids:
            cmd += ["-p", str(pid)]
        with open(err_path, "wb") as err:
            tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err, env=harness.clean_env())

        def stop_tracer():
            if tracer.poll() is None:
                tracer.send_signal(signal.SIGINT)  # detaches from every tracee
                try:
                    tracer.wait(20)
                except subprocess.TimeoutExpired:
                    tracer.kill()
                    tracer.wait()
        self.addCleanup(stop_tracer)

        def attached():
            with open(err_path, "rb") as f:
                return f.read().count(b"attached") >= len(pids) or tracer.poll() is not None
        self.assertTrue(harness.wait_until(attached, 20), "strace did not attach")
        with open(err_path) as f:
            self.assertIsNone(tracer.poll(), "strace exited: %s" % f.read())
        self.import_session(m, pys)
        # Writes through the mount: the daemon performs them in the source tree.
        with open(m.mnt("other", "new.py"), "w") as f:
            f.write("VALUE = 'new'\n")
        os.rename(m.mnt("other", "new.py"), m.mnt("other", "renamed.py"))
        os.chmod(m.mnt("other", "renamed.py"), 0o640)
        os.truncate(m.mnt("other", "renamed.py"), 3)
        os.mkdir(m.mnt("other", "newdir"))
        os.rmdir(m.mnt("other", "newdir"))
        os.unlink(m.mnt("other", "renamed.py"))
        m.stats()
        time.sleep(0.3)
        stop_tracer()
        # Threads of the daemon at attach time share its descriptors (later ones are seen
        # being cloned).
        events = parse_traces(trace_files(trace_dir), daemon_cwd,
                              groups={tid: m.pid for tid in daemon_threads})
        modifying, reads = self.check_writes(events, [m.store, m.source], "--rw, attached")
        self.assert_never_inside_own_mount(m, events)
        into_source = [e for e in events if not e[0].endswith(":read")
                       and any(t and within(t, m.source) for t in e[1])]
        self.assertGreaterEqual(len(into_source), 4, "the writes through the mount were not "
                                "traced: %r" % into_source)
        self.assertTrue(any(r.endswith("/pkg/m3.py") for r in reads), "no source read traced")
        harness.log("strace -p (daemon with %d threads, %d workers): %d modifying calls (%d into "
                    "the source tree, the rest in the store)"
                    % (threads, len(pids) - 1, modifying, len(into_source)))

    def test_unreadable_source_pyc_neither_read_nor_stat_nor_compiled(self):
        user_py = harness.python_for_other_users()
        if user_py is None:
            self.skipTest("no /usr/bin/python3.X usable by an unprivileged account")
        tree = {"sec": {"secret.py": "SECRET = 'root only'\n"}}

        def prepare(m):
            os.chmod(m.src("sec", "secret.py"), 0o600)
            os.chown(m.src("sec", "secret.py"), 0, 0)

        m = self.mount(tree, prepare=prepare, args=["-o", "allow_other"])
        st0 = m.stats()
        pycs = [m.mnt("sec", "__pycache__", py.pyc_name("secret")) for py in m.pythons]
        probe = r"""
import errno, json, os, sys
out = []
for p in sys.argv[1:]:
    for what, fn in (("stat", os.stat), ("read", lambda p: open(p, "rb").read())):
        try:
            r = fn(p)
            out.append([what, "ok", getattr(r, "st_size", None)])
        except OSError as e:
            out.append([what, errno.errorcode[e.errno], None])
print(json.dumps(out))
"""
        with harness.TempUser() as u:
            user = (u.uid, u.gid)
            proc = harness.run_python(user_py, probe, argv=pycs, user=user)
            self.assertPythonOk(proc)
            self.assertEqual(json.loads(proc.stdout), [[w, "EACCES", None] for _ in pycs
                                                       for w in ("stat", "read")])
            proc = harness.run_python(user_py, "import secret", sys_path=[m.mnt("sec")],
                                      user=user)
            self.assertIn("PermissionError", proc.stderr)
            self.assertNotIn("root only", proc.stdout + proc.stderr)
            ls = subprocess.run(["setpriv", "--reuid", str(u.uid), "--regid", str(u.gid),
                                 "--clear-groups", "--", "ls", "-l",
                                 m.mnt("sec", "__pycache__")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=30, env=harness.clean_env())
        lines = [l for l in ls.stdout.splitlines() if "secret." in l]
        self.assertEqual(len(lines), len(m.pythons), ls.stdout + ls.stderr)
        for line in lines:
            self.assertRegex(line, r"^-\?{9}\s+\?\s+\?\s+\?\s+\?\s+\?\s+secret\.",
                             "ls -l showed attributes of a pyc the user may not read")
        st1 = m.stats()
        delta = harness.stats_delta(st0, st1)
        self.assertEqual(delta["compiles"], 0, "a denied request compiled")
        self.assertEqual(delta["pycs_served"], 0)
        denied = st1["totals"]["denied"] - st0["totals"]["denied"]
        self.assertGreaterEqual(denied, 2 * len(pycs), "denied requests not counted")
        # Root may: the same pycs are compiled now (the test above could have failed).
        py = max(self.pythons, key=lambda p: p.version)
        proc = harness.run_python(py, "import secret; print(secret.SECRET)", args=["-B"],
                                  sys_path=[m.mnt("sec")])
        self.assertPythonOk(proc)
        self.assertGreaterEqual(harness.stats_delta(st1, m.stats(), py.tag)["compiles"], 1)
        harness.log("unreadable source: %d denied requests, 0 compiles; ls -l shows %r"
                    % (denied, lines[0][:30]))


if __name__ == "__main__":
    harness.main()
