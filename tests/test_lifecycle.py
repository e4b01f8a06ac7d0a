"""Everyday stops and restarts: a clean stop is exact (issue 11).

A restart with a backlog must run the queued jobs in FIFO order, each as attempt 1, with no
"reply lost" hand-back: the faults here are ordinary ones (a Redis that forgot its scripts, a
stop that lands while a claim is on its way), not crashes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from msgspec import UNSET
from redis import Redis as SyncRedis

from taskrunner.embedded import EmbeddedRedis
from taskrunner.liveness import STOP_REDIS_S
from taskrunner.models import ChannelConfig, Job, JobState
from taskrunner.recording import LAST_TRY_S
from taskrunner.runner import HANDBACK_WAIT_S
from taskrunner.store import Store
from tests.support.net import free_port
from tests.support.processes import catches, connected_to
from tests.support.redis_servers import RedisServer
from tests.support.waiting import wait_until, wait_until_sync

pytestmark = pytest.mark.slow  # real `taskrunner run` processes, signals and Redis outages


async def queued(store: Store, channel: str, *ids: str) -> None:
    await store.create_channel(ChannelConfig(name=channel, worker_count=1), exist_ok=True)
    for job_id in ids:
        await store.enqueue(Job(id=job_id, task="true", channel=channel), runner_id="test")


@pytest.mark.asyncio
async def test_a_result_written_after_redis_forgot_its_scripts_claims_the_next_job_once(
    redis_url: str, redis: aioredis.Redis
) -> None:
    """A fresh Redis (the embedded Valkey restarted) knows only the scripts run since: the
    finish script fails with NOSCRIPT in the pipeline that also claims the next job. The retry
    must not claim again: the first claim ran, and its job would be owned but never started."""
    store = Store.from_url(redis_url)
    try:
        await queued(store, "one", "a", "b", "c")
        await store.register_runner("r1")
        [first] = await store.claim("one", count=1, runner_id="r1")
        await redis.script_flush()
        await store.claim("one", count=0, runner_id="r1")  # the claim script is known again
        recorded, successors = await store.finish(
            first,
            runner_id="r1",
            state=JobState.SUCCEEDED,
            result={"exit_code": "0"},
            result_ttl_s=60,
            claim_next=1,
        )
        assert recorded
        assert [s.job.id for s in successors] == ["b"]
        assert [s.attempt for s in successors] == [1]
        assert await store.runner_job_channels("r1") == {"b": "one"}
        assert (await stored_job(store, "c")).state == "queued"
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_job_claimed_but_never_started_goes_back_first_with_its_attempt_uncounted(
    redis_url: str,
) -> None:
    """A claim that lands as the runner stops (or whose reply was lost) is not an attempt."""
    store = Store.from_url(redis_url)
    try:
        await queued(store, "one", "a", "b")
        await store.register_runner("r1")
        [claimed] = await store.claim("one", count=1, runner_id="r1")
        outcome = await store.hand_back(
            runner_id="r1", job_id="a", channel="one", reason="drain", started=False
        )
        assert outcome == "handed_back"
        record = await stored_job(store, "a")
        assert (record.state, record.attempt, record.handed_back) == ("queued", 0, UNSET)
        [again] = await store.claim("one", count=1, runner_id="r1")
        assert (again.job.id, again.attempt) == ("a", claimed.attempt)
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_a_cancel_is_not_lost_with_its_runner(redis_url: str) -> None:
    """Cancel a running job, then its runner dies: the hand-back ends it `cancelled` instead
    of running it again from the start."""
    store = Store.from_url(redis_url)
    try:
        await queued(store, "one", "a")
        await store.register_runner("r1")
        await store.claim("one", count=1, runner_id="r1")
        assert await store.cancel("a", result_ttl_s=60) == "running"
        outcome = await store.hand_back(
            runner_id="r1", job_id="a", channel="one", reason="runner lost"
        )
        assert outcome == "cancelled"
        record = await stored_job(store, "a")
        assert record.state == "cancelled"
        assert "runner lost" in record.error
        assert await store.claim("one", count=1, runner_id="r1") == []
        assert (await store.daily_counts(time.strftime("%Y-%m-%d"))).get("cancelled") == 1
    finally:
        await store.close()


# -- `./scripts/run` as a user runs it: a process group on a terminal, embedded Valkey ----------

BIN_DIR = Path(sys.executable).parent


class EmbeddedRun:
    """`taskrunner run --embedded-redis DIR` as `./scripts/run` starts it, in a process group
    of its own as a terminal's foreground job is; its log in DIR/../runner-N.log."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "var"
        self.tmp = tmp_path
        self.http = f"127.0.0.1:{free_port()}"
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        argv = [
            str(BIN_DIR / "taskrunner"), "run", "--embedded-redis", str(self.dir),
            "--embedded-redis-port", "0", "--http-addr", self.http, "--pidfile", "",
            "--drain-timeout", "20",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                process_group=0,
            )  # fmt: skip
        wait_until_sync(lambda: "taskrunner started" in self.text(), timeout_s=30,
                        message="the runner to start")  # fmt: skip

    @property
    def log(self) -> Path:
        return self.tmp / f"runner-{self.starts}.log"

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def server(self) -> EmbeddedRedis:
        server = EmbeddedRedis(self.dir)
        assert server.attach_running(), "the embedded Valkey is not running"
        return server

    def ctrl_c(self) -> int:
        """SIGINT to the whole foreground process group, as a terminal's Ctrl-C sends it."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def embedded_run(tmp_path: Path) -> Iterator[EmbeddedRun]:
    run = EmbeddedRun(tmp_path)
    try:
        yield run
    finally:
        if run.process is not None and run.process.poll() is None:
            run.kill()
        server = EmbeddedRedis(run.dir)
        if server.attach_running():
            server.stop()


def push(server: EmbeddedRedis, task: str, job_id: str) -> None:
    with SyncRedis.from_url(server.url) as client:
        client.lpush("task:prepare:queue", json.dumps({"task": task, "chan": "biz", "id": job_id}))


def job_record(server: EmbeddedRedis, job_id: str) -> dict[bytes, bytes]:
    with SyncRedis.from_url(server.url) as client:
        return client.hgetall(f"task:job:{job_id}")  # type: ignore[return-value]


def test_ctrl_c_drains_the_running_job_once_and_leaves_valkey_with_the_queue(
    embedded_run: EmbeddedRun,
) -> None:
    """Issue 11, reproduction 1: Ctrl-C killed the embedded Valkey at once; the result could not
    be written, the stop took 65 s with exit 1, and the next start ran the job again."""
    out = embedded_run.tmp / "out.txt"
    embedded_run.start()
    server = embedded_run.server()
    started = embedded_run.tmp / "started"
    push(server, f"sh -c 'touch {started}; sleep 2; echo ran >> {out}'", "job-1")
    wait_until_sync(started.exists, message="the job's process to start")
    began = time.monotonic()
    assert embedded_run.ctrl_c() == 0, embedded_run.text()
    assert time.monotonic() - began < 15
    text = embedded_run.text()
    assert "drain 2/3: 1 jobs finished, 0 still running" in text, text
    assert "cannot record" not in text and "Connection refused" not in text, text
    record = job_record(server, "job-1")  # Valkey still answers, with the result
    assert (record[b"state"], record[b"attempt"]) == (b"succeeded", b"1")
    push(server, f"sh -c 'echo second >> {out}'", "job-2")  # pushes work with no runner

    embedded_run.start()  # attaches to the same Valkey
    assert "already running: attached" in embedded_run.text()
    assert embedded_run.server().pid == server.pid
    wait_until_sync(lambda: job_record(server, "job-2").get(b"state") == b"succeeded",
                    message="the job pushed meanwhile to run")  # fmt: skip
    assert embedded_run.ctrl_c() == 0
    assert out.read_text().split() == ["ran", "second"]  # each job ran once


def test_a_sigkilled_runner_leaves_valkey_running_and_the_next_start_attaches(
    embedded_run: EmbeddedRun,
) -> None:
    embedded_run.start()
    server = embedded_run.server()
    embedded_run.kill()
    assert EmbeddedRedis(embedded_run.dir).status().state == "running"
    push(server, "true", "job-1")
    embedded_run.start()
    assert "already running: attached" in embedded_run.text()
    wait_until_sync(lambda: job_record(server, "job-1").get(b"state") == b"succeeded",
                    message="the job pushed while no runner ran")  # fmt: skip


# -- stops and restarts of `taskrunner run` on a shared Redis ------------------------------------

from tests.test_process import Runners, q, sh, wait_state  # noqa: E402


@pytest.fixture
def procs(tmp_path: Path, redis_url: str) -> Iterator[Runners]:
    """`taskrunner run` children (test_process's factory), killed and reaped at teardown."""
    factory = Runners(tmp_path, redis_url)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.mark.asyncio
async def test_a_restart_with_a_backlog_runs_each_queued_job_once_in_order_as_attempt_1(
    procs: Runners, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Issue 11, reproduction 2: job 1, then job 3 ran; 6 s later job 2 was handed back as a
    lost claim and ran last as attempt 2. Here the Redis also forgot its scripts meanwhile, as
    an embedded Valkey that restarted with its runner did."""
    out = tmp_path / "out.txt"
    a = await procs.start("a")
    a.create_channel("one", worker=1)
    ids = [a.push(sh(f"echo start{n} >> {q(out)}; sleep {2 if n == 0 else 0.3}; "
                     f"echo end{n} >> {q(out)}"), "one")["id"] for n in range(4)]  # fmt: skip
    await wait_state(redis, ids[0], "running")
    a.send(signal.SIGUSR2)
    assert await a.wait_exit(timeout_s=30) == 0, a.log()
    await redis.script_flush()
    b = await procs.start("b")
    for job_id in ids:
        await wait_state(redis, job_id, "succeeded", timeout_s=30)
    b.send(signal.SIGUSR2)
    assert await b.wait_exit(timeout_s=30) == 0, b.log()
    assert out.read_text().split() == [f"{edge}{n}" for n in range(4) for edge in ("start", "end")]
    for job_id in ids:
        record = await redis.hgetall(f"task:job:{job_id}")
        assert (record[b"attempt"], record.get(b"handed_back")) == (b"1", None), record
    assert "claimed but never started" not in a.log() + b.log()
    assert "handed back to channel" not in a.log() + b.log()
    assert "drain 2/3: 1 jobs finished, 0 still running" in a.log()


@pytest.mark.asyncio
async def test_sigterm_while_redis_hangs_during_start_up_stops_the_runner_at_once(
    procs: Runners, redis_server: RedisServer
) -> None:
    a = procs.spawn("a")
    redis_server.pause()
    try:
        await wait_until(
            lambda: catches(a.pid, signal.SIGTERM) and connected_to(a.pid, redis_server.port),
            timeout_s=30,  # start-up takes seconds on a loaded machine
            message="the runner to be in its first Redis call, its stop signals handled",
        )
        a.send(signal.SIGTERM)
        began = time.monotonic()
        assert await a.wait_exit(timeout_s=10) == 0, a.log()
        assert time.monotonic() - began < 5
    finally:
        redis_server.resume()


@pytest.mark.asyncio
async def test_a_drain_while_redis_hangs_ends_in_time_and_reports_what_happened(
    procs: Runners, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    """Issue 12: with Redis SIGSTOPped a drain with --drain-timeout 5 still ran after 40 s, and
    reported jobs "killed and handed back" that had finished and were not handed back."""
    a = await procs.start("a", "--drain-timeout", "3", "--kill-grace", "1")
    short = a.push(sh("sleep 1.5"))["id"]
    long = a.push("sleep 60")["id"]
    await wait_state(redis, short, "running")
    await wait_state(redis, long, "running")
    redis_server.pause()
    try:
        a.send(signal.SIGUSR2)
        began = time.monotonic()
        code = await a.wait_exit(timeout_s=30)
        took = time.monotonic() - began
    finally:
        redis_server.resume()
    log = a.log()
    # The stop's designed waits: the drain timeout, the kill grace and the hand-back wait, a last
    # moment for replies, then the last Redis calls; plus 3 s for a loaded machine.
    designed = 3 + 1 + HANDBACK_WAIT_S + LAST_TRY_S + STOP_REDIS_S
    assert took < designed + 3, (took, log)
    assert code == 1, log  # results not written: the lease hands the jobs back
    assert "drain 2/3: 1 jobs finished, 1 still running; 1 results still being written" in log
    assert "drain 3/3: 1 jobs killed, 0 of them handed back to their queues" in log
    assert "2 jobs could not be written back to Redis" in log


# -- pushing is safe to retry --------------------------------------------------------------------

from taskrunner.service import PUSH_DEADLINE_S  # noqa: E402
from tests.support.http import http  # noqa: E402
from tests.support.runners import RunnerHarness, stored_job  # noqa: E402
from tests.support.runners import wait_state as harness_wait_state  # noqa: E402


@pytest.mark.asyncio
async def test_a_push_retried_with_its_id_answers_success_and_the_job_runs_once(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    runner = await runners.start()
    out = tmp_path / "out.txt"
    form = {"task": f"sh -c 'echo ran >> {out}'", "id": "order-42"}
    _, first = await http(runner, "POST", "/push", data=form)
    assert first["data"] == {"task_name": form["task"], "result": True, "id": "order-42"}
    await wait_state_store(runner, "order-42", "succeeded")
    _, again = await http(runner, "POST", "/push", data=form)  # after it ran: still that job
    assert (again["status_code"], again["data"]["result"], again["data"]["id"]) == (
        200,
        True,
        "order-42",
    )
    status, body = await http(runner, "POST", "/api/jobs", json={**form, "channel": "biz"})
    assert (status, body["id"], body["state"]) == (200, "order-42", "succeeded")
    assert out.read_text() == "ran\n"


async def wait_state_store(runner: Any, job_id: str, state: str) -> None:
    await harness_wait_state(runner.store, job_id, state)


@pytest.mark.asyncio
async def test_a_push_answers_503_with_its_id_within_2_s_when_redis_hangs_and_a_retry_runs_it_once(
    runners: RunnerHarness, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Issue 11, reproduction 3: POST /push answered 503 after 15 s, yet the job was queued and
    ran; a client that followed "try again" pushed it twice."""
    runner = await runners.start()
    out = tmp_path / "out.txt"
    task = f"sh -c 'echo ran >> {out}'"
    other = f"sh -c 'echo ran  >> {out}'"  # not the same job: the default channel is distinct
    redis_server.pause()
    try:
        began = time.monotonic()
        status, body = await http(runner, "POST", "/push", data={"task": task})
        took = time.monotonic() - began
        native_status, native = await http(runner, "POST", "/api/jobs", json={"task": other})
        kingtask_status, kingtask = await http(
            runner, "POST", "/api/v1/task/rpc", data={"method": "GET", "url": "http://127.0.0.1:1/"}
        )
    finally:
        redis_server.resume()
    assert took < PUSH_DEADLINE_S + 1.5, took
    assert (status, body["status_code"], body["data"]["result"]) == (503, 503, False)
    job_id = body["data"]["id"]
    assert job_id and job_id in body["message"] and "may or may not be queued" in body["message"]
    assert native_status == 503 and native["id"] and native["id"] in native["error"]["message"]
    assert kingtask_status == 503 and "may or may not be queued" in kingtask
    for retry, again_task in ((job_id, task), (native["id"], other)):  # with the id it was given
        _, again = await http(runner, "POST", "/push", data={"task": again_task, "id": retry})
        assert (again["data"]["result"], again["data"]["id"]) == (True, retry)
    for retry in (job_id, native["id"]):
        await wait_state_store(runner, retry, "succeeded")
    assert out.read_text() == "ran\nran\n"  # two jobs pushed, each ran once


@pytest.mark.asyncio
async def test_healthz_and_reads_answer_503_when_redis_does_not_answer(
    runners: RunnerHarness, redis_server: RedisServer
) -> None:
    runner = await runners.start()
    assert (await http(runner, "GET", "/healthz"))[0] == 200
    redis_server.pause()
    try:
        for path in ("/status", "/api/jobs?channel=default", "/api/v1/task/count/undo"):
            began = time.monotonic()
            status, _ = await http(runner, "GET", path)
            assert status in (403, 503) and time.monotonic() - began < 3.5, (path, status)
        await wait_until(
            lambda: health_status(runner), timeout_s=15, message="/healthz to answer 503"
        )
        status, body = await http(runner, "GET", "/healthz")
        assert body["redis"] == "unreachable" and body["redis_unreachable_s"] >= 5
    finally:
        redis_server.resume()
    await wait_until(lambda: healthy(runner), timeout_s=10, message="/healthz 200 again")


async def health_status(runner: Any) -> bool:
    return (await http(runner, "GET", "/healthz"))[0] == 503


async def healthy(runner: Any) -> bool:
    return (await http(runner, "GET", "/healthz"))[0] == 200


@pytest.mark.asyncio
async def test_a_dead_job_s_id_pushed_again_answers_the_dead_job_and_never_overwrites_it(
    runners: RunnerHarness, tmp_path: Path
) -> None:
    """Issue 12: a new push with a dead job's id overwrote the dead record, and /api/dead-jobs
    then listed a running job."""
    runner = await runners.start()
    runs = tmp_path / "runs"
    task = {"task": "sh", "args": ["-c", f"echo run >> {runs}; false"], "retries": 1, "id": "d1"}
    status, _ = await http(runner, "POST", "/api/jobs", json=task)
    assert status == 201
    await wait_state_store(runner, "d1", "dead")
    status, again = await http(runner, "POST", "/api/jobs", json={**task, "retries": 0})
    assert (status, again["id"], again["state"], again["attempt"]) == (200, "d1", "dead", 2)
    _, pushed = await http(runner, "POST", "/push", data={"task": "true", "id": "d1"})
    assert (pushed["data"]["result"], pushed["data"]["id"]) == (True, "d1")
    _, dead = await http(runner, "GET", "/api/dead-jobs")
    assert [(j["id"], j["state"]) for j in dead["jobs"]] == [("d1", "dead")]
    assert runs.read_text().split() == ["run", "run"]  # the two attempts of the first push only
