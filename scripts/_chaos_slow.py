"""Scenario "slowclients" of scripts/chaos.py: hundreds of HTTP connections that never finish
their headers, against runners whose open-file limit is lowered, while the load runs.

Each runner gets SLOW_PER_RUNNER connections that send the start of a request and then nothing;
one the runner closes is opened again REOPEN_AFTER_S later, for as long as the load is pushed. Meanwhile a
prober asks every runner for /healthz four times a second, and the runners' descriptors are
counted from /proc. Checked, besides what every scenario checks (no job lost, none run twice):
every probe answered (200, or at most one in BUSY_SHARE a 503 saying every connection is in
use), no runner ever at its descriptor limit, no job failed and no log line with "Too many
open files".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from scripts._chaos_checks import Report
from scripts._chaos_cluster import Cluster, log

NOFILE = 256  # the runners' `ulimit -n`: the issue's report
SLOW_PER_RUNNER = 300
READ_TIMEOUT_S = 2.0  # the runners' --http-read-timeout
PROBE_EVERY_S = 0.25
REOPEN_AFTER_S = 0.5  # a slow connection closed by a runner is opened again this much later
SLOW_START = b"GET /status HTTP/1.1\r\nHost: chaos\r\nX-Slow: "
RUNNER_FLAGS = ("--http-read-timeout", str(READ_TIMEOUT_S))
EMFILE = "Too many open files"
BUSY_SHARE = 10  # at most one probe in this many may find every connection in use (503)


@dataclass
class Attack:
    """What the slow clients and the prober saw."""

    opened: int = 0  # slow connections opened
    closed_by_runner: int = 0  # ... that a runner closed (timed out, or to make room)
    refused: int = 0  # connections a runner did not accept at all
    probes: int = 0
    busy: int = 0  # probes answered 503: every connection a runner may keep was in use
    resets: int = 0  # probes whose new connection was closed to make room, asked again at once
    probe_failures: list[str] = field(default_factory=list)  # no answer, or not 200/503
    max_fds: int = 0  # the most descriptors one runner held


async def slow_attack(cluster: Cluster, done: asyncio.Event) -> Attack:
    """Keep SLOW_PER_RUNNER slow connections on every runner and probe them until `done`."""
    _raise_own_file_limit(len(cluster.slots) * SLOW_PER_RUNNER + 512)
    attack = Attack()
    tasks = [
        asyncio.create_task(_keep_slow(slot.port, attack, done))
        for slot in cluster.slots
        for _ in range(SLOW_PER_RUNNER)
    ]
    tasks.append(asyncio.create_task(_probe(cluster, attack, done)))
    await done.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return attack


async def _keep_slow(port: int, attack: Attack, done: asyncio.Event) -> None:
    while not done.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            attack.refused += 1
            await asyncio.sleep(0.1)
            continue
        attack.opened += 1
        try:
            writer.write(SLOW_START)
            await reader.read()  # b"" once the runner closes it (or a 503 answer, then b"")
            attack.closed_by_runner += 1
        except OSError:
            attack.closed_by_runner += 1
        finally:
            writer.close()
        await asyncio.sleep(REOPEN_AFTER_S)


async def _probe(cluster: Cluster, attack: Attack, done: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    # A new connection each time, as a new client makes: an idle kept-alive one may be closed
    # to make room (by design), and aiohttp's client does not retry a request on it.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        while not done.is_set():
            for slot in cluster.slots:
                attack.probes += 1
                await _probe_one(session, slot.port, f"runner {slot.index}", attack)
            for pid in cluster.runner_pids():
                with contextlib.suppress(OSError):
                    attack.max_fds = max(attack.max_fds, len(os.listdir(f"/proc/{pid}/fd")))
            await asyncio.sleep(PROBE_EVERY_S)


async def _probe_one(session: aiohttp.ClientSession, port: int, name: str, attack: Attack) -> None:
    """GET /healthz. A connection closed before its answer (at the cap a runner closes the
    oldest connection that has sent no whole request: on an overloaded machine a new one can
    be it) is asked again once, as a client does; a second failure counts."""
    url = f"http://127.0.0.1:{port}/healthz"
    for first in (True, False):
        try:
            async with session.get(url) as response:
                await response.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if first and not isinstance(exc, aiohttp.ConnectionTimeoutError):
                attack.resets += 1
                continue
            attack.probe_failures.append(f"{name}: {exc!r}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            attack.probe_failures.append(f"{name}: {exc!r}")
        else:
            if response.status == 503:
                attack.busy += 1
            elif response.status != 200:
                attack.probe_failures.append(f"{name}: {response.status}")
        return


def _raise_own_file_limit(needed: int) -> None:
    """This harness holds every slow connection: make room for them under its hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log(f"slowclients: ulimit -n {target} here, fewer slow connections may open")


def check_attack(report: Report, attack: Attack, outcome: dict[str, Any], cluster: Cluster) -> None:
    report.row(
        "slow connections opened / closed by the runners",
        f"{attack.opened:,} / {attack.closed_by_runner:,}",
        note=f"{SLOW_PER_RUNNER} kept on each runner, headers never finished",
    )
    report.row("connections not accepted", attack.refused)
    report.row("/healthz probes during the attack", attack.probes)
    report.row("  closed before the answer, asked again", attack.resets)
    report.at_most("/healthz probes unanswered (or not 200 / 503)", len(attack.probe_failures), 0)
    report.at_most(
        "/healthz probes answered 503 (all connections in use)",
        attack.busy,
        max(1, attack.probes // BUSY_SHARE),
    )
    report.violations += [f"scenario {report.number}: {f}" for f in attack.probe_failures[:5]]
    report.at_most("most descriptors held by one runner", attack.max_fds, NOFILE - 1)
    emfile_jobs = [
        job_id
        for job_id, record in outcome["records"].items()
        if EMFILE in record.get("error", b"").decode(errors="replace")
    ]
    report.at_most(f'jobs that failed with "{EMFILE}"', len(emfile_jobs), 0)
    emfile_lines = sum(
        slot.log.read_text(errors="replace").count(EMFILE)
        for slot in cluster.slots
        if slot.log.exists()
    )
    report.at_most(f'runner log lines with "{EMFILE}"', emfile_lines, 0)
