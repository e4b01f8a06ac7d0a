"""Per-job cgroups (cgroup v2), one way taskrunner/escapes.py finds what a job left behind.

Where this process may create cgroups (its own cgroup is writable and, under systemd, delegated:
`Delegate=yes`), every job runs in a cgroup of its own, `<own>/taskrunner-<pid>-<random>/job-N`.
What is left in it when the job ends is signalled with the job's group, then killed
(`cgroup.kill`); no descendant leaves a cgroup without privileges. The job's first process is
moved in right after it started (Python cannot start a process inside a cgroup), so what it
forks in those microseconds stays outside; its environment marker still names it.
`TASKRUNNER_JOB_CGROUPS=0` in the runner's environment turns this off; any failure but a lack
of resources turns it off for the process, silently (one debug line).

Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import time
from pathlib import Path

logger = logging.getLogger("taskrunner.cgroups")

CGROUPS_VAR = "TASKRUNNER_JOB_CGROUPS"  # "0": no job cgroups even where they could be made


class JobCgroups:
    """Per-job cgroups under this process's own cgroup v2, where it may create them.

    Found on first use; any failure but a lack of resources turns them off for the process
    (the markers remain). An empty job cgroup is kept for the next job (a mkdir and an rmdir
    less a job)."""

    def __init__(self) -> None:
        self._root: str | None = None
        self._checked = False
        self._count = 0
        self._free: list[str] = []  # empty job cgroups, for the next jobs
        self._leftover: set[str] = set()  # job cgroups whose processes could not be stopped yet

    @property
    def root(self) -> str | None:
        """`<own cgroup>/taskrunner-<pid>-<random>`, the job cgroups' parent; None when off."""
        if not self._checked:
            self._checked = True
            self._root = _make_root()
        return self._root

    def create(self) -> str | None:
        """A new, empty job cgroup (None when cgroups are off or it cannot be made)."""
        root = self.root
        if root is None:
            return None
        if self._free:
            return self._free.pop()
        self._count += 1
        path = f"{root}/job-{self._count}"
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError as exc:
            self._fail(f"cannot create {path}: {exc.strerror}", exc)
            return None
        return path

    def enter(self, path: str, pid: int) -> bool:
        """Move the process into the job cgroup; False (and the cgroup removed) if it failed."""
        try:
            _write(f"{path}/cgroup.procs", b"%d" % pid)
        except ProcessLookupError:  # it has exited already: nothing of it can be left outside
            return True
        except OSError as exc:
            self.release(path)
            self._fail(f"cannot move pid {pid} into {path}: {exc.strerror}", exc)
            return False
        return True

    def signal(self, path: str, signum: int) -> bool:
        """Signal every member (SIGKILL through cgroup.kill); False if it had none."""
        members = cgroup_pids(path, recursive=True)
        if not members:
            return False
        if signum == signal.SIGKILL:
            with contextlib.suppress(OSError):
                _write(f"{path}/cgroup.kill", b"1")
                return True
        for pid in members:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        return True

    def release(self, path: str) -> bool:
        """Keep a job cgroup for the next job if no process is left in it; False if one is."""
        if populated(path):
            return False
        if len(self._free) < _FREE_MAX and self._root is not None:
            self._free.append(path)
        else:
            with contextlib.suppress(OSError):
                _rmdir_tree(path)
        self._leftover.discard(path)
        return True

    def remove(self, path: str) -> None:
        """Release a job cgroup; one with processes left is killed and released by `tidy()`."""
        if not self.release(path):
            self._leftover.add(path)

    def tidy(self) -> None:
        """Kill what is left in job cgroups that could not be removed, and try again."""
        for path in list(self._leftover):
            self.signal(path, signal.SIGKILL)
            self.release(path)

    def close(self) -> None:
        """At exit: kill what is still in the job cgroups and remove them and their parent."""
        root, self._root = self._root, None
        self._free.clear()
        if root is not None:
            remove_tree(root)

    def _fail(self, what: str, exc: OSError) -> None:
        if exc.errno in _RESOURCE_ERRNOS:  # this job only: descriptors or memory ran short
            logger.debug("job cgroup: %s", what)
            return
        logger.info("job cgroups off (%s): what jobs leave behind is found by their marker", what)
        self.close()


_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})
_FREE_MAX = 256  # empty job cgroups kept for reuse


def _make_root() -> str | None:
    if os.environ.get(CGROUPS_VAR, "").strip().lower() in ("0", "no", "off", "false"):
        return None
    own = own_cgroup_dir()
    if own is None or not _may_create_in(own):
        return None
    _remove_stale(own)
    root = f"{own}/taskrunner-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        os.mkdir(root)
    except OSError as exc:
        logger.debug("no job cgroups: cannot create %s: %s", root, exc.strerror)
        return None
    if not os.path.exists(f"{root}/cgroup.kill"):  # kernel before 5.14
        remove_tree(root)
        return None
    logger.debug("job cgroups under %s", root)
    return root


def own_cgroup_dir() -> str | None:
    """This process's cgroup v2 directory (None: no cgroup v2 mounted where it can be seen)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    for mount in mounts:
        fields, _, after = mount.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not after.startswith("cgroup2 "):
            continue
        root, where = _unescape(parts[3]).rstrip("/"), _unescape(parts[4]).rstrip("/")
        if path == root or path.startswith(root + "/"):  # (root "" is the hierarchy's top)
            return (where + path[len(root) :]).rstrip("/") or "/"
    return None


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _may_create_in(own: str) -> bool:
    """Writable, and under systemd delegated to us (a unit's cgroup is systemd's otherwise)."""
    if not (os.access(own, os.W_OK) and os.access(f"{own}/cgroup.procs", os.W_OK)):
        return False
    if not own.endswith((".service", ".scope")):
        return True
    for name in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(own, name) == b"1":
                return True
    return False


def _remove_stale(own: str) -> None:
    """Remove the job cgroups of runners that died (their pid is gone) without doing so."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(own):
            prefix, _, rest = entry.name.partition("-")
            pid = rest.partition("-")[0]
            stale = pid.isdigit() and not pid_alive(int(pid))
            if prefix == "taskrunner" and stale and entry.is_dir():
                remove_tree(entry.path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_tree(root: str) -> None:
    """Kill whatever runs in a cgroup tree, then remove its job cgroups (and itself)."""
    with contextlib.suppress(OSError):
        _write(f"{root}/cgroup.kill", b"1")
    deadline = time.monotonic() + 1.0
    while cgroup_pids(root, recursive=True) and time.monotonic() < deadline:
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if entry.is_dir():
                with contextlib.suppress(OSError):
                    _rmdir_tree(entry.path)
    with contextlib.suppress(OSError):
        os.rmdir(root)


def _rmdir_tree(path: str) -> None:
    """Remove a cgroup and the cgroups below it (a runner run as a job makes its own there);
    OSError (EBUSY) if a process is left in one."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            if entry.is_dir():
                _rmdir_tree(entry.path)
    os.rmdir(path)


def populated(path: str) -> bool:
    """A process is left in the cgroup or in one below it (a runner run as a job makes its
    own there). A cgroup that is gone is not."""
    try:
        with open(f"{path}/cgroup.events", "rb") as fh:
            return b"populated 1" in fh.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True


def cgroup_pids(path: str, *, recursive: bool = False) -> list[int]:
    """The processes in a cgroup (and, recursive, in the cgroups below it)."""
    try:
        with open(f"{path}/cgroup.procs", "rb") as fh:
            pids = [int(p) for p in fh.read().split()]
    except (OSError, ValueError):
        return []
    if recursive:
        with contextlib.suppress(OSError):
            for entry in os.scandir(path):
                if entry.is_dir():
                    pids += cgroup_pids(entry.path, recursive=True)
    return pids


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


CGROUPS = JobCgroups()
