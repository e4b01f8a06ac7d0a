"""The three ways the lifecycle scenario (_chaos_lifecycle.py) runs and stops `taskrunner run`:

  usr2        `kill -USR2` of the runner, on a Redis server of its own
  ctrl-c      SIGINT to the whole process group of a `./scripts/run`-style start (embedded Valkey),
              as a terminal's Ctrl-C sends it
  supervisor  `supervisorctl stop` / `start` of a program that runs it (embedded Valkey), with the
              repository's supervisor.conf settings (stopsignal=USR2)

A `Site` is one of them in a folder of its own: start, stop (with the exit code), the Redis URL,
the runner logs, and a wait on the states of its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis

from scripts._harness import KEYS, redis_server, wait_http
from taskrunner.embedded import EmbeddedRedis
from tests.support.net import free_port

BIN = Path(sys.executable).parent
SETTLE_TIMEOUT_S = 60.0
RUNNER_FLAGS = ("--pidfile", "", "--drain-timeout", "20", "--kill-grace", "2", "--lease", "5")


class Site:
    """One way of running and stopping `taskrunner run`, in `tmp`."""

    def __init__(self, mode: str, tmp: Path, redis_url: str | None) -> None:
        self.mode, self.tmp, self.redis_url = mode, tmp, redis_url
        self.http_port = free_port()
        self.data_dir = tmp / "var"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.supervisor: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        where = ["--redis-url", self.redis_url] if self.redis_url else [
            "--embedded-redis", str(self.data_dir), "--embedded-redis-port", "0"]  # fmt: skip
        return [str(BIN / "taskrunner"), "run", *where, "--http-addr",
                f"127.0.0.1:{self.http_port}", *RUNNER_FLAGS]  # fmt: skip

    def log_path(self) -> Path:
        return self.tmp / f"runner-{self.starts}.log"

    async def start(self) -> None:
        self.starts += 1
        if self.mode == "supervisor":
            await self._supervisorctl("start", "taskrunner")
        else:
            self.process = self._spawn()
        await wait_http(self.http_port, timeout_s=30)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path().open("wb") as log:
            return subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                process_group=0,  # as a terminal's foreground job
            )  # fmt: skip

    async def stop(self) -> int:
        if self.mode == "supervisor":
            await self._supervisorctl("stop", "taskrunner")
            return _supervisor_exit_code(self.tmp / "supervisord.log", self.starts)
        assert self.process is not None
        if self.mode == "ctrl-c":
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGUSR2)
        return await asyncio.to_thread(self.process.wait, 60)

    def url(self) -> str:
        if self.redis_url:
            return self.redis_url
        server = EmbeddedRedis(self.data_dir)
        assert server.attach_running(), f"no embedded Valkey runs on {self.data_dir}"
        return server.url

    def valkey_pid(self) -> int | None:
        server = EmbeddedRedis(self.data_dir)
        return server.pid if server.attach_running() else None

    def runner_logs(self) -> list[Path]:
        if self.mode == "supervisor":
            return [self.tmp / "runner.log"]
        return [self.tmp / f"runner-{n}.log" for n in range(1, self.starts + 1)]

    async def until(
        self,
        done: Callable[[dict[str, str]], bool],
        timeout_s: float = SETTLE_TIMEOUT_S,
        ids: list[str] | None = None,
    ) -> None:
        """Wait (at most `timeout_s`) until `done` holds for the states of the jobs `ids` (all
        jobs when None), read from this site's Redis."""
        deadline = time.monotonic() + timeout_s
        async with aioredis.Redis.from_url(self.url(), decode_responses=True) as client:
            while time.monotonic() < deadline:
                keys = (
                    cast(list[str], await client.keys(KEYS.job("*")))
                    if ids is None
                    else [KEYS.job(i) for i in ids]
                )
                states: dict[str, str] = {}
                for key in keys:
                    states[key.rpartition(":")[2]] = (
                        cast(str | None, await client.hget(key, "state")) or ""
                    )
                if done(states):
                    return
                await asyncio.sleep(0.1)

    # -- supervisor -----------------------------------------------------------------------

    def start_supervisor(self) -> None:
        conf = self.tmp / "supervisord.conf"
        conf.write_text(_SUPERVISOR_CONF.format(
            tmp=self.tmp, command=shlex.join(self.argv()), sock=self.tmp / "supervisor.sock"))  # fmt: skip
        self.supervisor = subprocess.Popen(
            [str(BIN / "supervisord"), "-n", "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def _supervisorctl(self, *args: str) -> None:
        conf = str(self.tmp / "supervisord.conf")
        for _ in range(100):  # the socket comes up with supervisord
            done = await asyncio.to_thread(
                subprocess.run, [str(BIN / "supervisorctl"), "-c", conf, *args],
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            if "refused connection" not in done.stdout + done.stderr and "no such file" not in (
                done.stdout + done.stderr
            ):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"supervisorctl {' '.join(args)}: supervisord does not answer")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.supervisor is not None:
            self.supervisor.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.supervisor.wait(timeout=70)
        server = EmbeddedRedis(self.data_dir)
        if server.attach_running():
            server.stop()


_SUPERVISOR_CONF = """\
[unix_http_server]
file={sock}

[supervisord]
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}

[program:taskrunner]
command={command}
autostart=false
autorestart=false
startsecs=1
stopsignal=USR2
stopwaitsecs=60
stopasgroup=false
killasgroup=false
redirect_stderr=true
stdout_logfile={tmp}/runner.log
"""


def _supervisor_exit_code(log: Path, stops: int) -> int:
    """The exit status supervisord logged for the runner's `stops`-th stop (-1: not found)."""
    lines = [line for line in log.read_text().splitlines() if "stopped: taskrunner" in line]
    if len(lines) < stops:
        return -1
    status = lines[stops - 1].rpartition("(")[2].rstrip(")")
    return int(status.split()[-1]) if status.startswith("exit status") else -1


@contextlib.asynccontextmanager
async def open_site(mode: str, tmp: Path) -> AsyncIterator[Site]:
    """A Site for `mode` in `tmp`: usr2 gets a Redis server of its own, ctrl-c and supervisor
    the embedded Valkey (supervisor also a running supervisord); closed at the end."""
    os.makedirs(tmp)
    if mode == "usr2":
        with redis_server(tmp / "redis", appendonly=True) as server:
            site = Site(mode, tmp, server.url)
            try:
                yield site
            finally:
                site.close()
        return
    site = Site(mode, tmp, None)
    if mode == "supervisor":
        site.start_supervisor()
    try:
        yield site
    finally:
        site.close()
