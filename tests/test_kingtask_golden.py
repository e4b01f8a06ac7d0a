"""Golden answers: kingtask's HTTP API answers what the-no/kingtask answers, byte for byte where
its clients look at them. Each test cites the upstream code (the-no/kingtask at 19760ee:
broker/web.go, broker/broker.go, core/errors/errors.go, worker/worker.go)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskrunner.runner import Runner
from tests.support.http import base_url, http
from tests.support.runners import RunnerHarness, wait_state

pytestmark = pytest.mark.asyncio


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    (path / "quiet_fail").write_text("#!/bin/sh\nexit 3\n")
    (path / "quiet_fail").chmod(0o755)
    return path


async def raw_answer(runner: Runner, method: str, path: str, **kw: Any) -> tuple[int, bytes, str]:
    """(status, body bytes, detail header) of one request."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base_url(runner) + path, **kw) as resp,
    ):
        return resp.status, await resp.read(), resp.headers.get("X-Taskrunner-Detail", "")


async def test_pending_result_is_403_result_not_exist(
    runners: RunnerHarness, bin_dir: Path
) -> None:
    # web.go:135-137 GetTaskResult answers 403 err.Error(); broker.go HandleTaskResult returns
    # ErrResultNotExist while r_<uuid> is not written (errors.go:17 "result not exist").
    runner = await runners.start(bin_path=bin_dir)
    fields = {"bin_name": "quiet_fail", "start_time": str(int(time.time()) + 3600)}
    status, job_id = await http(runner, "POST", "/api/v1/task/script", data=fields)
    assert status == 200
    status, body, detail = await raw_answer(runner, "GET", f"/api/v1/task/result/{job_id}")
    assert (status, body) == (403, b'"result not exist"')
    assert "ask again until it has ended" in detail


async def test_unknown_uuid_is_403_result_not_exist(runners: RunnerHarness) -> None:
    # Same path as pending: HMGet of a missing r_<uuid> gives nil (broker.go HandleTaskResult).
    runner = await runners.start()
    path = "/api/v1/task/result/5f0e1f8e-0000-4000-8000-000000000000"
    status, body, _ = await raw_answer(runner, "GET", path)
    assert (status, body) == (403, b'"result not exist"')


@pytest.mark.parametrize(
    ("path", "fields", "detail"),
    [
        # web.go:43-45: len(args.BinName) == 0 -> 403 ErrInvalidArgument (errors.go:13)
        ("/api/v1/task/script", {"args": "1 2"}, '"bin_name" is required'),
        # web.go:89-91: len(args.URL) == 0 -> 403 ErrInvalidArgument
        ("/api/v1/task/rpc", {"method": "POST"}, '"url" is required'),
        # web.go:108-109: a method not GET/POST/PUT/DELETE -> 403 ErrInvalidArgument
        ("/api/v1/task/rpc", {"method": "PATCH", "url": "http://h/"}, '"method" must be'),
    ],
)
async def test_missing_or_unknown_fields_are_403_invalid_argument(
    runners: RunnerHarness, bin_dir: Path, path: str, fields: dict[str, str], detail: str
) -> None:
    runner = await runners.start(bin_path=bin_dir)
    status, body, said = await raw_answer(runner, "POST", path, data=fields)
    assert (status, body) == (403, b'"invalid argument"')
    assert detail in said


async def test_a_script_failing_silently_reports_exit_status_as_go(
    runners: RunnerHarness, bin_dir: Path
) -> None:
    # worker.go ExecBin returns cmd.Wait()'s error, Go's *exec.ExitError: "exit status 3";
    # DoTaskRequest stores err.Error() as the result (is_success 0).
    runner = await runners.start(bin_path=bin_dir)
    status, job_id = await http(
        runner, "POST", "/api/v1/task/script", data={"bin_name": "quiet_fail"}
    )
    assert status == 200
    await wait_state(runner.store, job_id, "failed")
    status, body, _ = await raw_answer(runner, "GET", f"/api/v1/task/result/{job_id}")
    assert (status, body) == (200, b'{"is_result_exist": 1, "is_success": 0, "message": "exit status 3"}')  # fmt: skip
