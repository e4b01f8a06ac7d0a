"""Real Redis/Valkey server processes for tests and scripts: started on a free loopback port,
stopped, crashed, paused and restarted on demand, and Sentinels watching them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from taskrunner.embedded import valkey_binary
from tests.support.net import HOST, free_port

ServerKind = Literal["redis", "valkey"]
SERVER_KINDS: tuple[ServerKind, ...] = ("redis", "valkey")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def server_binary(kind: ServerKind) -> Path | None:
    """The server binary for `kind`: redis-server from PATH (None if absent), bundled Valkey."""
    if kind == "valkey":
        return valkey_binary()
    found = shutil.which("redis-server")
    return Path(found) if found else None


class RedisServer:
    """One redis-server / valkey-server process for tests: loopback only, no persistence
    unless `appendonly=True` (AOF, fsync always: a restart keeps every write).

    `stop()`, `start()` and `restart()` keep the port and the dir, so a test can take the server
    away under a client and bring it back. Data does not survive a restart (no RDB, no AOF).
    `password` sets `requirepass` (and `masterauth`, for replication); `extra_args` go last on
    the command line (e.g. `("--replicaof", HOST, "6379")` for a replica).
    """

    def __init__(
        self,
        kind: ServerKind,
        binary: Path,
        dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.kind = kind
        self.appendonly = appendonly
        self.binary = binary
        self.dir = dir
        self.port = port if port is not None else free_port()
        self.password = password
        self.extra_args = tuple(extra_args)
        self.log_path = dir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self!r} is not started")
        return self._process.pid

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait until it answers PING; raise RuntimeError with its log."""
        if self._process is not None:
            raise RuntimeError(f"{self!r} is already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """Stop with SIGTERM (SIGKILL if it hangs) and reap the process. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Crash the server: SIGKILL and reap. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel, nothing answers."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def ensure_running(self) -> None:
        """Start the server again if a test stopped or crashed it (reaping a dead process)."""
        if not self.is_running():
            self.kill()
            self.start()

    def restart(self) -> None:
        """Stop, then start again on the same port with the same dir."""
        self.stop()
        self.start()

    def __repr__(self) -> str:
        return f"<RedisServer {self.kind} {self.url}>"

    def _argv(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",
            *(("--requirepass", self.password, "--masterauth", self.password)
              if self.password else ()),
            *self.extra_args,
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers_ping():
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self!r} exited with {self._process.returncode} at start; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self!r} did not answer PING within {START_TIMEOUT_S} s; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        auth = _command("AUTH", self.password) if self.password else b""
        expected = (b"+OK\r\n" if self.password else b"") + b"+PONG"
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(auth + _command("PING"))
                reply = b""
                while len(reply) < len(expected) and (chunk := sock.recv(64)):
                    reply += chunk
                return reply.startswith(expected)
        except OSError:
            return False

    def _log_tail(self, max_bytes: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode(errors="replace")
        except OSError:
            return "(no log)"


def _command(*words: str) -> bytes:
    """One command in the Redis protocol (RESP)."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class SentinelServer(RedisServer):
    """A Sentinel (`redis-server CONF --sentinel`, Valkey's binary too) watching one primary as
    `service`, with quorum 1 and short timeouts so a failover takes about a second. `password`
    is the sentinel's own `requirepass`; `primary_password` the data nodes' (`auth-pass`)."""

    def __init__(
        self,
        kind: ServerKind,
        binary: Path,
        dir: Path,
        *,
        primary_port: int,
        service: str = "mymaster",
        password: str | None = None,
        primary_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ):
        super().__init__(kind, binary, dir, password=password)
        self.service = service
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {dir}",
            "daemonize no",
            'logfile ""',
            f"sentinel monitor {service} {HOST} {primary_port} 1",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
        ]
        if password:
            lines.append(f"requirepass {password}")
        if primary_password:
            lines.append(f"sentinel auth-pass {service} {primary_password}")
        self.config_text = "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<SentinelServer {self.kind} {HOST}:{self.port} {self.service}>"

    def _argv(self) -> list[str]:
        config = self.dir / "sentinel.conf"  # the sentinel rewrites it: a fresh one each start
        config.write_text(self.config_text)
        return [str(self.binary), str(config), "--sentinel"]
