"""Logs: JSON lines from a real `taskrunner run --log-format json` process, the job context every
job line carries, and the per-channel logging of jobs' output lines (off by default)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from taskrunner.attempt import OUTPUT_LOG_LINES
from taskrunner.logs import BatchingHandler, JsonFormatter, TextFormatter
from tests.support.http import http
from tests.support.net import free_port
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

BIN_DIR = Path(sys.executable).parent
JOB_CONTEXT = ("job_id", "channel", "attempt")


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TASKRUNNER_")}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "taskrunner"), *args],
        capture_output=True, text=True, env=child_env(), timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def json_runner(tmp_path: Path, redis_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A `taskrunner run --log-format json` child; its log file is printed at teardown."""
    port, log_path = free_port(), tmp_path / "runner.log"
    argv = [
        str(BIN_DIR / "taskrunner"), "run", "--log-format", "json", "--redis-url", redis_url,
        "--http-addr", f"127.0.0.1:{port}", "--pidfile", str(tmp_path / "runner.pid"),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env()
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        print(log_path.read_text(errors="replace"))


async def api(base: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + path, **kwargs) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def wait_state_raw(redis: aioredis.Redis, job_id: str, state: str) -> dict[str, str]:
    record: dict[str, str] = {}

    async def reached() -> bool:
        nonlocal record
        raw = await redis.hgetall(f"task:job:{job_id}")
        record = {k.decode(): v.decode() for k, v in raw.items()}
        return record.get("state") == state

    await wait_until(reached, message=f"job {job_id} {state}")
    return record


@pytest.mark.slow
async def test_json_logs_are_one_object_a_line_with_job_context(
    json_runner: tuple[subprocess.Popen[bytes], str],
    redis: aioredis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    proc, base = json_runner

    async def up() -> bool:
        assert proc.poll() is None, "the runner exited at start"
        try:
            return (await api(base, "GET", "/healthz"))[0] == 200
        except aiohttp.ClientError:
            return False

    await wait_until(up, timeout_s=15, message="runner up")
    assert cli("queue", "create", "loud", "--redis-url", redis_url).returncode == 0
    updated = cli("queue", "update", "loud", "--log-output", "--json", "--redis-url", redis_url)
    assert updated.returncode == 0 and json.loads(updated.stdout)["log_output"] is True, updated
    jobs = {}
    for name, task, channel in [
        ("ok", "echo fine", "default"), ("bad", "sh -c 'exit 3'", "default"),
        ("missing", "no-such-program-xyz", "default"), ("loud", "printf 'one\\ntwo\\n'", "loud"),
    ]:  # fmt: skip
        status, body = await api(base, "POST", "/api/jobs", json={"task": task, "channel": channel})
        assert status == 201, body
        jobs[name] = body["id"]
    for name, state in [("ok", "succeeded"), ("bad", "failed"), ("missing", "failed"),
                        ("loud", "succeeded")]:  # fmt: skip
        record = await wait_state_raw(redis, jobs[name], state)
        assert record["state"] == state
    proc.send_signal(signal.SIGUSR2)
    await wait_until(lambda: proc.poll() is not None, timeout_s=15, message="runner exit")
    assert proc.returncode == 0

    lines = (tmp_path / "runner.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(
        isinstance(e, dict) and {"ts", "time", "level", "logger", "message"} <= e.keys()
        for e in entries
    )
    assert any(e["message"].startswith("drain 3/3") for e in entries)
    by_job = {job_id: [e for e in entries if e.get("job_id") == job_id] for job_id in jobs.values()}
    for name, job_id in jobs.items():
        job_lines = by_job[job_id]
        assert job_lines, f"no log line for job {name}"
        for entry in job_lines:
            assert all(field in entry for field in JOB_CONTEXT), entry
            assert entry["attempt"] == 1 and entry["channel"] in ("default", "loud"), entry
        mentioning = [
            e for e in entries if job_id in e["message"] and e["logger"].startswith("taskrunner.")
        ]
        assert all(e.get("job_id") == job_id for e in mentioning), mentioning
    for name in ("ok", "bad", "loud"):  # these ran: their start and end lines carry the pid
        ran = [e for e in by_job[jobs[name]] if e["logger"] == "taskrunner.channel"]
        assert len(ran) == 2 and all(isinstance(e.get("pid"), int) for e in ran), ran
    first = by_job[jobs["missing"]][0]  # a job that cannot start has no pid, but its context
    assert first["message"].startswith(f"job {jobs['missing']} cannot start") and "pid" not in first
    output = [e for e in by_job[jobs["loud"]] if e["logger"] == "taskrunner.output"]
    assert [(e["stream"], e["message"]) for e in output] == [
        ("stdout", f"job {jobs['loud']} stdout: one"),
        ("stdout", f"job {jobs['loud']} stdout: two"),
    ]
    assert not any(e["logger"] == "taskrunner.output" for e in by_job[jobs["ok"]])  # off by default


async def test_output_lines_are_logged_only_for_channels_that_ask(
    runners: RunnerHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskrunner")
    runner = await runners.start()
    for name in ("quiet", "loud"):
        status, body = await http(runner, "POST", "/api/channels", json={"name": name})
        assert status == 201 and "log_output" not in body, body
    status, body = await http(runner, "PATCH", "/api/channels/loud", json={"log_output": True})
    assert status == 200 and body["log_output"] is True, body
    await wait_until(lambda: runner.workers["loud"].config.log_output, message="loud reloaded")

    script = "echo out1; echo err1 >&2; echo out2; seq 1 300"
    ids = {}
    for name in ("quiet", "loud"):
        status, body = await http(
            runner,
            "POST",
            "/api/jobs",
            json={"task": "sh", "args": ["-c", script], "channel": name},
        )
        assert status == 201, body
        ids[name] = body["id"]
        await wait_state(runner.store, ids[name], "succeeded")

    def output_of(job_id: str) -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "taskrunner.output" and getattr(r, "job_id", None) == job_id
        ]

    assert output_of(ids["quiet"]) == []
    loud = output_of(ids["loud"])
    # 200 lines at most a job: stdout's 302 lines are cut at 200 with a note, stderr still gets
    # its own note saying nothing more is logged.
    lines = [(getattr(r, "stream", None), r.getMessage()) for r in loud]
    prefix = f"job {ids['loud']}"
    assert lines[:3] == [
        ("stdout", f"{prefix} stdout: out1"),
        ("stdout", f"{prefix} stdout: out2"),
        ("stdout", f"{prefix} stdout: 1"),
    ]
    assert len([line for line in lines if not line[1].endswith("]")]) == OUTPUT_LOG_LINES
    assert lines[OUTPUT_LOG_LINES] == (
        "stdout",
        f"{prefix} stdout: [102 more line(s) not logged: 200 lines a job at most]",
    )
    assert lines[-1] == (
        "stderr",
        f"{prefix} stderr: [1 more line(s) not logged: 200 lines a job at most]",
    )
    for record in loud:
        context = {name: getattr(record, name, None) for name in ("channel", "attempt", "pid")}
        assert context["channel"] == "loud" and context["attempt"] == 1, context
        assert isinstance(context["pid"], int), context

    status, body = await http(runner, "PATCH", "/api/channels/loud", json={"log_output": False})
    assert status == 200 and "log_output" not in body, body


def test_json_formatter_includes_the_exception_and_context() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("taskrunner.test").makeRecord(
            "taskrunner.test", logging.ERROR, __file__, 1, "job %s failed", ("j1",), sys.exc_info(),
            extra={"job_id": "j1", "channel": "c", "attempt": 2, "pid": 42, "stream": "stderr"},
        )  # fmt: skip
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "job j1 failed" and entry["level"] == "error"
    assert (entry["job_id"], entry["channel"], entry["attempt"], entry["pid"]) == ("j1", "c", 2, 42)
    assert entry["stream"] == "stderr"
    assert "RuntimeError: boom" in entry["exception"] and "Traceback" in entry["exception"]


class CountingStream:
    """A text stream that keeps each write it is given."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def batching_logger(stream: CountingStream) -> logging.Logger:
    logger = logging.getLogger(f"test.batching.{id(stream)}")
    handler = BatchingHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_the_lines_of_one_loop_iteration_are_written_in_one_write_in_order() -> None:
    stream = CountingStream()
    logger = batching_logger(stream)
    for n in range(5):
        logger.info("line %d", n)
    assert stream.writes == []  # not yet: the iteration is not over
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == ["line 0\nline 1\nline 2\nline 3\nline 4\n"]
    logger.warning("next")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes[1:] == ["next\n"]


def test_outside_an_event_loop_each_line_is_written_at_once() -> None:
    stream = CountingStream()
    logger = batching_logger(stream)
    logger.info("one")
    assert stream.writes == ["one\n"]
    logger.info("two")
    assert stream.writes == ["one\n", "two\n"]


@pytest.mark.slow
def test_lines_logged_just_before_the_process_exits_are_not_lost() -> None:
    script = (
        "import asyncio, logging, sys\n"
        "from taskrunner import logs\n"
        "logs.configure()\n"
        "async def main():\n"
        "    logging.getLogger('t').error('last words before exit')\n"
        "    sys.exit(3)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == 3
    assert b"last words before exit" in done.stderr


def test_the_text_time_stamp_matches_logging_s_own() -> None:
    formatter = TextFormatter(colour=False)
    plain = logging.Formatter()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logging.makeLogRecord(
            {"msg": "m", "created": created, "msecs": created % 1 * 1000}
        )
        assert formatter.formatTime(record) == plain.formatTime(record)
