"""What a job leaves behind is stopped when it ends (taskrunner/escapes.py), its environment
carries no runner secret, and a job that cannot start for lack of resources starts later.

Real processes throughout: daemons made with `setsid`, a double fork and a cleared environment,
each running `sleep` with a duration no other process has, so a reused pid is never mistaken
for one. In-process tests run both ways of finding them (`cgroup`, where this process may make
cgroups, and `marker`); end-to-end tests run `taskrunner run` children both ways too.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from msgspec import UNSET

from taskrunner import executor, guard, spawn
from taskrunner.cgroups import CGROUPS_VAR, JobCgroups
from taskrunner.errors import ResourceExhausted
from taskrunner.escapes import EMPTY, Strays, token_of
from taskrunner.executor import Execution, run
from taskrunner.models import ChannelConfig, Job
from taskrunner.spawn import ExecSpec
from taskrunner.store import Store
from tests.support.net import free_port
from tests.support.runners import stored_job
from tests.support.waiting import wait_until, wait_until_sync
from tests.test_process import Runners, job, runners, wait_state

pytestmark = pytest.mark.slow  # job processes that try to outlive their runner

__all__ = ["runners"]  # the fixture: `taskrunner run` children (tests/test_process.py)

SLEEP = shutil.which("sleep") or "/bin/sleep"

# A job that starts a daemon and ends once it runs: fork; the child calls setsid, forks
# again and exits; the grandchild writes its pid and execs `sleep SECONDS`, with an empty
# environment when asked. The job waits until that exec is done, then exits 0.
DAEMON = textwrap.dedent(
    """
    import os, sys, time
    pidfile, sleep, seconds, clear = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork():
            os._exit(0)
        with open(pidfile + ".new", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(pidfile + ".new", pidfile)
        os.execve(sleep, ["sleep", seconds], {} if clear else dict(os.environ))
    os.waitpid(pid, 0)
    while not os.path.exists(pidfile):
        time.sleep(0.005)
    daemon = int(open(pidfile).read())
    while not open(f"/proc/{daemon}/cmdline", "rb").read().startswith(b"sleep"):
        time.sleep(0.005)
    if len(sys.argv) > 5:
        time.sleep(float(sys.argv[5]))  # and then keep running a while
    """
)


def unique_seconds() -> str:
    """A `sleep` duration (about 5 minutes) that names one test's daemon."""
    return f"300.{secrets.randbelow(10**9):09d}"


def sleeping(pid: int, seconds: str) -> bool:
    """The process is alive (not a zombie) and still the `sleep SECONDS` a test started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    argv = cmdline.split(b"\0")
    return argv[0].endswith(b"sleep") and argv[1:] == [seconds.encode(), b""] and state != "Z"


def daemon_argv(pidfile: Path, seconds: str, *, clear_env: bool, then_s: float = 0) -> list[str]:
    argv = [sys.executable, "-c", DAEMON, str(pidfile), SLEEP, seconds, "1" if clear_env else "0"]
    return argv + ([f"{then_s:g}"] if then_s else [])


def setsid_argv(pidfile: Path, seconds: str, *, then_s: float = 0) -> list[str]:
    """`setsid sleep` in the background of a shell that then exits (or sleeps `then_s`) once
    that runs: one fork, a new session."""
    script = (
        f"setsid {SLEEP} {seconds} & pid=$!; echo $pid > {pidfile};"
        f" until grep -qs {seconds} /proc/$pid/cmdline; do sleep 0.01; done"
    )
    return ["sh", "-c", script + (f"; exec sleep {then_s:g}" if then_s else "")]


@pytest.fixture
def daemons() -> Iterator[list[tuple[int, str]]]:
    """(pid, seconds) of daemons a test started: any still sleeping at teardown is killed."""
    started: list[tuple[int, str]] = []
    yield started
    for pid, seconds in started:
        if sleeping(pid, seconds):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["cgroup", "marker"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The executor of this process with job cgroups (skipped where it may not make them) or
    with markers only."""
    monkeypatch.setenv(CGROUPS_VAR, "1" if request.param == "cgroup" else "0")
    cgroups = JobCgroups()
    if request.param == "cgroup":
        _skip_without_cgroups(cgroups, "this test process")
    monkeypatch.setattr(executor, "CGROUPS", cgroups)
    monkeypatch.setattr(guard, "CGROUPS", cgroups)
    yield request.param
    cgroups.close()


@pytest.fixture
def adopting(monkeypatch: pytest.MonkeyPatch) -> Strays:
    """The executor as in a runner process: children without a marker are jobs' too (this
    process's children of now, the session's Redis servers, are protected)."""
    strays = Strays()
    strays.adopt_unmarked()
    monkeypatch.setattr(executor, "STRAYS", strays)
    monkeypatch.setattr(guard, "STRAYS", strays)
    return strays


async def started_daemon(pidfile: Path, seconds: str, daemons: list[tuple[int, str]]) -> int:
    await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    pid = int(pidfile.read_text())
    daemons.append((pid, seconds))
    return pid


# -- in process: each way, each kind of daemon ---------------------------------------------------


async def test_a_setsid_process_is_stopped_when_its_job_ends(
    way: str, tmp_path: Path, daemons: list[tuple[int, str]]
) -> None:
    pidfile, seconds = tmp_path / "daemon.pid", unique_seconds()
    result = await run(ExecSpec(argv=tuple(setsid_argv(pidfile, seconds)), kill_grace_s=1.0))
    assert result.succeeded, result
    pid = await started_daemon(pidfile, seconds, daemons)
    assert not sleeping(pid, seconds)


@pytest.mark.parametrize("clear_env", [False, True], ids=["marked", "cleared-env"])
async def test_a_double_forked_daemon_is_stopped_when_its_job_ends(
    way: str,
    clear_env: bool,
    adopting: Strays,
    tmp_path: Path,
    daemons: list[tuple[int, str]],
) -> None:
    pidfile, seconds = tmp_path / "daemon.pid", unique_seconds()
    argv = daemon_argv(pidfile, seconds, clear_env=clear_env)
    result = await run(ExecSpec(argv=tuple(argv), kill_grace_s=1.0))
    assert result.succeeded, result
    pid = await started_daemon(pidfile, seconds, daemons)
    assert not sleeping(pid, seconds)


async def test_without_cgroups_a_daemon_that_cleared_its_environment_is_left_to_runners(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, daemons: list[tuple[int, str]]
) -> None:
    """A program that only embeds the executor stops no unmarked process: its other children
    (here the session's Redis servers) could not be told from a job's."""
    monkeypatch.setenv(CGROUPS_VAR, "0")
    cgroups = JobCgroups()
    monkeypatch.setattr(executor, "CGROUPS", cgroups)
    monkeypatch.setattr(guard, "CGROUPS", cgroups)
    pidfile, seconds = tmp_path / "daemon.pid", unique_seconds()
    result = await run(ExecSpec(argv=tuple(daemon_argv(pidfile, seconds, clear_env=True))))
    assert result.succeeded, result
    pid = await started_daemon(pidfile, seconds, daemons)
    assert guard.stop_strays() == 0
    assert sleeping(pid, seconds)


async def test_a_process_of_a_running_job_is_left_alone_when_another_job_ends(
    way: str, tmp_path: Path, daemons: list[tuple[int, str]]
) -> None:
    """Reparented to the runner while its job runs: attributed to that job, not to the job
    that ends meanwhile; stopped when its own job ends."""
    pidfile, seconds = tmp_path / "daemon.pid", unique_seconds()
    long = await Execution.start(
        ExecSpec(argv=tuple(daemon_argv(pidfile, seconds, clear_env=False, then_s=30)))
    )
    try:
        pid = await started_daemon(pidfile, seconds, daemons)
        assert (await run(ExecSpec(argv=("true",)))).succeeded
        assert guard.stop_strays() == 0  # as the runner does every few seconds
        assert sleeping(pid, seconds)
    finally:
        long.terminate("test over")
        result = await long.wait()
    assert result.kill_reason == "test over"
    assert not sleeping(pid, seconds)


def test_an_empty_environment_is_believed_only_once_it_stays_empty() -> None:
    """An environment read during an exec reads empty: a process is taken for one started
    with none (no marker) only after EMPTY_SETTLE_S, so a job's own process caught mid-exec is
    not mistaken for an unmarked one."""
    strays = Strays()
    strays.adopt_unmarked()
    child = subprocess.Popen([SLEEP, "30"], env={}, stdin=subprocess.DEVNULL)
    try:
        assert token_of(child.pid) == EMPTY
        assert strays.survey() == ([], True)  # not told yet: look again
        wait_until_sync(lambda: strays.survey()[0] == [child.pid], timeout_s=2.0)
        assert strays.survey()[1] is False
    finally:
        child.kill()
        child.wait()


async def test_a_job_that_leaves_nothing_behind_ends_as_before(way: str) -> None:
    result = await run(
        ExecSpec(argv=("sh", "-c", "echo out; echo err >&2; exit 3"), kill_grace_s=5)
    )
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.duration_s < 2.0  # no grace waited for


async def test_a_job_s_environment_has_its_marker_and_no_runner_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKRUNNER_AUTH_TOKEN", "s3cret-token")
    monkeypatch.setenv("TASKRUNNER_REDIS_URL", "redis://:s3cret-password@10.0.0.5:6379/0")
    monkeypatch.setenv("KEPT_VARIABLE", "kept")
    for env in (None, {"TASKRUNNER_ALLOW": "sh", "PATH": os.environ["PATH"], "MINE": "1"}):
        result = await run(ExecSpec(argv=("env",), env=env, job_id="job-7"))
        names = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
        assert {n for n in names if n.startswith("TASKRUNNER_")} == {
            "TASKRUNNER_JOB_ID",
            "TASKRUNNER_JOB_TOKEN",
        }, names
        assert names["TASKRUNNER_JOB_ID"] == "job-7"
        assert ("KEPT_VARIABLE" in names) == (env is None)
        assert b"s3cret" not in result.stdout


# -- lack of resources ---------------------------------------------------------------------------


async def test_a_start_that_runs_out_of_descriptors_is_a_resource_error() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        with pytest.raises(ResourceExhausted, match="lack of resources: Too many open files"):
            await Execution.start(ExecSpec(argv=("true",)))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (await run(ExecSpec(argv=("true",)))).succeeded


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM])
def test_every_lack_of_resources_is_told_apart(code: int) -> None:
    spec = ExecSpec(argv=("prog",))
    error = spawn._spawn_error(spec, OSError(code, os.strerror(code)))
    assert isinstance(error, ResourceExhausted)
    not_found = spawn._spawn_error(spec, FileNotFoundError(errno.ENOENT, "gone"))
    assert not isinstance(not_found, ResourceExhausted)


async def test_defer_schedules_the_job_again_with_its_attempt_uncounted(redis_url: str) -> None:
    store = Store.from_url(redis_url)
    try:
        await store.register_runner("r1", lease_s=10)
        await store.create_channel(ChannelConfig(name="held", paused=True))
        await store.enqueue(Job(id="j1", task="true", channel="held"), runner_id="test")
        [claimed] = await store.claim("held", count=1, runner_id="r1")
        assert claimed.attempt == 1
        assert await store.defer(claimed, runner_id="r2", delay_s=1, reason="x") == ""
        outcome = await store.defer(claimed, runner_id="r1", delay_s=0.2, reason="not started: x")
        assert outcome == "deferred"
        record = await stored_job(store, "j1")
        assert (record.state, record.attempt, record.runner) == ("scheduled", 0, UNSET)
        assert record.handed_back == "not started: x"
        assert not await store.runner_job_channels("r1")

        async def promoted() -> bool:  # due in 0.2 s: the scheduler's promotion moves it
            return (await store.promote_due("held"))[0] == 1

        await wait_until(promoted, timeout_s=5.0)
        [again] = await store.claim("held", count=1, runner_id="r1")
        assert again.attempt == 1
        await store.cancel("j1", result_ttl_s=60)  # running: a cancel is only requested
        assert await store.defer(again, runner_id="r1", delay_s=1, reason="x") == "cancel_requested"
    finally:
        await store.close()


# -- end to end: `taskrunner run` children -------------------------------------------------------


@pytest.fixture(params=["cgroup", "marker"])
def runner_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """A runner child's environment: job cgroups where it may make them, or markers only."""
    if request.param == "marker":
        return {CGROUPS_VAR: "0"}
    probe = JobCgroups()
    _skip_without_cgroups(probe, "a runner started here")
    probe.close()
    return {}


def _skip_without_cgroups(cgroups: JobCgroups, who: str) -> None:
    """Skip a [cgroup] case where job cgroups cannot be made; its [marker] twin still runs."""
    if cgroups.root is None:
        cgroups.close()
        pytest.skip(
            f"job cgroups need a writable (delegated) cgroup v2 subtree, which {who} does not"
            " have; the marker fallback a runner uses then is tested by this test's [marker] case"
        )


KINDS = ("setsid", "double-fork", "cleared-env")


def daemon_job(
    kind: str, pidfile: Path, seconds: str, *, then_s: float = 0
) -> tuple[str, list[str]]:
    """(task, args) of a job that starts a daemon of that kind."""
    if kind == "setsid":
        argv = setsid_argv(pidfile, seconds, then_s=then_s)
    else:
        argv = daemon_argv(pidfile, seconds, clear_env=kind == "cleared-env", then_s=then_s)
    return argv[0], argv[1:]


async def push_daemon_jobs(
    redis: aioredis.Redis, tmp_path: Path, prefix: str, *, then_s: float = 0
) -> dict[str, tuple[Path, str]]:
    """One job of each kind; job id -> (its daemon's pid file, its sleep's seconds)."""
    jobs = {}
    for kind in KINDS:
        job_id, seconds = f"{prefix}-{kind}", unique_seconds()
        pidfile = tmp_path / f"{job_id}.pid"
        task, args = daemon_job(kind, pidfile, seconds, then_s=then_s)
        message = {"task": task, "args": args, "id": job_id}
        await redis.lpush("task:prepare:queue", json.dumps(message))
        jobs[job_id] = (pidfile, seconds)
    return jobs


async def test_no_daemon_outlives_its_job_nor_a_drain(
    runners: Runners,
    redis: aioredis.Redis,
    tmp_path: Path,
    runner_env: dict[str, str],
    daemons: list[tuple[int, str]],
) -> None:
    r = await runners.start(
        "daemons", "--kill-grace", "0.5", "--drain-timeout", "0.5", env=runner_env
    )
    ended = await push_daemon_jobs(redis, tmp_path, "ends")
    for job_id, (pidfile, seconds) in ended.items():
        assert (await wait_state(redis, job_id, "succeeded"))["attempt"] == "1"
        pid = await started_daemon(pidfile, seconds, daemons)
        assert not sleeping(pid, seconds), f"the daemon of {job_id} outlived its job"

    running = await push_daemon_jobs(redis, tmp_path, "runs", then_s=60)
    pids = {}
    for job_id, (pidfile, seconds) in running.items():
        pids[job_id] = await started_daemon(pidfile, seconds, daemons)
        await wait_until(lambda p=pids[job_id], s=seconds: sleeping(p, s))
    assert await r.stop() == 0  # SIGUSR2: the drain stops the jobs and hands them back
    for job_id, (_, seconds) in running.items():
        assert (await job(redis, job_id))["state"] == "queued"
        assert not sleeping(pids[job_id], seconds), f"the daemon of {job_id} outlived a drain"


async def test_a_sigkilled_runner_s_watchdog_stops_what_its_jobs_left(
    runners: Runners,
    redis: aioredis.Redis,
    tmp_path: Path,
    runner_env: dict[str, str],
    daemons: list[tuple[int, str]],
) -> None:
    r = await runners.start("killed", env=runner_env)
    pidfile, seconds = tmp_path / "daemon.pid", unique_seconds()
    task, args = daemon_job("double-fork", pidfile, seconds, then_s=60)
    await redis.lpush("task:prepare:queue", json.dumps({"task": task, "args": args, "id": "k"}))
    pid = await started_daemon(pidfile, seconds, daemons)
    await wait_until(lambda: sleeping(pid, seconds))
    r.kill()
    await wait_until(lambda: not sleeping(pid, seconds), timeout_s=10, message="daemon stopped")
    assert "process(es) jobs left" in r.log()


async def test_runner_secrets_never_reach_a_job(
    runners: Runners, redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """TASKRUNNER_AUTH_TOKEN and TASKRUNNER_REDIS_URL configure the runner, never its jobs:
    neither a command job nor a kingtask script job sees any TASKRUNNER_* variable but its own
    marker."""
    token, port = "s3cret-" + secrets.token_hex(8), free_port()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "show-env").write_text("#!/bin/sh\nenv\n")
    (bin_dir / "show-env").chmod(0o755)
    env = {
        "TASKRUNNER_AUTH_TOKEN": token,
        "TASKRUNNER_REDIS_URL": redis_url,
        "TASKRUNNER_HTTP_ADDR": f"127.0.0.1:{port}",
        "TASKRUNNER_PIDFILE": str(runners.pidfile("secrets")),
        "TASKRUNNER_BIN_PATH": str(bin_dir),
    }
    r = await runners.start("secrets", "run", defaults=False, env=env, port=port)
    await redis.lpush("task:prepare:queue", json.dumps({"task": "env", "id": "env-command"}))
    status, script_id = r.post(
        "/api/v1/task/script",
        {"bin_name": "show-env"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200, script_id
    for job_id in ("env-command", script_id):
        record = await wait_state(redis, job_id, "succeeded")
        names = dict(line.split("=", 1) for line in record["stdout"].splitlines() if "=" in line)
        assert {n for n in names if n.startswith("TASKRUNNER_")} == {
            "TASKRUNNER_JOB_ID",
            "TASKRUNNER_JOB_TOKEN",
        }, record["stdout"]
        assert names["TASKRUNNER_JOB_ID"] == job_id
        assert token not in record["stdout"] and redis_url not in record["stdout"]
    assert await r.stop() == 0


async def test_a_runner_out_of_descriptors_puts_the_job_back_and_runs_it_later(
    runners: Runners, redis: aioredis.Redis
) -> None:
    """RLIMIT_NOFILE of a live runner lowered to its lowest free descriptor: the job cannot
    start (EMFILE), goes back `scheduled` with its attempt uncounted and one log line; once
    the limit is raised again it runs, as attempt 1."""
    r = await runners.start("nofile", "--concurrent", "1")
    warm = r.push("true")  # the runner's Redis connections are open before the limit drops
    await wait_state(redis, warm["id"], "succeeded")
    open_fds = {int(fd) for fd in os.listdir(f"/proc/{r.pid}/fd")}
    lowest_free = min(set(range(len(open_fds) + 1)) - open_fds)
    soft, hard = resource.prlimit(r.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(r.pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        await redis.lpush("task:prepare:queue", json.dumps({"task": "echo ran", "id": "starved"}))
        record = await wait_state(redis, "starved", "scheduled")
    finally:
        resource.prlimit(r.pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert record["attempt"] == "0"
    assert "Too many open files" in record["handed_back"], record
    record = await wait_state(redis, "starved", "succeeded")
    assert (record["attempt"], record["stdout"]) == ("1", "ran\n")
    lines = [line for line in r.log().splitlines() if "starved" in line and "put back" in line]
    assert len(lines) == 1 and "not counted as an attempt" in lines[0], lines
    assert "claim reply lost" not in r.log()
    assert await r.stop() == 0
