"""Scenarios "redis-errors" and "dataloss" of scripts/chaos.py: Redis that answers but refuses,
and Redis that lost its data (issue 12).

redis-errors  3 runners under load; mid-load Redis runs out of memory (maxmemory below what it
              uses, noeviction: every write that grows it is refused with OOM) for OOM_S, then,
              later, runs a BUSY_SCRIPT_S Lua script (Redis answers BUSY to everyone after
              BUSY_AFTER_MS). Checked, besides what every scenario checks (nothing lost, no
              job run twice at once, no runner exit or traceback): the runners met the refusals
              (their "Redis unavailable" lines).
dataloss      3 runners under load; mid-load FLUSHALL (what a restart without persistence
              leaves). The operator re-creates the scenario's own channels at once; the default
              channel must come back by itself. Checked on the jobs pushed after the flush:
              every one ran (none lost, none dead-lettered), and each runner logged the loss
              once. Jobs pushed before it are gone with the data and not counted.

The producer waits while Redis refuses (it holds the cluster's gate, as for an outage): these
scenarios test the runners, not a producer's retries.
"""

from __future__ import annotations

import asyncio
import random
import time

from redis import Redis as SyncRedis

from scripts._chaos_checks import Report
from scripts._chaos_cluster import Cluster, load_with, log
from scripts._chaos_jobs import CHANNELS, plan_load
from scripts._chaos_scenario import Sizes, finish, scenario, scenario_report
from scripts._harness import KEYS
from taskrunner.models import ChannelConfig

OOM_S = 3.0  # longer than the lease (2 s): no runner may be declared lost for it
BUSY_SCRIPT_S = 5  # the figure
BUSY_AFTER_MS = 1000  # busy-reply-threshold: BUSY replies for the script's last 4 s
SMOKE_FAULTS = (1.5, 2, 500)  # --smoke (a load of a few seconds): OOM_S, BUSY_SCRIPT_S, ..._MS
BUSY_SCRIPT = "local t = redis.call('TIME')[1] + ARGV[1] while redis.call('TIME')[1] + 0 < t do end"
UNAVAILABLE_LINE = "Redis unavailable"
LOSS_LINE = "Redis lost its data"


def _count_lines(cluster: Cluster, text: str) -> list[int]:
    return [
        slot.log.read_text(errors="replace").count(text) if slot.log.exists() else 0
        for slot in cluster.slots
    ]


# -- redis-errors ----------------------------------------------------------------------------


async def scenario_redis_errors(sizes: Sizes, rng: random.Random) -> Report:
    faults = SMOKE_FAULTS if sizes.load_s < 10 else (OOM_S, BUSY_SCRIPT_S, BUSY_AFTER_MS)
    report = scenario_report(
        "redis-errors",
        f"Redis out of memory for {faults[0]:g} s, then a {faults[1]} s BUSY script (3 runners)",
    )
    async with scenario("redis-errors", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs, rng)
        await load_with(
            cluster, planned, sizes.load_s, lambda _: _refusals(cluster, sizes.load_s, *faults)
        )
        await finish(cluster, report, planned)
        met = _count_lines(cluster, UNAVAILABLE_LINE)
        report.row("runners' 'Redis unavailable' lines", sum(met))
        report.row("runners that met the refusals", sum(n > 0 for n in met), ok=all(met))
    return report


async def _refusals(
    cluster: Cluster, load_s: float, oom_s: float, busy_s: int, busy_after_ms: int
) -> None:
    """OOM a quarter into the load, the BUSY script at half; the producer waits meanwhile."""
    await asyncio.sleep(load_s * 0.25)
    async with cluster.gate:
        log(f"Redis: maxmemory 1 byte, noeviction, for {oom_s:g} s")
        await cluster.client.config_set("maxmemory-policy", "noeviction")
        await cluster.client.config_set("maxmemory", "1")
        try:
            await asyncio.sleep(oom_s)
        finally:
            await cluster.client.config_set("maxmemory", "0")
    await asyncio.sleep(load_s * 0.25)
    async with cluster.gate:
        log(f"Redis: a {busy_s} s script, BUSY after {busy_after_ms} ms")
        await cluster.client.config_set("lua-time-limit", str(busy_after_ms))
        try:
            await asyncio.to_thread(_busy, cluster.server.url, busy_s)
        finally:
            await cluster.client.config_set("lua-time-limit", "5000")


def _busy(url: str, seconds: int) -> None:
    with SyncRedis.from_url(url) as client:
        client.eval(BUSY_SCRIPT, 0, seconds)


# -- dataloss --------------------------------------------------------------------------------


async def scenario_dataloss(sizes: Sizes, rng: random.Random) -> Report:
    report = scenario_report("dataloss", "FLUSHALL mid-load: Redis lost its data (3 runners)")
    async with scenario("dataloss", report) as cluster:
        planned = plan_load(cluster.run, sizes.jobs, rng)
        flushed: list[float] = []
        await load_with(cluster, planned, sizes.load_s, lambda _: _flush(cluster, sizes, flushed))
        after = [p for p in planned if p.pushed_at > flushed[0]]
        report.row("jobs pushed before the flush (gone with the data)", len(planned) - len(after))
        await finish(cluster, report, after)  # "lost" counts a dead-lettered one too
        losses = _count_lines(cluster, LOSS_LINE)
        report.row("runners that logged the data loss (once each)", losses, ok=losses == [1] * 3)
    return report


async def _flush(cluster: Cluster, sizes: Sizes, flushed: list[float]) -> None:
    """FLUSHALL at a third of the load; the operator re-creates the scenario's channels (not
    the default one: the runners must)."""
    await asyncio.sleep(sizes.load_s / 3)
    async with cluster.gate:
        log("Redis: FLUSHALL")
        await cluster.client.flushall()
        flushed.append(time.time())
        await cluster.client.hset(
            KEYS.channels,
            mapping={
                name: ChannelConfig(name=name, distinct=d, worker_count=w).to_json()
                for name, (d, w) in CHANNELS.items()
            },
        )
