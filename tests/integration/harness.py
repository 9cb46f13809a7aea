"""Shared machinery for the pycachefs integration tests (Python 3 stdlib only).

The test scripts run under `python3 -I -B`, so they put their own directory on sys.path
explicitly before importing this module. Everything spawned from here gets an explicit, minimal
environment: the machine exports PYTHONDONTWRITEBYTECODE=1 and tests must not depend on that.

Contents:
  pycachefs_bin()           the binary under test ($PYCACHEFS_BIN or <repo>/build/fs/pycachefs)
  find_pythons()            every CPython >= 3.6 on the machine, one per cache tag
  run_python(...)           runs an interpreter in a clean environment, optionally as another user
  Mount                     context manager: temp source/mount/store, daemon start, guaranteed unmount
  TempUser                  throwaway unprivileged account (useradd/userdel)
  write_tree / snapshot     build a source tree from a dict; prove a tree was left untouched
  stats(mnt)                `pycachefs stats MNT --json`
  TRANSPORT                 "dev" (/dev/fuse) or "io_uring": $PYCACHEFS_TEST_TRANSPORT; every
                            Mount passes the matching --io-uring and proves the transport it got
A process-wide registry plus atexit and SIGTERM/SIGHUP handlers tear down whatever a failing or
interrupted test left behind, so no run ever leaves a FUSE mount or a test account behind.
"""

import ast
import atexit
import errno
import glob
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How long a change made beneath the mount may take to show (documented bound is 1 s).
FRESHNESS_POLL_SECONDS = 1.5
TEMP_PREFIX = "pcfs-it-"
# Which FUSE transport every Mount uses; CTest runs the integration suite once with each.
TRANSPORT = os.environ.get("PYCACHEFS_TEST_TRANSPORT", "dev")
URING_SWITCH = "/sys/module/fuse/parameters/enable_uring"


# --pyc-links for every Mount of this pass ($PYCACHEFS_TEST_PYC_LINKS; unset: links, in a private
# tmpfs, see links_base()). CTest runs the io_uring pass with off, so the whole suite also covers
# pycs as FUSE files.
PYC_LINKS = os.environ.get("PYCACHEFS_TEST_PYC_LINKS")


_links_base = None


def links_base():
    """A private tmpfs (mode 0711) for the link-mode pyc files of this test process's mounts,
    mounted on first use and unmounted at exit: `--pyc-links auto` uses links only when
    /run/pycachefs is on a memory filesystem, which a VM's /run may not be."""
    global _links_base
    with _registry_lock:
        if _links_base is None:
            d = tempfile.mkdtemp(prefix=TEMP_PREFIX + "pyclinks-")
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711,size=512m", "pcfs-test", d],
                           check=True)
            _links_base = d
        return _links_base


def _unmount_links_base():
    if _links_base is not None:
        subprocess.run(["umount", "-l", _links_base])
        try:
            os.rmdir(_links_base)
        except OSError as e:
            log("cannot remove %s: %s" % (_links_base, e))


def transport_value():
    """The --io-uring value every mount of this pass uses."""
    return "on" if TRANSPORT == "io_uring" else "off"


def uring_switch():
    """The fuse module's enable_uring ("Y"/"N"), or None on a kernel without FUSE io_uring."""
    try:
        with open(URING_SWITCH) as f:
            return f.read().strip()
    except OSError:
        return None


def require_transport():
    """For the io_uring pass: the kernel must have FUSE over io_uring switched on; it is switched
    on here when it is off (scripts/test puts the switch back when the run ends). Returns why
    the pass cannot run on this machine, or None."""
    if TRANSPORT != "io_uring":
        return None
    value = uring_switch()
    if value is None:
        return "this kernel has no FUSE over io_uring (%s)" % URING_SWITCH
    if value not in ("Y", "1"):
        try:
            with open(URING_SWITCH, "w") as f:
                f.write("Y")
        except OSError as e:
            return "cannot switch FUSE over io_uring on (%s): %s" % (URING_SWITCH, e)
    return None


def log(msg):
    """Progress/measurement output; goes to stderr so CTest shows it with the test's output."""
    sys.stderr.write("[harness] %s\n" % msg)
    sys.stderr.flush()


def pycachefs_bin():
    return os.environ.get("PYCACHEFS_BIN") or os.path.join(REPO_ROOT, "build", "fs", "pycachefs")


def clean_env(extra=None):
    """An `env -i`-like environment: PATH and LC_ALL only, plus what the caller gives."""
    env = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8"}
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# Interpreters


class Python:
    """One CPython found on the machine."""

    def __init__(self, path, info):
        self.path = path
        self.tag = info["tag"]
        self.version = tuple(info["version"])
        self.ext_suffixes = info["ext_suffixes"]
        # (module name, absolute path) of a lib-dynload extension that is neither built in nor
        # imported at start-up, or None.
        self.ext_module = tuple(info["ext_module"]) if info["ext_module"] else None

    def pyc_name(self, base, opt=0):
        return "%s.%s%s.pyc" % (base, self.tag, ".opt-%d" % opt if opt else "")

    def __repr__(self):
        return "Python(%s, %s)" % (self.tag, self.path)


_PROBE = r"""
import importlib.machinery, importlib.util, json, os, sys
ext = None
for name in ("_json", "_bisect", "_heapq", "_random", "_csv", "_struct", "array", "_contextvars"):
    if name in sys.modules or name in sys.builtin_module_names:
        continue
    spec = importlib.util.find_spec(name)
    if spec and spec.origin and spec.origin.endswith(".so") and os.path.isfile(spec.origin):
        ext = [name, spec.origin]
        break
print(json.dumps({"tag": sys.implementation.cache_tag, "version": list(sys.version_info[:3]),
                  "ext_suffixes": importlib.machinery.EXTENSION_SUFFIXES, "ext_module": ext}))
"""

_pythons_cache = None


def _candidate_interpreters():
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for path in glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python3.*")):
        if re.fullmatch(r"python3\.\d+", os.path.basename(path)):
            found.append(path)
    for path in glob.glob("/usr/bin/python3.*"):
        if re.fullmatch(r"python3\.\d+", os.path.basename(path)):
            found.append(path)
    return [p for p in found if os.access(p, os.X_OK)]


def find_pythons():
    """Every CPython >= 3.6 (pyenv versions, then /usr/bin), one per cache tag, oldest first.

    Computed at run time. PYCACHEFS_TEST_PYTHONS=cpython-312,cpython-36 restricts the set for
    quick manual runs (CTest never sets it)."""
    global _pythons_cache
    if _pythons_cache is None:
        by_tag = {}
        for path in _candidate_interpreters():
            try:
                out = subprocess.run([path, "-I", "-c", _PROBE], env=clean_env(), cwd="/",
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     timeout=60, check=True).stdout
                info = json.loads(out)
            except (OSError, subprocess.SubprocessError, ValueError):
                continue
            if not info["tag"] or tuple(info["version"][:2]) < (3, 6):
                continue
            by_tag.setdefault(info["tag"], Python(path, info))
        wanted = os.environ.get("PYCACHEFS_TEST_PYTHONS")
        if wanted:
            keep = set(wanted.split(","))
            by_tag = {t: p for t, p in by_tag.items() if t in keep}
        _pythons_cache = sorted(by_tag.values(), key=lambda p: p.version)
    return list(_pythons_cache)


_other_user_python = []


def python_for_other_users():
    """A /usr/bin CPython (an unprivileged account cannot reach pyenv's under 0700 /root), or
    None. It need not be one of find_pythons(): the tests use it only for its cache tag."""
    if not _other_user_python:
        choice = None
        for path in sorted(glob.glob("/usr/bin/python3.*")):
            if not re.fullmatch(r"python3\.\d+", os.path.basename(path)):
                continue
            try:
                out = subprocess.run([path, "-I", "-c", _PROBE], env=clean_env(), cwd="/",
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     timeout=60, check=True).stdout
                choice = Python(path, json.loads(out))
            except (OSError, subprocess.SubprocessError, ValueError):
                continue
        _other_user_python.append(choice)
    return _other_user_python[0]


def run_python(py, code, *, sys_path=(), args=(), argv=(), cwd="/", env=None, user=None,
               timeout=120):
    """Runs `py [args] -c code [argv]` in a clean environment; returns the CompletedProcess (text).

    sys_path entries go first on sys.path (via PYTHONPATH, which is then the only Python variable
    set); env adds variables; user (a TempUser or (uid, gid)) runs it through setpriv."""
    path = py.path if isinstance(py, Python) else py
    extra = dict(env or {})
    if sys_path:
        extra["PYTHONPATH"] = os.pathsep.join(sys_path)
    cmd = [path] + list(args) + ["-c", code] + list(argv)
    if user is not None:
        uid, gid = (user.uid, user.gid) if isinstance(user, TempUser) else user
        cmd = ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", "--"] + cmd
    return subprocess.run(cmd, env=clean_env(extra), cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)


_CODE_OBJECT_RE = re.compile(r"^# code object from (.*)$", re.M)


def code_object_sources(verbose_stderr):
    """From `python -v` output: (pyc paths that supplied code objects, sources compiled).

    CPython prints `code object from '<pyc>'` (repr) when it used a pyc and
    `code object from <source>` (no quotes) when it compiled the source itself."""
    pycs, sources = [], []
    for raw in _CODE_OBJECT_RE.findall(verbose_stderr):
        raw = raw.strip()
        if raw[:1] in ("'", '"'):
            pycs.append(ast.literal_eval(raw))
        else:
            sources.append(raw)
    return pycs, sources


# --------------------------------------------------------------------------------------------
# Trees


def write_tree(root, spec):
    """Creates files from a dict: {name: str|bytes (file content) | dict (directory)}.

    Names may contain '/', missing parents are created. Files are 0644, directories 0755."""
    os.makedirs(root, exist_ok=True)
    for name, value in spec.items():
        path = os.path.join(root, name)
        if isinstance(value, dict):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o755)
            write_tree(path, value)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = value.encode("utf-8") if isinstance(value, str) else value
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)


def snapshot(root):
    """{relative path: (kind, mode, size, mtime_ns, sha256)} for everything under root (root
    itself is ''); enough to prove the tree is byte-for-byte unchanged."""
    result = {}

    def record(path):
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        rel = "" if rel == "." else rel
        digest = None
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            digest = os.readlink(path)
        result[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size,
                       st.st_mtime_ns, digest)

    record(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            record(os.path.join(dirpath, name))
    return result


def diff_snapshots(before, after):
    lines = []
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            lines.append("removed: %s" % rel)
        elif rel not in before:
            lines.append("added:   %s" % rel)
        elif before[rel] != after[rel]:
            lines.append("changed: %s %r -> %r" % (rel, before[rel], after[rel]))
    return lines


def assert_tree_unchanged(tc, before, root):
    """Fails tc unless root matches the snapshot and has no __pycache__ that was not there."""
    after = snapshot(root)
    diff = diff_snapshots(before, after)
    tc.assertEqual(diff, [], "source tree %s was modified:\n  %s" % (root, "\n  ".join(diff)))
    new_pycache = [r for r in after if "__pycache__" in r.split(os.sep) and r not in before]
    tc.assertEqual(new_pycache, [], "__pycache__ appeared in the source tree")


# --------------------------------------------------------------------------------------------
# Mounts and processes


def _unescape_mount_field(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts():
    """[(mountpoint, fstype, source)] from /proc/mounts."""
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((_unescape_mount_field(parts[1]), parts[2],
                            _unescape_mount_field(parts[0])))
    return out


def is_mounted(path):
    path = os.path.realpath(path)
    return any(mp == path for mp, _, _ in mounts())


def release_mount(path):
    """Lazily detaches whatever is mounted at path (used when a command mounted unexpectedly)."""
    if is_mounted(path):
        log("releasing unexpected mount at %s" % path)
        run_tool(["fusermount3", "-uz", path], timeout=30)


def pid_alive(pid):
    """True while any thread of pid is alive (not a zombie). A multi-threaded process whose
    main thread has exited shows as a zombie while its other threads still run (and still
    serve FUSE requests), so every thread is checked."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except (FileNotFoundError, ProcessLookupError):
        return False
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            return True
    return False


def descendants(pid):
    """All live descendant pids of pid (e.g. a daemon's compile workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def wait_until(predicate, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def run_tool(args, timeout=60, env=None):
    """Runs a command with stdout/stderr in temp files (never pipes: a daemonizing child that
    keeps inherited pipes open would otherwise stall us until the timeout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              env=env or clean_env(), cwd="/", timeout=timeout)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, proc.returncode,
                                           out.read().decode("utf-8", "replace"),
                                           err.read().decode("utf-8", "replace"))


def stats(mountpoint, binary=None):
    """Parsed `pycachefs stats MOUNTPOINT --json`."""
    proc = run_tool([binary or pycachefs_bin(), "stats", mountpoint, "--json"], timeout=30)
    if proc.returncode != 0:
        raise AssertionError("pycachefs stats %s failed (rc %d): %s"
                             % (mountpoint, proc.returncode, proc.stderr.strip()))
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("pycachefs stats printed no JSON: %r" % proc.stdout[:500])


def wait_look_ahead_idle(mountpoint, timeout=30, binary=None):
    """Until the mount's look-ahead has made every lookup it was given (its requests would count
    among the next measurement's); returns the last stats()."""
    last = None
    deadline = time.time() + timeout
    st = stats(mountpoint, binary)
    while time.time() < deadline:
        la = st.get("look_ahead")
        if not la:
            return st
        if la["waiting"] == 0:
            if la["lookups"] == last:
                return st
            last = la["lookups"]
        time.sleep(0.05)
        st = stats(mountpoint, binary)
    raise AssertionError("look-ahead never went idle: %r" % st.get("look_ahead"))


STAT_KEYS = ("lookups", "pycs_served", "store_hits", "compiles", "compile_errors",
             "bytes_served", "compile_seconds")


def interpreter_stats(st, tag):
    interp = st.get("interpreters", {})
    if tag not in interp:
        raise AssertionError("stats has no interpreter %r (has %r)" % (tag, sorted(interp)))
    return interp[tag]


def stats_delta(before, after, tag=None):
    """Per-key difference of two stats() results, for one interpreter tag or the totals."""
    a = interpreter_stats(before, tag) if tag else before["totals"]
    b = interpreter_stats(after, tag) if tag else after["totals"]
    return {k: b.get(k, 0) - a.get(k, 0) for k in STAT_KEYS}


_registry_lock = threading.RLock()
_live_mounts = []
_live_users = []
_daemon_pids = set()  # every daemon started, for remove_pyc_dirs_of_dead_daemons


class Mount:
    """A pycachefs mount of a fresh temporary tree.

    Layout under one mkdtemp() (0755 so other users can traverse it): src/ (the source, 0755),
    mnt/ (mount point), store/, daemon.pid, daemon.log. `tree` is written into src/ before the
    daemon starts and `self.initial` is its snapshot. Leaving the `with` block always unmounts
    (`pycachefs unmount`, then `fusermount3 -uz`), waits for the daemon to exit (SIGKILL to
    that one pid as the last resort) and removes the temp dirs, never while still mounted."""

    def __init__(self, tree=None, *, pythons=None, rw=False, args=(), foreground=False,
                 use_pid_file=True, binary=None, store=None, env=None, transport_flag=True):
        self.binary = binary or pycachefs_bin()
        # Extra environment variables for the daemon, on top of clean_env().
        self.env = dict(env or {})
        self.pythons = find_pythons() if pythons is None else list(pythons)
        self.rw = rw
        self.args = list(args)
        self.foreground = foreground
        self.use_pid_file = use_pid_file
        # False: no --io-uring at all (the daemon's default transport).
        self.transport_flag = transport_flag
        self.pid = None
        self.process = None  # the Popen in foreground mode
        self.closed = False
        self.teardown_notes = []
        self.base = tempfile.mkdtemp(prefix=TEMP_PREFIX)
        os.chmod(self.base, 0o755)
        self.source = os.path.join(self.base, "src")
        self.mountpoint = os.path.join(self.base, "mnt")
        self.own_store = store is None  # a given store outlives the mount (caller removes it)
        self.store = os.path.join(self.base, "store") if store is None else store
        self.pid_file = os.path.join(self.base, "daemon.pid")
        self.log_file = os.path.join(self.base, "daemon.log")
        self.output_file = os.path.join(self.base, "daemon.out")
        for d, mode in ((self.source, 0o755), (self.mountpoint, 0o755), (self.store, 0o700)):
            if d == self.store and not self.own_store:
                continue
            os.mkdir(d)
            os.chmod(d, mode)
        if tree:
            write_tree(self.source, tree)
        self.initial = None
        with _registry_lock:
            _live_mounts.append(self)

    # -- paths
    def src(self, *parts):
        return os.path.join(self.source, *parts)

    def mnt(self, *parts):
        return os.path.join(self.mountpoint, *parts)

    # -- lifecycle
    def command(self):
        cmd = [self.binary, "mount", self.source, self.mountpoint, "--store", self.store,
               "--log-file", self.log_file]
        if self.use_pid_file:
            cmd += ["--pid-file", self.pid_file]
        for p in self.pythons:
            cmd += ["--python", p.path]
        if self.rw:
            cmd.append("--rw")
        if self.transport_flag and not any(a.startswith("--io-uring") for a in self.args):
            cmd += ["--io-uring", transport_value()]
        if self.transport_flag and not any(a.startswith("--pyc-links") for a in self.args):
            if PYC_LINKS:
                cmd += ["--pyc-links", PYC_LINKS]
            elif os.geteuid() == 0:
                cmd += ["--pyc-links", links_base()]
        cmd += self.args
        if self.foreground:
            cmd.append("-f")
        return cmd

    def start(self, timeout=60):
        self.initial = snapshot(self.source)
        cmd = self.command()
        if self.foreground:
            with open(self.output_file, "wb") as out:
                self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT,
                                                env=clean_env(self.env), cwd="/")
            ok = wait_until(lambda: is_mounted(self.mountpoint) or self.process.poll() is not None,
                            timeout)
            if not ok or not is_mounted(self.mountpoint):
                self.close()
                raise AssertionError("foreground daemon did not mount (rc %r): %s\n%s"
                                     % (self.process.returncode, " ".join(cmd),
                                        self.output_tail()))
            self.pid = self.process.pid
            with _registry_lock:
                _daemon_pids.add(self.pid)
            self._check_transport()
            return self
        proc = run_tool(cmd, timeout=timeout, env=clean_env(self.env))
        if proc.returncode != 0:
            self.close()
            raise AssertionError("mount failed (rc %d): %s\nstderr: %s\n%s"
                                 % (proc.returncode, " ".join(cmd), proc.stderr.strip(),
                                    self.log_tail()))
        if not is_mounted(self.mountpoint):
            self.close()
            raise AssertionError("`pycachefs mount` returned 0 before the mount was live")
        self.pid = self._read_pid()
        with _registry_lock:
            _daemon_pids.add(self.pid)
        self._check_transport()
        return self

    def _check_transport(self):
        if (TRANSPORT != "io_uring" or not self.transport_flag
                or any(a.startswith("--io-uring") for a in self.args)):
            return
        got = stats(self.mountpoint, self.binary).get("transport")
        if got != "io_uring":
            self.close()
            raise AssertionError("mounted with --io-uring on, but serving through %r\n%s"
                                 % (got, self.log_tail()))

    def _read_pid(self):
        if self.use_pid_file:
            def readable():
                try:
                    with open(self.pid_file) as f:
                        return f.read().strip().isdigit()
                except OSError:
                    return False
            if wait_until(readable, 5):
                with open(self.pid_file) as f:
                    return int(f.read().strip())
            self.teardown_notes.append("no pid file written at %s" % self.pid_file)
        try:
            return int(stats(self.mountpoint, self.binary)["pid"])
        except (AssertionError, KeyError, ValueError, TypeError):
            return None

    def unmount(self, lazy=False, timeout=30):
        """`pycachefs unmount` once; returns the CompletedProcess (no fallback here)."""
        cmd = [self.binary, "unmount", self.mountpoint] + (["--lazy"] if lazy else [])
        return run_tool(cmd, timeout=timeout)

    def wait_daemon_exit(self, timeout=15):
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            return self.process.poll() is not None
        if self.pid is None:
            return True
        return wait_until(lambda: not pid_alive(self.pid), timeout, 0.05)

    def close(self):
        """Idempotent teardown; records anything unusual in self.teardown_notes."""
        if self.closed:
            return
        self.closed = True
        try:
            if is_mounted(self.mountpoint):
                try:
                    proc = self.unmount()
                    if proc.returncode != 0:
                        self.teardown_notes.append("pycachefs unmount rc %d: %s"
                                                   % (proc.returncode, proc.stderr.strip()))
                except subprocess.TimeoutExpired:
                    self.teardown_notes.append("pycachefs unmount timed out")
            if is_mounted(self.mountpoint):
                self.teardown_notes.append("still mounted after pycachefs unmount; fusermount3 -uz")
                run_tool(["fusermount3", "-uz", self.mountpoint], timeout=30)
            if not self.wait_daemon_exit():
                self.teardown_notes.append("daemon pid %s did not exit; SIGKILL" % self.pid)
                try:
                    os.kill(self.process.pid if self.process else self.pid, signal.SIGKILL)
                except (ProcessLookupError, TypeError):
                    pass
                self.wait_daemon_exit(10)
            if is_mounted(self.mountpoint):  # a killed daemon leaves a dead mount behind
                run_tool(["fusermount3", "-uz", self.mountpoint], timeout=30)
        finally:
            if is_mounted(self.mountpoint):
                log("WARNING: %s is still mounted; leaving %s in place" % (self.mountpoint,
                                                                          self.base))
            else:
                _rmtree(self.base)
            with _registry_lock:
                if self in _live_mounts:
                    _live_mounts.remove(self)
            for note in self.teardown_notes:
                log("teardown %s: %s" % (self.mountpoint, note))

    def __enter__(self):
        if self.pid is None and self.process is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- inspection
    def stats(self):
        return stats(self.mountpoint, self.binary)

    def log_tail(self, n=40):
        return _tail(self.log_file, n, "daemon log")

    def output_tail(self, n=40):
        return _tail(self.output_file, n, "daemon output")

    def assert_source_unchanged(self, tc, since=None):
        assert_tree_unchanged(tc, since if since is not None else self.initial, self.source)


def _tail(path, n, what):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()[-n:]
    except OSError:
        return "(no %s)" % what
    return "--- %s (last %d lines) ---\n%s" % (what, len(lines), "".join(lines))


def _rmtree(path):
    def onerror(func, p, exc_info):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)


class TempUser:
    """A throwaway unprivileged account pcfs-test-XXXX (no home, nologin); removed on exit."""

    def __init__(self):
        self.name = None
        for _ in range(20):
            name = "pcfs-test-%s" % secrets.token_hex(2)
            proc = run_tool(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                             "--user-group", name], timeout=30)
            if proc.returncode == 0:
                self.name = name
                break
            if proc.returncode != 9:  # 9: name already in use, try another
                raise RuntimeError("useradd failed: %s" % proc.stderr.strip())
        if self.name is None:
            raise RuntimeError("useradd: no free pcfs-test-XXXX name")
        with _registry_lock:
            _live_users.append(self)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def remove(self):
        if self.name is None:
            return
        proc = run_tool(["userdel", self.name], timeout=30)
        if proc.returncode != 0:
            log("userdel %s failed: %s" % (self.name, proc.stderr.strip()))
        with _registry_lock:
            if self in _live_users:
                _live_users.remove(self)
        self.name = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def cleanup_all():
    """Safety net: tears down every mount and account still registered."""
    with _registry_lock:
        leftovers = list(_live_mounts)
        users = list(_live_users)
    for m in leftovers:
        try:
            m.close()
        except Exception as e:  # keep going: the next mount must be released too
            log("cleanup of %s failed: %r" % (m.mountpoint, e))
    for u in users:
        try:
            u.remove()
        except Exception as e:
            log("cleanup of user %s failed: %r" % (u.name, e))


def _on_signal(signum, frame):
    log("signal %d: cleaning up mounts" % signum)
    cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def remove_pyc_dirs_of_dead_daemons():
    """A daemon a test killed leaves its /run/pycachefs/pycachefs.<pid>.* directory for the next mount
    to remove; after the last test, nobody would: remove those of this run's dead daemons."""
    import array
    import fcntl
    fs_ioc_getflags, fs_ioc_setflags, immutable = 0x80086601, 0x40086602, 0x10
    with _registry_lock:
        pids = list(_daemon_pids)
    for pid in pids:
        if pid_alive(pid):
            continue
        for d in glob.glob("/run/pycachefs/pycachefs.%d.*" % pid) + (
                glob.glob("%s/pycachefs.%d.*" % (_links_base, pid)) if _links_base else []):
            for name in os.listdir(d):
                path = os.path.join(d, name)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                    try:
                        flags = array.array("l", [0])
                        fcntl.ioctl(fd, fs_ioc_getflags, flags, True)
                        flags[0] &= ~immutable
                        fcntl.ioctl(fd, fs_ioc_setflags, flags, True)
                    finally:
                        os.close(fd)
                except OSError:
                    pass
                try:
                    os.unlink(path)
                except OSError as e:
                    log("cannot remove %s: %s" % (path, e))
            try:
                os.rmdir(d)
            except OSError as e:
                log("cannot remove %s: %s" % (d, e))


atexit.register(_unmount_links_base)
atexit.register(remove_pyc_dirs_of_dead_daemons)
atexit.register(cleanup_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


# --------------------------------------------------------------------------------------------
# Test-case support


class MountTestCase(unittest.TestCase):
    """Base class: fails fast when the binary is missing; helpers shared by the test files."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        if not os.access(pycachefs_bin(), os.X_OK):
            raise AssertionError("pycachefs binary not found at %s (set PYCACHEFS_BIN)"
                                 % pycachefs_bin())
        why = require_transport()
        if why:
            raise unittest.SkipTest(why)
        cls.pythons = find_pythons()
        if not cls.pythons:
            raise AssertionError("no CPython >= 3.6 found")

    def mount(self, tree=None, prepare=None, mount_class=None, **kw):
        """Starts a Mount that is torn down even if the test fails (addCleanup); prepare(m)
        runs after the tree is written and before the daemon starts."""
        m = (mount_class or Mount)(tree, **kw)
        self.addCleanup(m.close)
        if prepare:
            prepare(m)
        m.start()
        return m

    def assertPythonOk(self, proc, what="python"):
        self.assertEqual(proc.returncode, 0, "%s failed (rc %d)\nstdout: %s\nstderr (tail): %s"
                         % (what, proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:]))

    def assertNoMountLeft(self, m):
        # Unmounting after a signal takes the daemon a moment: wait for it, then look.
        if m.pid is not None:
            self.assertTrue(m.wait_daemon_exit(15), "daemon pid %d still alive" % m.pid)
        self.assertTrue(wait_until(lambda: not is_mounted(m.mountpoint), 5),
                        "%s still in /proc/mounts" % m.mountpoint)


def main():
    why = require_transport()
    if why:
        # CTest reports exit code 77 as skipped: this machine cannot run the io_uring pass.
        print("skipped: " + why)
        sys.exit(77)
    unittest.main(verbosity=2)
