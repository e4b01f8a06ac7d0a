"""Liveness: this runner's registration in Redis, its heartbeat (on the store's own connection
for it) and the watchdog's silence fence behind it, the audit of the jobs Redis says it owns,
the recovery of runners found lost, and the check that Redis kept its data."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from taskrunner.channel import FENCED
from taskrunner.config import Settings
from taskrunner.errors import StoreUnavailable
from taskrunner.guard import WATCHDOG
from taskrunner.reconnect import Outages, RedisRetry
from taskrunner.service import Service
from taskrunner.store import HANDED_BACK, Store
from taskrunner.workers import ChannelWorkers

# The runner's loops log under the runner's name, as they did when they lived in runner.py.
log = logging.getLogger("taskrunner.runner")

REDIS_UNHEALTHY_S = 5.0  # /healthz answers 503 when Redis answered no heartbeat this long
STOP_REDIS_S = 3.0  # at a stop: how long the last Redis calls (unregister) may take


class Liveness:
    """Keeps this runner registered and its lease alive, and hands back what lost runners
    (this one's lost claim replies included) held. Its loops run until `closing` is set."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        service: Service,
        *,
        runner_id: str,
        workers: ChannelWorkers,
        outages: Outages,
        closing: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.service = service
        self.runner_id = runner_id
        self.workers = workers
        self._outages = outages
        self._closing = closing
        self._audit_suspects: set[tuple[str, str]] = set()  # (job id, attempt)
        self._registered = False  # in Redis's runner set: close() leaves it
        self._redis_answered_at = time.monotonic()  # the last heartbeat Redis answered
        self._epoch = ""  # names the data Redis held at registration (Store.data_epoch)
        self._data_check = asyncio.Lock()

    async def register(self) -> None:
        await self.store.register_runner(self.runner_id, lease_s=self.settings.lease_s)
        self._registered = True
        self._epoch = await self.store.data_epoch()

    def redis_silent_s(self) -> float | None:
        """How long Redis has answered no heartbeat, once that is too long (/healthz: 503)."""
        silent_s = time.monotonic() - self._redis_answered_at
        reachable = silent_s <= max(REDIS_UNHEALTHY_S, 2 * self.settings.lease_s / 5)
        return None if reachable else silent_s

    async def leave(self) -> None:
        """Put unrouted messages back and unregister, within STOP_REDIS_S: a stop ends
        whatever Redis does; what is left is handed back by the lease."""
        if not self._registered:
            return
        self._registered = False
        try:
            async with asyncio.timeout(STOP_REDIS_S):
                restored = await self.store.restore_inflight(self.runner_id)
                await self.store.restore_kingtask_requests(self.runner_id)
                if restored:
                    log.info("%d unrouted messages put back on the prepare queue", restored)
                held = await self.store.unregister_runner(self.runner_id)
        except (TimeoutError, StoreUnavailable) as exc:
            log.error(
                "cannot unregister from Redis (%s): other runners hand back what this runner "
                "held when its lease (%.1f s) expires", exc or "no reply", self.settings.lease_s,
            )  # fmt: skip
            return
        if held:
            log.error(
                "%d jobs could not be written back: this runner stays registered, and other "
                "runners hand them back when its lease (%.1f s) expires", held, self.settings.lease_s,
            )  # fmt: skip

    async def heartbeat_loop(self) -> None:
        interval_s = self.settings.lease_s / 5
        backoff = RedisRetry("send heartbeat", max_s=interval_s)
        WATCHDOG.watch_silence(**silence_fence(self.settings))
        try:
            while not self._closing.is_set():
                try:
                    alive = await self._beat(timeout_s=interval_s)
                    backoff.ok()
                except (TimeoutError, StoreUnavailable) as exc:
                    self._outages.lost("heartbeat", backoff)
                    await backoff.wait(exc)
                    continue
                if not alive:
                    rejoined = await self._rejoined_after_data_loss()
                    if rejoined:
                        continue  # beat again at once: the watchdog has not heard of us since
                await asyncio.sleep(interval_s)
        finally:
            WATCHDOG.unwatch_silence()

    async def _beat(self, *, timeout_s: float) -> bool:
        """One heartbeat, on the store's own connection for it. The watchdog hears of it when
        it landed, or when Redis was out of reach (as for every runner, when nobody can be
        declared lost: heartbeat.lua); silent otherwise, it stops the jobs (silence_fence)."""
        sent_at = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):  # Redis hung: as out of reach as when down
                alive = await self.store.heartbeat(self.runner_id, lease_s=self.settings.lease_s)
            self._redis_answered_at = time.monotonic()
        except TimeoutError:
            WATCHDOG.heard(sent_at)
            raise
        except StoreUnavailable as exc:
            if exc.out_of_reach:
                WATCHDOG.heard(sent_at)
            raise
        if alive:
            WATCHDOG.heard(sent_at)
        return alive

    async def audit_loop(self) -> None:
        """Audits in their own loop: however long one takes, the heartbeat does not wait."""
        while not self._closing.is_set():
            await asyncio.sleep(self.settings.lease_s / 5)
            with contextlib.suppress(StoreUnavailable):
                await self._audit_owned_jobs()

    async def _audit_owned_jobs(self) -> None:
        """Hand back jobs Redis says we own but we do not run: a claim whose reply was lost.

        A job must look orphaned on two audits in a row with the same attempt, so a claim still
        in flight is not mistaken for one, nor a new claim of a job handed back meanwhile."""
        owned = await self.store.runner_job_channels(self.runner_id)
        local = self.workers.running_job_ids()
        attempts = await self.store.job_attempts(set(owned) - local)
        suspects = set(attempts.items())
        orphans, self._audit_suspects = suspects & self._audit_suspects, suspects
        for job_id, _ in orphans:
            outcome = await self.store.hand_back(
                runner_id=self.runner_id,
                job_id=job_id,
                channel=owned[job_id],
                reason="claim reply lost",
                started=False,
                result_ttl_s=self.settings.result_ttl_s,
            )
            if outcome:
                log.warning(
                    "job %s was claimed but never started here (reply lost); %s",
                    job_id,
                    "handed back" if outcome == HANDED_BACK else "ended cancelled (a cancel came)",
                    extra={"job_id": job_id, "channel": owned[job_id]},
                )

    async def _rejoined_after_data_loss(self) -> bool:
        """The heartbeat found this runner unknown or declared dead: Redis lost its data (True:
        registered again), or another runner took its jobs (fenced, False). Redis unavailable
        meanwhile: False, asked again at the next beat."""
        try:
            if await self.check_data_loss():
                return True
            await self._fenced()
        except StoreUnavailable as exc:
            log.warning("heartbeat refused, and Redis unavailable to tell why (%s)", exc)
        return False

    async def check_data_loss(self) -> bool:
        """Whether Redis lost its data since this runner registered (FLUSHALL, a restart without
        persistence): then log it once, register again and ensure the default channels."""
        async with self._data_check:
            epoch = await self.store.data_epoch()
            if epoch == self._epoch:
                return False
            log.error(
                "Redis lost its data (FLUSHALL, or a restart without persistence): the jobs"
                " queued, scheduled or recorded there are gone; registering again and"
                " ensuring the default channels. Jobs running here go on; their results"
                " cannot be recorded"
            )
            await self.store.register_runner(self.runner_id, lease_s=self.settings.lease_s)
            self._epoch = epoch
            await self.service.ensure_default_channels()
        self.workers.wake_everything()  # claims were refused while unregistered: claim now
        return True

    async def _fenced(self) -> None:
        """Another runner declared us dead and took our jobs: stop our copies, rejoin."""
        stopped = self.workers.terminate_all(FENCED)
        log.error(
            "this runner was declared dead (no heartbeat for %.1f s); stopped %d jobs now run elsewhere",
            self.settings.lease_s,
            stopped,
        )
        await self.workers.wait_idle(None)  # its claims are refused meanwhile: this ends
        await self.store.register_runner(self.runner_id, lease_s=self.settings.lease_s)
        self.workers.wake_everything()  # claim again now, not at the next wake-up

    async def recovery_loop(self) -> None:
        interval_s = min(self.settings.lease_s / 3, 5.0)
        backoff = RedisRetry("recover jobs of dead runners")
        while not self._closing.is_set():
            await asyncio.sleep(interval_s)
            # Only judge others after being connected a full lease ourselves: after an outage
            # every runner needs that long to refresh its heartbeat.
            if time.monotonic() - self._outages.connected_since < self.settings.lease_s:
                continue
            try:
                await self.recover_dead_runners()
                backoff.ok()
            except StoreUnavailable as exc:
                self._outages.lost("recovery", backoff)
                await backoff.wait(exc)

    async def recover_dead_runners(self) -> int:
        """Declare stale runners dead, then hand their jobs and messages back. The verdict
        comes first and is atomic: a runner that beat meanwhile keeps its jobs, and one declared
        dead claims nothing more, so the jobs read next are all it holds."""
        total = 0
        for dead in await self.store.stale_runners(lease_s=self.settings.lease_s):
            if dead == self.runner_id:
                continue
            if not await self.store.declare_dead(dead, lease_s=self.settings.lease_s):
                continue
            outcomes = Counter(
                [
                    await self.store.hand_back(
                        runner_id=dead,
                        job_id=job_id,
                        channel=channel,
                        reason="runner lost",
                        result_ttl_s=self.settings.result_ttl_s,
                    )
                    for job_id, channel in (await self.store.runner_job_channels(dead)).items()
                ]
            )
            handed = outcomes[HANDED_BACK]
            messages = await self.store.restore_inflight(dead)
            messages += await self.store.restore_kingtask_requests(dead)
            await self.store.forget_runner(dead)
            log.warning(
                "runner %s lost (no heartbeat for %.1f s): %d jobs handed back, %d cancelled jobs"
                " ended, %d messages re-queued",
                dead, self.settings.lease_s, handed, outcomes["cancelled"], messages,
            )  # fmt: skip
            total += handed
        return total


def silence_fence(settings: Settings) -> dict[str, float]:
    """When the watchdog stops the jobs of a runner whose heartbeat loop fell silent: after
    `silence_s` without a heartbeat, SIGTERM, and SIGKILL `grace_s` later. The margin left
    before the lease ends is a tenth of the lease plus that grace (itself at most a tenth of
    the lease): 15 s lease, 12 s of silence. A heartbeat counts from when it was sent, before
    its lease began on Redis, so the groups are gone before any runner may declare this one
    lost and start its jobs again (recover_dead_runners waits the full lease)."""
    lease_s = settings.lease_s
    grace_s = min(settings.kill_grace_s, lease_s / 10)
    return {"silence_s": lease_s - lease_s / 10 - grace_s, "grace_s": grace_s}
