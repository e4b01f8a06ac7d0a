"""The benchmark's report: a table of every figure for people, then as the last line one JSON
object of the figures that are compared from run to run (tests/test_bench.py checks its keys).
"""

from __future__ import annotations

import json
import os
from typing import Any

TABLE = [
    ("spawn_runner_path", "spawn: runner's own path, bare loop", "{:,.0f} /s"),
    ("spawn_threads", "spawn: subprocess.run from threads", "{:,.0f} /s"),
    ("spawn_limit", "spawn limit (fastest of the two)", "{:,.0f} /s"),
    ("true_cpu_ms", "  CPU of one /bin/true process", "{:.2f} ms"),
    ("true_parent_ms", "  CPU subprocess.run takes to start it", "{:.2f} ms"),
    ("true_cpu_cap", "  cores / that: at most", "{:,.0f} /s"),
    ("jobs_per_s", "end to end, /bin/true, 10 workers", "{:,.0f} jobs/s"),
    ("ratio", "  ratio to the spawn limit", "{:.2f}  (target >= 0.75)"),
    ("true_cpu", "  CPU a job: runner/jobs/Redis/client", "{}"),
    ("true_cpu_bound", "  the cores at that CPU: at most", "{:,.0f} jobs/s"),
    ("true_runner_budget", "  runner CPU a job 0.75 leaves room for", "{:.2f} ms"),
    ("sleep_jobs_per_s", "end to end, sleep 0.025, 50 workers", "{:,.0f} jobs/s"),
    ("sleep_ratio", "  ratio to the ideal", "{:.2f}  (target >= 0.9)"),
    ("sleep_cpu", "  CPU a job: runner/jobs/Redis/client", "{}"),
    ("sleep_cpu_bound", "  the cores at that CPU: at most", "{:,.0f} jobs/s"),
    ("sleep_runner_budget", "  runner CPU a job 0.9 leaves room for", "{:.2f} ms"),
    ("sleep_threads", "  same jobs, subprocess.run, 50 threads", "{:,.0f} /s  (no queue at all)"),
    ("sleep_threads_ratio", "    its ratio to the ideal", "{:.2f}"),
    ("sleep_cpu_ms", "  CPU of one sleep 0.025 process", "{:.2f} ms"),
    ("sleep_parent_ms", "  CPU subprocess.run takes to start it", "{:.2f} ms"),
    ("sleep_cpu_cap", "  cores / that: at most", "{:,.0f} /s"),
    ("start_p50_ms", "start latency p50 at 10 jobs/s", "{:.1f} ms"),
    ("start_p99_ms", "start latency p99 at 10 jobs/s", "{:.1f} ms  (target <= 10)"),
    ("late_p50_ms", "delayed job lateness p50", "{:.1f} ms"),
    ("late_p99_ms", "delayed job lateness p99", "{:.1f} ms  (target <= 50)"),
    ("push_req_per_s", "POST /push, 50 connections", "{:,.0f} req/s  (target >= 3,000)"),
    ("redis_cmds_per_job", "Redis commands per job (round trips)", "{:.2f}  (target <= 6)"),
    ("redis_calls_per_job_incl_scripts", "  calls incl. inside Lua scripts", "{:.1f}"),
    ("rss_idle_mb", "runner RSS idle", "{:.1f} MB"),
    ("rss_1m_queued_mb", "runner RSS, 1,000,000 jobs queued", "{:.1f} MB  (target: idle + 10)"),
    ("redis_bytes_per_queued_job", "Redis memory per queued job", "{:.0f} B  (target <= 600)"),
]
JSON_KEYS = (
    "spawn_limit", "jobs_per_s", "ratio", "sleep_jobs_per_s", "sleep_ratio", "start_p50_ms",
    "start_p99_ms", "late_p50_ms", "late_p99_ms", "push_req_per_s", "redis_cmds_per_job",
    "rss_idle_mb", "rss_1m_queued_mb", "redis_bytes_per_queued_job",
)  # fmt: skip


def print_report(figures: dict[str, Any], mode: str, elapsed_s: float) -> None:
    """The table, then the JSON line, on stdout."""
    print(f"taskrunner bench ({mode}, {os.cpu_count()} cores,"
          f" Redis: {figures['redis']}, {elapsed_s:.0f} s)")  # fmt: skip
    for key, label, fmt in TABLE:
        print(f"  {label:<40} {fmt.format(figures[key])}")
    print(json.dumps({key: round(float(figures[key]), 2) for key in JSON_KEYS}))
