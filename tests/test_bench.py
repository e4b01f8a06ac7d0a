"""scripts/bench still runs end to end (tiny sizes); its figures are for people, not asserts."""

from __future__ import annotations

import json

import pytest

from tests.support.processes import run_script

pytestmark = pytest.mark.slow  # the bench smoke run: a minute or two

KEYS = {
    "spawn_limit", "jobs_per_s", "ratio", "sleep_jobs_per_s", "sleep_ratio", "start_p50_ms",
    "start_p99_ms", "late_p50_ms", "late_p99_ms", "push_req_per_s", "redis_cmds_per_job",
    "rss_idle_mb", "rss_1m_queued_mb", "redis_bytes_per_queued_job",
}  # fmt: skip


@pytest.mark.timeout(120)
def test_bench_smoke_prints_every_figure_as_its_last_line() -> None:
    code, stdout, stderr = run_script("bench", "--smoke", timeout_s=110)
    assert code == 0, stderr[-2000:]
    figures = json.loads(stdout.strip().splitlines()[-1])
    assert set(figures) == KEYS
    assert all(value > 0 for value in figures.values()), figures
    assert figures["late_p50_ms"] >= 0 and figures["redis_cmds_per_job"] < 50
