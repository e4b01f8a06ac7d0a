"""End to end on child processes: `taskrunner run` / `task-runner` as users start them.

Every test starts the real console scripts with `subprocess.Popen` against the session's Redis
server, talks to them over HTTP and Redis only, and synchronises by polling observable state
(/healthz, job records, marker files), never by sleeping. Each child's output goes to a file in
tmp_path and is printed at teardown (pytest shows it for failing tests); leftover children are
SIGKILLed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from taskrunner.aio import cancel_and_wait
from tests.support.net import free_port
from tests.support.redis_servers import RedisServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real `taskrunner run` processes and signals

BIN_DIR = Path(sys.executable).parent
STOP_TIMEOUT_S = 15.0
START_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 30.0


def console_script(name: str) -> str:
    found = shutil.which(name, path=str(BIN_DIR))
    if found is None:
        pytest.fail(f"console script {name!r} not found in {BIN_DIR}: pip install -e . first")
    return found


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without any TASKRUNNER_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
    env.update(extra)
    return env


def sh(script: str) -> str:
    """A task line that the runner's shlex split turns into `sh -c SCRIPT`."""
    return shlex.join(["sh", "-c", script])


def q(path: Path) -> str:
    return shlex.quote(str(path))


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class RunnerProcess:
    """One `taskrunner run` child process with its HTTP address and log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        port: int | None,
        log_path: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RunnerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"

    # -- HTTP ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """One HTTP request; returns (status, lower-cased headers, decoded JSON or text)."""
        assert self.port is not None, f"{self.name} has no known HTTP port"
        body = None
        all_headers = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form)
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request(method, path, body=body, headers=all_headers)
            resp = conn.getresponse()
            raw = resp.read()
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            status = resp.status
        finally:
            conn.close()
        text = raw.decode("utf-8", "replace")
        try:
            return status, resp_headers, json.loads(text)
        except ValueError:
            return status, resp_headers, text

    def post(self, path: str, form: dict[str, str], **kw: Any) -> tuple[int, Any]:
        status, _, body = self.request("POST", path, form=form, **kw)
        return status, body

    def push(self, task: str, channel: str = "", **fields: str) -> dict[str, Any]:
        """POST /push; asserts the 200 envelope and returns its data."""
        status, body = self.post("/push", {"task": task, "channel": channel, **fields})
        assert status == 200, (status, body)
        assert body["status_code"] == 200, body
        data: dict[str, Any] = body["data"]
        return data

    def create_channel(self, name: str, *, worker: int, distinct: bool = False) -> None:
        form = {"name": name, "worker": str(worker), "distinct": "true" if distinct else "false"}
        status, body = self.post("/queue", form)
        assert (status, body["status_code"]) == (200, 200), body

    def health(self) -> dict[str, Any] | None:
        """/healthz's JSON, or None while nothing answers (not started yet, or gone)."""
        try:
            status, _, body = self.request("GET", "/healthz")
        except OSError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    # -- lifecycle ----------------------------------------------------------------------

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        def ready() -> bool:
            if self.returncode is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.returncode} at start:\n{self.log()}"
                )
            return self.health() is not None

        await wait_until(ready, timeout_s=timeout_s, interval_s=0.05, message=f"{self.name} up")
        health = self.health()
        assert health is not None
        return health

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        await wait_until(
            lambda: self.returncode is not None,
            timeout_s=timeout_s,
            interval_s=0.02,
            message=f"{self.name} (pid {self.pid}) to exit",
        )
        code = self.returncode
        assert code is not None
        return code

    async def stop(self) -> int:
        """Graceful stop (SIGUSR2); returns the exit code."""
        self.send(signal.SIGUSR2)
        return await self.wait_exit()

    def kill(self) -> None:
        """SIGKILL and reap. Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Runners:
    """Factory of runner children for one test; all are killed and reaped at teardown."""

    def __init__(self, tmp_path: Path, redis_url: str) -> None:
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.started: list[RunnerProcess] = []

    def pidfile(self, name: str) -> Path:
        return self.tmp_path / f"{name}.pid"

    def spawn(
        self,
        name: str,
        *args: str,
        script: str = "taskrunner",
        defaults: bool = True,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> RunnerProcess:
        """Start a child. With `defaults`: `run --redis-url --http-addr --pidfile` are given."""
        argv = [console_script(script)]
        if defaults:
            port = free_port()
            argv += [
                "run",
                "--redis-url", self.redis_url,
                "--http-addr", f"127.0.0.1:{port}",
                "--pidfile", str(self.pidfile(name)),
            ]  # fmt: skip
        argv += args
        runner = RunnerProcess(
            name,
            argv,
            env=child_env(**(env or {})),
            port=port,
            log_path=self.tmp_path / f"{name}.log",
        )
        self.started.append(runner)
        return runner.start()

    async def start(self, name: str, *args: str, **kw: Any) -> RunnerProcess:
        runner = self.spawn(name, *args, **kw)
        await runner.wait_ready()
        return runner

    def cleanup(self) -> None:
        for runner in reversed(self.started):
            runner.kill()
            print(f"----- {runner.name}: {shlex.join(runner.argv)}")
            print(f"      exit code {runner.returncode}")
            print(runner.log())


@pytest.fixture
def runners(tmp_path: Path, redis_url: str) -> Iterator[Runners]:
    factory = Runners(tmp_path, redis_url)
    try:
        yield factory
    finally:
        factory.cleanup()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `taskrunner ARGS` to completion (one-shot subcommands and start-up failures)."""
    result = subprocess.run(
        [console_script("taskrunner"), *args],
        capture_output=True,
        text=True,
        env=child_env(**(env or {})),
        timeout=CLI_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    print(f"$ taskrunner {shlex.join(args)} -> {result.returncode}")
    print(f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("taskrunner: error:")]


async def job(redis: aioredis.Redis, job_id: str) -> dict[str, str]:
    raw = await redis.hgetall(f"task:job:{job_id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


async def wait_state(
    redis: aioredis.Redis, job_id: str, state: str, timeout_s: float = 10.0
) -> dict[str, str]:
    async def reached() -> bool:
        return (await job(redis, job_id)).get("state") == state

    await wait_until(reached, timeout_s=timeout_s, message=f"job {job_id} to be {state}")
    return await job(redis, job_id)


# -- 1. drain end to end ----------------------------------------------------------------------


async def test_sigusr2_drains_running_job_keeps_queued_ones_and_exits_0(
    runners: Runners, redis: aioredis.Redis, tmp_path: Path
) -> None:
    a = await runners.start("a")
    a.create_channel("slow", worker=1)
    markers = {n: tmp_path / f"done{n}" for n in (1, 2, 3, 4, 5)}
    first = a.push(sh(f"sleep 2; touch {q(markers[1])}"), "slow")
    waiting = [a.push(sh(f"touch {q(markers[n])}"), "slow") for n in (2, 3)]
    assert first["result"] and all(d["result"] for d in waiting)
    await wait_state(redis, first["id"], "running")
    assert await redis.llen("task:queue:slow") == 2  # worker=1: the other two wait
    assert runners.pidfile("a").read_text().strip() == str(a.pid)

    a.send(signal.SIGUSR2)
    await wait_until(lambda: (a.health() or {}).get("draining"), message="/healthz draining")
    late = a.push(sh(f"touch {q(markers[4])}"), "slow")  # intake over HTTP still answers
    assert late["result"] is True
    assert a.returncode is None, "the push must have been answered while draining"
    # The prepare queue is not read any more while draining: the message waits there.
    raw = {"task": sh(f"touch {q(markers[5])}"), "chan": "slow", "ts": 1491800000, "id": "raw5"}
    await redis.lpush("task:prepare:queue", json.dumps(raw))

    assert await a.wait_exit() == 0
    assert markers[1].exists(), "the running job was not allowed to finish"
    assert (await job(redis, first["id"]))["state"] == "succeeded"
    queued = [waiting[0]["id"], waiting[1]["id"], late["id"]]
    for job_id in queued:
        assert (await job(redis, job_id))["state"] == "queued"
    # The raw message is still on the prepare queue, or was routed (not run) by a read that
    # was already blocking when the drain began.
    in_prepare = await redis.lrange("task:prepare:queue", 0, -1)
    if in_prepare:
        assert in_prepare == [json.dumps(raw).encode()]
    else:
        assert (await job(redis, "raw5")).get("state") == "queued", "the raw message was lost"
        queued.append("raw5")
    assert sorted(await redis.lrange("task:queue:slow", 0, -1)) == sorted(
        i.encode() for i in queued
    )
    assert not any(markers[n].exists() for n in (2, 3, 4, 5))
    assert not runners.pidfile("a").exists(), "pidfile left behind after a clean exit"

    b = await runners.start("b")
    for job_id in {*queued, "raw5"}:
        await wait_state(redis, job_id, "succeeded")
    assert all(m.exists() for m in markers.values())
    assert await b.stop() == 0


# -- 2. a second signal skips the wait ---------------------------------------------------------


async def test_second_signal_kills_and_hands_back_running_job(
    runners: Runners, redis: aioredis.Redis, tmp_path: Path
) -> None:
    pid_file = tmp_path / "job.pid"
    a = await runners.start("a", "--drain-timeout", "30")
    data = a.push(sh(f"echo $$ > {q(pid_file)}; exec sleep 30"))
    await wait_state(redis, data["id"], "running")
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="job pid")
    job_pid = int(pid_file.read_text())
    assert group_exists(job_pid)

    a.send(signal.SIGUSR2)
    await wait_until(lambda: (a.health() or {}).get("draining"), message="/healthz draining")
    assert a.returncode is None  # the first signal alone waits for the job (30 s)
    started = time.monotonic()
    a.send(signal.SIGUSR2)
    assert await a.wait_exit(timeout_s=10.0) == 0
    assert time.monotonic() - started < 10.0

    record = await job(redis, data["id"])
    assert record["state"] == "queued", record
    assert record.get("handed_back") == "drain", record
    assert await redis.lrange("task:queue:default", 0, -1) == [data["id"].encode()]
    assert not group_exists(job_pid), "the job's process group outlived the runner"
    assert not runners.pidfile("a").exists()


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: signal.Signals(s).name
)
async def test_term_int_hup_drain_until_the_drain_timeout_then_hand_back(
    runners: Runners, redis: aioredis.Redis, tmp_path: Path, sig: signal.Signals
) -> None:
    marker = tmp_path / "short-done"
    a = await runners.start("a", "--drain-timeout", "1.5")
    a.create_channel("two", worker=2)
    short = a.push(sh(f"sleep 0.3; touch {q(marker)}"), "two")
    long = a.push(sh("exec sleep 30"), "two")
    await wait_state(redis, short["id"], "running")
    await wait_state(redis, long["id"], "running")
    started = time.monotonic()
    a.send(sig)
    assert await a.wait_exit() == 0
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 10.0, f"should wait the 1.5 s drain timeout, then stop: {elapsed:.2f}"
    assert marker.exists()
    assert (await job(redis, short["id"]))["state"] == "succeeded"
    record = await job(redis, long["id"])
    assert (record["state"], record.get("handed_back")) == ("queued", "drain"), record
    assert not runners.pidfile("a").exists()


async def test_second_signal_stops_the_runner_even_when_redis_is_gone(
    runners: Runners, redis_server: RedisServer, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Redis down at stop time: the job cannot be handed back (its lease will do that once
    Redis returns), but a second signal must still end the process, not retry forever."""
    pid_file = tmp_path / "job.pid"
    a = await runners.start("a", "--drain-timeout", "30")
    data = a.push(sh(f"echo $$ > {q(pid_file)}; exec sleep 30"))
    await wait_state(redis, data["id"], "running")
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="job pid")
    job_pid = int(pid_file.read_text())

    redis_server.stop()  # the `redis_url` fixture starts it again for the next test
    a.send(signal.SIGUSR2)
    await wait_until(lambda: (a.health() or {}).get("draining"), message="/healthz draining")
    a.send(signal.SIGUSR2)
    code = await a.wait_exit(timeout_s=10.0)
    assert code in (0, 1), f"exit code {code}: 0 (clean) or 1 (could not hand back) expected"
    assert not group_exists(job_pid), "the job's process group outlived the runner"
    assert not runners.pidfile("a").exists()


# -- 3. kill -9 of the runner ------------------------------------------------------------------


async def test_job_of_a_killed_runner_runs_again_elsewhere_and_releases_its_dedup_mark(
    runners: Runners, redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    starts, done = tmp_path / "starts", tmp_path / "done"
    task = sh(f"echo $$ >> {q(starts)}; sleep 3; touch {q(done)}")
    a = await runners.start("a", "--lease", "1.5")
    a.create_channel("crash", worker=1, distinct=True)
    data = a.push(task, "crash")
    job_id = data["id"]
    await wait_state(redis, job_id, "running")
    await wait_until(lambda: starts.exists() and starts.read_text().endswith("\n"))

    # A machine crash takes the runner and its jobs down together. SIGKILL of the runner alone
    # leaves the job running (it is its own process group), so kill that group ourselves.
    a.send(signal.SIGKILL)
    assert await a.wait_exit() == -signal.SIGKILL
    job_pid = int(starts.read_text().split()[0])
    os.killpg(job_pid, signal.SIGKILL)
    assert not done.exists()
    assert (await job(redis, job_id))["state"] == "running"  # nobody noticed yet
    refused = run_cli("push", task, "--channel", "crash", "--json", "--redis-url", redis_url)
    assert refused.returncode == 1, "the dedup mark must hold while the job is live"
    assert json.loads(refused.stdout) == {"id": job_id, "result": False, "status": "duplicate"}

    # Same pidfile: the dead runner's lock went with it.
    b = await runners.start(
        "a-restarted",
        "--lease",
        "1.5",
        "--drain-timeout",
        "1",
        "--pidfile",
        str(runners.pidfile("a")),
    )
    record = await wait_state(redis, job_id, "succeeded", timeout_s=30.0)
    assert done.exists()
    assert len(starts.read_text().split()) == 2, "the job should have started exactly twice"
    assert record["attempt"] == "2", record
    assert record["runner"] == (b.health() or {}).get("runner"), record
    assert await redis.hgetall("task:distinct:crash") == {}
    again = b.push(task, "crash")
    assert again["result"] is True and again["id"] != job_id, again
    assert await b.stop() == 0


# -- 4. two runners share a channel ------------------------------------------------------------


async def test_two_runners_share_work_and_never_run_a_job_twice(
    runners: Runners, redis: aioredis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    a = await runners.start("a", "--shell")
    b = await runners.start("b", "--shell")
    runner_ids = {(a.health() or {})["runner"]: "a", (b.health() or {})["runner"]: "b"}
    a.create_channel("shared", worker=2)
    count = 20
    for n in range(count):
        task = f"echo start {n} $$ >> {q(log)}; sleep 0.2; echo end {n} >> {q(log)}"
        if n % 2:  # half over HTTP, half as TaskRunner's wire format on the prepare queue
            a.push(task, "shared", id=f"job-{n}")
        else:
            message = {"task": task, "chan": "shared", "ts": int(time.time()), "id": f"job-{n}"}
            await redis.lpush("task:prepare:queue", json.dumps(message))
    for n in range(count):
        await wait_state(redis, f"job-{n}", "succeeded", timeout_s=20.0)

    by_job = {n: runner_ids[(await job(redis, f"job-{n}"))["runner"]] for n in range(count)}
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = [int(parts[1]) for parts in lines if parts[0] == "start"]
    ends = [int(parts[1]) for parts in lines if parts[0] == "end"]
    assert sorted(starts) == list(range(count)), "each job must start exactly once"
    assert sorted(ends) == list(range(count)), "each job must end exactly once"
    running = {"a": 0, "b": 0}
    for parts in lines:  # O_APPEND lines are in real time order
        who = by_job[int(parts[1])]
        running[who] += 1 if parts[0] == "start" else -1
        assert running[who] <= 2, f"runner {who} ran more than worker=2 jobs at once"
    share = {who: sum(1 for w in by_job.values() if w == who) for who in ("a", "b")}
    # 20 jobs of 0.2 s and 2 slots per runner: one runner alone would need 2 s.
    assert share["a"] > 0 and share["b"] > 0, f"both runners should take jobs: {share}"
    assert await a.stop() == 0
    assert await b.stop() == 0


# -- 5. exit codes and messages ----------------------------------------------------------------


async def test_startup_failures_exit_2_with_a_one_line_reason(
    runners: Runners, redis_url: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "x.pid"
    common = ["--pidfile", str(pidfile)]

    dead_port = free_port()
    result = run_cli(
        "run",
        "--redis-url",
        f"redis://127.0.0.1:{dead_port}/0",
        "--http-addr",
        f"127.0.0.1:{free_port()}",
        *common,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith("taskrunner: error:") and f"127.0.0.1:{dead_port}" in line
    assert not pidfile.exists(), "a failed start must not leave its pidfile"

    result = run_cli("run", "--no-such-flag")
    assert result.returncode == 2
    assert "no-such-flag" in result.stderr

    result = run_cli("run", "--redis-url", redis_url, "--concurrent", "0", *common)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "taskrunner: error: --concurrent must be at least 1, got 0"
    ]

    port = free_port()
    result = run_cli("run", "--redis-url", redis_url, "--http-addr", f"0.0.0.0:{port}", *common)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("taskrunner: error:") and "--auth-token" in line and "--insecure" in line

    a = await runners.start("a")
    held = runners.pidfile("a")
    result = run_cli(
        "run",
        "--redis-url",
        redis_url,
        "--http-addr",
        f"127.0.0.1:{free_port()}",
        "--pidfile",
        str(held),
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("taskrunner: error:") and str(held) in line and str(a.pid) in line
    assert held.read_text().strip() == str(a.pid), "the refused runner touched the pidfile"

    result = run_cli("run", "--redis-url", redis_url, "--http-addr", f"127.0.0.1:{a.port}", *common)
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert f"127.0.0.1:{a.port}" in line
    assert not pidfile.exists()
    assert a.health() is not None and a.returncode is None

    exposed = runners.spawn(
        "exposed",
        "run",
        "--redis-url",
        redis_url,
        "--http-addr",
        f"0.0.0.0:{port}",
        "--insecure",
        "--pidfile",
        str(pidfile),
        defaults=False,
        port=port,
    )
    await exposed.wait_ready()
    assert await exposed.stop() == 0
    assert await a.stop() == 0


# -- 6. Go-style flags, environment variables, config file -------------------------------------


async def test_task_runner_accepts_go_style_flags(
    runners: Runners, redis: aioredis.Redis, redis_url: str
) -> None:
    redis_port = urllib.parse.urlsplit(redis_url).port
    port = free_port()
    pidfile = runners.pidfile("go")
    go = runners.spawn(
        "go",
        "-redis-host", f"127.0.0.1:{redis_port}",
        "-redis-db", "1",
        "-http-addr", f"127.0.0.1:{port}",
        "-pidfile", str(pidfile),
        "-concurrent", "3",
        "-task-mode=false",
        "-channel-default", "main",
        "-log-format=json",
        script="task-runner", defaults=False, port=port,
    )  # fmt: skip
    await go.wait_ready()
    assert pidfile.read_text().strip() == str(go.pid)
    db1 = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/1")
    try:
        main = json.loads(await db1.hget("task:channels", "main") or b"null")
        assert main is not None, "-channel-default main did not create channel main in db 1"
        assert (main["worker_count"], main["distinct"]) == (3, True), main
        assert await redis.exists("task:channels") == 0, "-redis-db 1 was ignored"

        data = go.push("true")  # no channel: the default one, main
        assert data["result"] is True
        record = {
            k.decode(): v.decode() for k, v in (await db1.hgetall(f"task:job:{data['id']}")).items()
        }
        assert (record["channel"], record["state"]) == ("main", "queued"), record
        # --no-task-mode: nothing may claim it. In task mode a claim takes milliseconds, so
        # watching it stay queued for a second is a meaningful (negative) check.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert await db1.hget(f"task:job:{data['id']}", "state") == b"queued"
            assert (go.health() or {}).get("running") == 0
        assert await go.stop() == 0
        assert await db1.llen("task:queue:main") == 1
    finally:
        await db1.aclose()
    first_log_line = go.log().splitlines()[0]
    assert json.loads(first_log_line)["level"] in ("info", "debug"), "-log-format=json ignored"

    # Upstream's deprecated -host (with -password, as in old supervisor lines).
    port = free_port()
    legacy = runners.spawn(
        "legacy", "-host", f"127.0.0.1:{redis_port}", "-http-addr", f"127.0.0.1:{port}",
        "-pidfile", str(runners.pidfile("legacy")), script="task-runner", defaults=False, port=port,
    )  # fmt: skip
    await legacy.wait_ready()
    assert await redis.hexists("task:channels", "default")
    assert await legacy.stop() == 0


async def test_options_read_from_environment(
    runners: Runners, redis: aioredis.Redis, redis_url: str
) -> None:
    port = free_port()
    pidfile = runners.pidfile("env")
    env = {
        "TASKRUNNER_REDIS_URL": redis_url,
        "TASKRUNNER_HTTP_ADDR": f"127.0.0.1:{port}",
        "TASKRUNNER_PIDFILE": str(pidfile),
        "TASKRUNNER_CHANNEL_DEFAULT": "fromenv",
    }
    r = await runners.start("env", "run", defaults=False, env=env, port=port)
    assert pidfile.read_text().strip() == str(r.pid)
    assert await redis.hexists("task:channels", "fromenv")
    data = r.push("true")
    record = await wait_state(redis, data["id"], "succeeded")
    assert record["channel"] == "fromenv"
    assert await r.stop() == 0


async def test_options_read_from_a_toml_config_file_flags_win(
    runners: Runners, redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    pidfile = runners.pidfile("conf")
    config = tmp_path / "taskrunner.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\n'
        f'http_addr = "127.0.0.1:{port}"\n'
        f'pidfile = "{pidfile}"\n'
        "result_keep_time = 5\n"  # kingtask's name for --result-ttl
        "concurrent = 4\n"
    )
    r = await runners.start(
        "conf", "run", "--config", str(config), "--concurrent", "2", defaults=False, port=port
    )
    assert pidfile.read_text().strip() == str(r.pid)
    default = json.loads(await redis.hget("task:channels", "default") or b"null")
    assert default["worker_count"] == 2, "a flag must override the config file"
    data = r.push("true")
    await wait_state(redis, data["id"], "succeeded")
    ttl = await redis.ttl(f"task:job:{data['id']}")
    assert 0 < ttl <= 5, f"result_keep_time = 5 should give a TTL <= 5 s, got {ttl}"
    assert await r.stop() == 0


# -- 7. auth token -----------------------------------------------------------------------------


async def test_auth_token_guards_everything_but_healthz(
    runners: Runners, redis: aioredis.Redis
) -> None:
    r = await runners.start("auth", "--auth-token", "secret")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
        status, resp_headers, body = r.request("GET", "/status", headers=headers)
        assert status == 401, (headers, body)
        assert body["status_code"] == 401 and body["data"] is None and body["message"]
        assert resp_headers["content-type"] == "application/json; charset=utf-8"
    status, body = r.post("/push", {"task": "true"})
    assert (status, body["status_code"]) == (401, 401)
    assert [key async for key in redis.scan_iter(match="task:job:*")] == []

    good = {"Authorization": "Bearer secret"}
    status, _, body = r.request("GET", "/status", headers=good)
    assert (status, body["status_code"]) == (200, 200)
    assert "default" in body["data"]
    status, body = r.post("/push", {"task": "true"}, headers=good)
    assert status == 200 and body["data"]["result"] is True
    status, _, body = r.request("GET", "/healthz")
    assert status == 200 and body["ok"] is True
    assert await r.stop() == 0


# -- 8. subcommands that talk to Redis directly ------------------------------------------------


async def test_push_status_and_queue_subcommands(
    runners: Runners, redis: aioredis.Redis, redis_url: str
) -> None:
    url = ["--redis-url", redis_url]
    created = run_cli("queue", "create", "jobs", "--distinct", "--worker", "2", *url)
    assert created.returncode == 0
    again = run_cli("queue", "create", "jobs", *url)
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = run_cli("queue", "create", "no\ttabs", *url)
    assert bad.returncode == 2 and "invalid channel name" in bad.stderr

    listed = run_cli("queue", "list", "--json", *url)
    assert listed.returncode == 0
    [jobs] = [c for c in json.loads(listed.stdout) if c["name"] == "jobs"]
    assert (jobs["distinct"], jobs["worker_count"]) == (True, 2), jobs

    pushed = run_cli("push", "echo hi", "--channel", "jobs", *url)
    assert pushed.returncode == 0
    job_id = pushed.stdout.strip()
    assert job_id and "\n" not in job_id
    assert (await job(redis, job_id))["state"] == "queued"
    dup = run_cli("push", "echo hi", "-c", "jobs", *url)
    assert dup.returncode == 1 and job_id in dup.stdout
    nochan = run_cli("push", "echo hi", "-c", "nope", *url)
    assert nochan.returncode == 2 and "nope" in nochan.stderr

    unreachable = run_cli("status", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert unreachable.returncode == 2 and "cannot reach Redis" in unreachable.stderr

    status = run_cli("status", "--json", *url)
    assert status.returncode == 0
    assert json.loads(status.stdout)["jobs"] == {"queued": 1, "scheduled": 0, "running": 0}

    r = await runners.start("r")
    record = await wait_state(redis, job_id, "succeeded")
    assert record["stdout"] == "hi\n"
    status = run_cli("status", "--json", *url)
    assert json.loads(status.stdout)["jobs"] == {"queued": 0, "scheduled": 0, "running": 0}
    assert await r.stop() == 0


async def test_a_stop_does_not_hang_on_a_loop_that_swallowed_its_cancel() -> None:
    # Found with the watchdog: a `taskrunner run` whose --http-addr was taken sometimes hung at
    # exit, its heartbeat and scheduler loops having lost their cancel inside redis-py.
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as a library's timeout may do
            await asyncio.sleep(60)
        await asyncio.sleep(60)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(asyncio.sleep(60))]
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await cancel_and_wait(tasks)
    assert all(task.cancelled() for task in tasks)
