"""What scripts/chaos.py checks once a scenario is quiet: the job log, the records in Redis,
and the report with its bounds."""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from scripts._chaos_cluster import LEASE_S, Cluster, Kill, Slot
from scripts._chaos_jobs import Planned
from scripts._harness import (
    FINAL,
    KEYS,
    percentile,
)

# A dead runner's jobs start again once a runner that has been up for a whole lease itself sees
# its beat older than the lease (checked every lease/3). Every runner here is killed 6 s after it
# was started, and start-up takes 1-4 s on a loaded 2-core machine: some stretches have no runner
# up for a lease at all. So: the lease, the 6 s rotation, start-up and the poll.
RECOVERY_BOUND_S = LEASE_S + 13.0
RSS_BOUND_MB = 200.0
QUIET_TIMEOUT_S = 60.0
CAPTURE_BYTES = 65536


# -- reading the outcome -------------------------------------------------------------------------


@dataclass
class RunLine:
    pid: int
    ppid: int
    start: float
    end: float | None = None
    code: int | None = None
    reaped: float | None = None  # no end line, and the harness reaped it then (runner killed)


@dataclass
class JobLog:
    """The start/end log, read back: every run of every job, and what overlapped."""

    runs: dict[str, list[RunLine]]
    overlaps: list[str]  # "ID": a run started while another run of ID had not ended

    @classmethod
    def read(cls, path: Path, reaped_at: Mapping[int, float] | None = None) -> JobLog:
        """`reaped_at`: when the harness reaped each process a killed runner left (its job
        processes, stopped by the runner's watchdog, often before they could log their end).
        Such a run counts as ended then: a later run of its job overlaps it only if it started
        before."""
        reaped_at = reaped_at or {}
        runs: dict[str, list[RunLine]] = defaultdict(list)
        open_runs: dict[str, dict[int, RunLine]] = defaultdict(dict)
        overlaps = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts[0] == "start":
                job_id, pid, ppid, at = parts[1], int(parts[2]), int(parts[3]), _seconds(parts[4])
                for earlier in list(open_runs[job_id].values()):
                    if reaped_at.get(earlier.pid, at) < at:
                        earlier.reaped = reaped_at[earlier.pid]
                        del open_runs[job_id][earlier.pid]
                if open_runs[job_id]:
                    overlaps.append(f"{job_id} (pids {sorted(open_runs[job_id])} and {pid})")
                run = RunLine(pid, ppid, at)
                runs[job_id].append(run)
                open_runs[job_id][pid] = run
            elif parts[0] == "end":
                ended = open_runs[parts[1]].pop(int(parts[2]), None)
                if ended is not None:
                    ended.end, ended.code = _seconds(parts[3]), int(parts[4])
        for still_open in open_runs.values():
            for run in still_open.values():
                run.reaped = reaped_at.get(run.pid)
        return cls(dict(runs), overlaps)

    def unterminated(self, ids: Iterable[str]) -> list[str]:
        """Runs with no end line that did not go with a killed runner."""
        return [
            i for i in ids for run in self.runs.get(i, []) if run.end is None and run.reaped is None
        ]

    def stopped_with_runner(self) -> int:
        """Runs with no end line whose runner was killed (the harness reaped them)."""
        return sum(
            run.end is None and run.reaped is not None for r in self.runs.values() for run in r
        )

    def retried(self) -> int:
        """Jobs that had a failed run followed by another run."""
        return sum(any(r.code not in (None, 0) for r in runs[:-1]) for runs in self.runs.values())

    def repeated_after_success(self) -> list[str]:
        """Jobs that started again after a run of theirs had succeeded (at least once)."""
        return [
            job_id for job_id, runs in self.runs.items() if any(run.code == 0 for run in runs[:-1])
        ]

    def first_start_after(self, job_id: str, at: float) -> float | None:
        starts = [r.start for r in self.runs.get(job_id, []) if r.start > at]
        return min(starts) if starts else None


def _seconds(text: str) -> float:
    return float(text.replace(",", "."))


async def records(client: aioredis.Redis) -> dict[str, dict[str, bytes]]:
    """Every job record in Redis (state, attempt, handed_back, output...), by job id."""
    keys = [k async for k in client.scan_iter(match=KEYS.job("*"), count=1000)]
    found: dict[str, dict[str, bytes]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        async with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hgetall(key)
            rows = await pipe.execute()
        for key, row in zip(chunk, rows, strict=True):
            if row:
                found[key.decode()[len(KEYS.job_prefix) :]] = {
                    k.decode(): v for k, v in row.items()
                }
    return found


async def backlog(client: aioredis.Redis) -> int:
    """Messages and jobs not yet done: prepare queue, in-flight lists, queues, schedules, running."""
    total = await client.llen(KEYS.prepare_queue)
    for pattern, size in (
        ("task:prepare:inflight:*", client.llen), ("task:queue:*", client.llen),
        ("task:scheduled:*", client.zcard), ("task:running:*", client.scard),
    ):  # fmt: skip
        async for key in client.scan_iter(match=pattern, count=1000):
            total += await size(key)
    return int(total)


async def wait_quiet(cluster: Cluster, timeout_s: float) -> float:
    """Wait until every message is routed and every job has ended; seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < timeout_s:
        if await backlog(cluster.client) == 0:
            states = [r.get("state") for r in (await records(cluster.client)).values()]
            if all(s is not None and s.decode() in FINAL for s in states):
                return loop.time() - started
        await asyncio.sleep(0.5)
    return loop.time() - started


def runner_log_errors(slots: Sequence[Slot]) -> tuple[int, list[str]]:
    """Tracebacks in the runners' logs, and their ERROR lines (deduplicated, numbers masked)."""
    tracebacks, errors = 0, Counter[str]()
    for slot in slots:
        if not slot.log.exists():
            continue
        for line in slot.log.read_text(errors="replace").splitlines():
            tracebacks += line.startswith("Traceback")
            if " ERROR " in line:
                errors[re.sub(r"[0-9a-f]{6,}|\d+(\.\d+)?", "N", line.split(": ", 1)[-1])] += 1
    return tracebacks, [f"{n} x {text}" for text, n in errors.most_common(5)]


@dataclass
class Report:
    number: int
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def row(
        self, label: str, value: Any, bound: Any = None, *, ok: bool = True, note: str = ""
    ) -> None:
        text = f"{value:,}" if isinstance(value, int) else str(value)
        if bound is not None:
            text += f"  (bound {bound})"
        if note:
            text += f"  ({note})"
        self.rows.append((label, text))
        if not ok:
            self.violations.append(f"scenario {self.number}: {label} = {value} (bound {bound})")

    def at_most(self, label: str, value: float, bound: float, unit: str = "") -> None:
        shown: Any = value if isinstance(value, int) else f"{value:.2f}{unit}"
        self.row(label, shown, f"{bound:g}{unit}", ok=value <= bound)


async def daily_finals(client: aioredis.Redis) -> int:
    total = 0
    async for key in client.scan_iter(match=KEYS.daily("*")):
        counts = await client.hgetall(key)
        total += sum(int(counts.get(k, 0)) for k in (b"succeeded", b"failed", b"cancelled"))
    return total


EXPECTED = {"ok": "succeeded", "delayed": "succeeded", "unique": "succeeded",
            "contended": "succeeded", "flaky": "succeeded", "doomed": "dead"}  # fmt: skip


def check_jobs(
    report: Report, planned: Sequence[Planned], found: dict[str, dict[str, bytes]],
    stats: dict[str, int], jobs: JobLog, cluster: Cluster,
) -> None:  # fmt: skip
    """Accepted, completed, lost, outcomes, retries, recoveries of the planned jobs."""
    mine = {p.id: found[p.id] for p in planned if p.id in found}
    missing = [p for p in planned if p.id not in found]
    contended = sum(p.kind == "contended" for p in missing)
    refused = report.figures.get("refused_planned", stats.get("refused", 0))
    lost = len(missing) - contended + max(0, contended - refused)
    states = Counter(r.get("state", b"").decode() for r in mine.values())
    report.row("jobs pushed", len(planned))
    report.row("jobs accepted", len(mine), note=f"{refused:,} refused as duplicates")
    report.row("completed (succeeded / dead / failed)",
               f"{sum(states[s] for s in FINAL):,} ({states['succeeded']:,} / {states['dead']:,} / {states['failed']:,})")  # fmt: skip
    report.row("retried (failed, then ran again)", jobs.retried())
    handed = Counter(r["handed_back"].decode() for r in mine.values() if "handed_back" in r)
    report.row(
        "recovered after crash (handed back, ran again)",
        handed["runner lost"] + handed["claim reply lost"],
    )
    report.row("handed back on drain", handed["drain"])
    report.at_most("lost", lost, 0)
    report.at_most("refused without a duplicate", max(0, refused - contended), 0)
    wrong = wrong_outcomes(planned, mine, jobs)
    report.at_most("jobs with a wrong outcome", len(wrong), 0)
    report.violations += [f"scenario {report.number}: wrong outcome: {w}" for w in wrong[:5]]
    early = [p.id for p in planned if p.kind == "delayed" and _started_early(p, jobs)]
    report.at_most("delayed jobs started early", len(early), 0)
    modes_killed = {p.id for p in planned if p.kind == "term"}
    cut = [i for i in jobs.unterminated(mine) if i not in modes_killed]
    report.at_most("runs killed before their end line", len(cut), 0)
    if cluster.kills:
        report.row("runs stopped with their killed runner", jobs.stopped_with_runner())
    repeated = jobs.repeated_after_success()
    if cluster.kills:  # a killed runner's job may have ended before its result was written
        report.row("ran again after a success (a killed runner's)", len(repeated))
    else:
        report.at_most("ran again after a success", len(repeated), 0)
        report.violations += [f"scenario {report.number}: ran again: {i}" for i in repeated[:5]]
    recovery = recovery_times(cluster.kills, jobs)
    if cluster.kills:
        worst, slowest = max(recovery, default=(0.0, ""))
        report.row("runners killed", len(cluster.kills))
        if recovery:  # none when every killed runner happened to hold no job
            report.row("median recovery time", f"{percentile([t for t, _ in recovery], 0.5):.2f} s")
        report.at_most("max recovery time (kill -> next start)", worst, RECOVERY_BOUND_S, " s")
        if worst > RECOVERY_BOUND_S:
            report.violations.append(f"scenario {report.number}: slowest recovery: job {slowest}")
        report.figures["max_recovery_s"] = worst
    report.figures.update(lost=lost, recovered=handed["runner lost"])


def wrong_outcomes(
    planned: Sequence[Planned], mine: dict[str, dict[str, bytes]], jobs: JobLog
) -> list[str]:
    wrong = []
    for p in planned:
        record = mine.get(p.id)
        if record is None or p.kind not in EXPECTED:
            continue
        state = record.get("state", b"").decode()
        runs = len(jobs.runs.get(p.id, []))
        attempts = int(record.get("attempt", b"0"))
        expected = EXPECTED[p.kind]
        if state == expected and (
            state != "succeeded" or record.get("stdout") == f"{p.id}\n".encode()
        ):
            continue
        if p.kind == "flaky" and state == "dead" and attempts > runs:
            continue  # attempts spent on a runner that died before starting the job
        wrong.append(
            f"{p.id}: {state} after {attempts} attempts, {runs} runs (expected {expected})"
        )
    return wrong


def _started_early(p: Planned, jobs: JobLog) -> bool:
    runs = jobs.runs.get(p.id, [])
    return bool(runs) and runs[0].start < p.pushed_at + p.delay_s - 0.002


def recovery_times(kills: Sequence[Kill], jobs: JobLog) -> list[tuple[float, str]]:
    """For each job a killed runner held: seconds from the kill to the job's next start. A job
    that was taken again by a runner killed before it could start it counts for that kill."""
    times = []
    for n, kill in enumerate(kills):
        for job_id in kill.owned:
            start = jobs.first_start_after(job_id, kill.at)
            held_again = [k.at for k in kills[n + 1 :] if job_id in k.owned]
            if start is not None and not (held_again and held_again[0] < start):
                times.append((start - kill.at, job_id))
    return times
