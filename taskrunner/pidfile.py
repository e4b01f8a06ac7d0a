"""A pidfile that refuses a second runner: an exclusive lock held for the process's life."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from taskrunner.errors import ConfigError


@contextlib.contextmanager
def pidfile(path: Path | None) -> Iterator[None]:
    """Hold `path` locked with our pid in it; remove it on exit. None = no pidfile."""
    if path is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"--pidfile {path}: cannot open it: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"--pidfile {path} is held by running process {holder}: stop it first,"
                " or give this runner another --pidfile"
            ) from None
        if not _still_at(path, fd):
            raise ConfigError(
                f"--pidfile {path} was removed by a runner that was stopping just now: start again"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(fd)


def _still_at(path: Path, fd: int) -> bool:
    """The locked file is still the one at `path` (not unlinked by an exiting holder)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
