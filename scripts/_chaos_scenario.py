"""The plumbing every scripts/chaos scenario shares: the sizes of a run, a scenario's own Redis
and runners (`scenario`), and the checks every scenario must pass once quiet (`finish`).

Kept apart from chaos.py so that the scenario modules (_chaos_silence.py, ...) import it directly
while chaos.py, which registers them all, imports them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from scripts._chaos_checks import (
    QUIET_TIMEOUT_S,
    RSS_BOUND_MB,
    JobLog,
    Report,
    check_jobs,
    daily_finals,
    records,
    runner_log_errors,
    wait_quiet,
)
from scripts._chaos_cluster import Cluster, job_processes, log, settle, zombies_under
from scripts._chaos_jobs import Planned, Run
from scripts._harness import FINAL, KEYS, redis_server, wait_http
from taskrunner.guard import zombie_children

# The scenarios in the order they run and are numbered (chaos.SCENARIOS maps each to its function).
SCENARIO_NAMES = (
    "kill", "redis", "drain", "hostile", "misbehave", "slowclients", "paused", "pool",
    "redis-errors", "dataloss", "lifecycle", "daemons",
)  # fmt: skip
KEEP_LOGS = "TASKRUNNER_CHAOS_KEEP_LOGS"  # set (--keep-logs): keep every scenario's logs


@dataclass(frozen=True)
class Sizes:
    jobs: int  # jobs of the load in scenarios 1-3
    load_s: float  # seconds the load is pushed over (faults go on meanwhile)
    hostile: int  # hostile prepare-queue messages (scenario 4)
    http: int  # hostile HTTP requests (scenario 4)
    misbehaving: int  # jobs of each misbehaving kind (scenario 5)
    spew: int  # jobs printing 100 MB (scenario 5)
    redis_stop_s: float  # how long Redis is SIGSTOPped (scenario 2)


SMOKE = Sizes(jobs=200, load_s=4, hostile=300, http=150, misbehaving=2, spew=1, redis_stop_s=3)
QUICK = Sizes(jobs=3000, load_s=15, hostile=3000, http=1000, misbehaving=8, spew=3, redis_stop_s=10)
FULL = Sizes(
    jobs=10000, load_s=40, hostile=10000, http=3000, misbehaving=20, spew=6, redis_stop_s=10
)


# -- one scenario --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scenario(
    name: str, report: Report, n_runners: int = 3, **options: Any
) -> AsyncIterator[Cluster]:
    """A temp dir, a Redis with AOF on, the channels, and `n_runners` runners (`options` go to
    `Cluster`); torn down after, the logs kept if a bound was broken."""
    with tempfile.TemporaryDirectory(prefix=f"taskrunner-chaos-{name}-") as tmp:
        run = Run(name, Path(tmp), f"chaos-{name}-{secrets.token_hex(4)}")
        run.prepare()
        with redis_server(Path(tmp) / "redis", appendonly=True) as server:
            cluster = Cluster(run, server, n_runners, **options)
            await cluster.start()
            failed = True
            try:
                yield cluster
                failed = bool(report.violations)
            finally:
                await cluster.stop()
                if failed or os.environ.get(KEEP_LOGS):
                    keep_logs(run)
                for pid in job_processes(run.marker):  # never leave one behind
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


def keep_logs(run: Run) -> None:
    """Copy the runners' logs, the job log and Redis's log somewhere that outlives the temp dir."""
    kept = Path(tempfile.mkdtemp(prefix=f"taskrunner-chaos-{run.name}-logs-"))
    with contextlib.suppress(OSError):
        shutil.copy(run.workdir / "redis" / "server.log", kept / "redis.log")
    for path in run.workdir.glob("*.log"):
        shutil.copy(path, kept / path.name)
    log(f"logs of scenario {run.name}: {kept}")


async def finish(cluster: Cluster, report: Report, planned: Sequence[Planned]) -> dict[str, Any]:
    """Wait for quiet, stop the runners, and check what every scenario must show. Returns the
    job records (for scenario-specific checks)."""
    for slot in cluster.slots:  # a runner restarted just now must be up before it is stopped
        await wait_http(slot.port)
    took = await wait_quiet(cluster, QUIET_TIMEOUT_S)
    report.row("time to quiet after the load", f"{took:.1f} s")
    zombies = await settle(lambda: zombies_under(cluster.runner_pids()), 7.0)
    found = await records(cluster.client)
    counters = cast(dict[bytes, bytes], await cluster.client.hgetall(KEYS.stats))
    stats = {k.decode(): int(v) for k, v in counters.items()}
    finals = await daily_finals(cluster.client)
    codes = await cluster.stop()
    orphans = await settle(lambda: len(job_processes(cluster.run.marker)), 5.0)
    jobs = JobLog.read(cluster.run.log, cluster.health.reaped_at)
    check_jobs(report, planned, found, stats, jobs, cluster)
    stuck = sum(r.get("state", b"").decode() not in FINAL for r in found.values())
    report.at_most("jobs not in a final state (stuck)", stuck, 0)
    final_count = len(found) - stuck
    report.row(
        "final states recorded (daily counters)",
        finals,
        f"{final_count:,}",
        ok=finals == final_count,
    )
    report.at_most("concurrent duplicates observed", len(jobs.overlaps), 0)
    report.violations += [
        f"scenario {report.number}: ran twice at once: {o}" for o in jobs.overlaps[:5]
    ]
    report.at_most("orphan processes after the run", orphans, 0)
    report.at_most("zombies left under runners", zombies, 0)
    report.at_most("zombies left under the harness", len(zombie_children()), 0)
    report.row("orphans of killed runners reaped", cluster.health.adopted)
    report.at_most("runner RSS max", cluster.health.rss_max_mb, RSS_BOUND_MB, " MB")
    crashes = cluster.health.crashes + [
        f"exit code {c} on stop/drain" for c in [*cluster.drains, *codes] if c
    ]
    report.at_most("runner crashes / bad exit codes", len(crashes), 0)
    report.violations += [f"scenario {report.number}: {c}" for c in crashes[:5]]
    tracebacks, errors = runner_log_errors(cluster.slots)
    report.at_most("tracebacks in runner logs", tracebacks, 0)
    for line in errors:
        report.row("  runner ERROR line", line)
    report.figures.update(
        concurrent_duplicates=len(jobs.overlaps), orphans=orphans, stuck=stuck,
    )  # fmt: skip
    return {"records": found, "stats": stats, "log": jobs}


def scenario_report(name: str, title: str) -> Report:
    """The Report of the scenario `name`, numbered by its place in SCENARIO_NAMES."""
    return Report(SCENARIO_NAMES.index(name) + 1, title)
