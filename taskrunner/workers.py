"""This runner's channel workers: one ChannelWorker per channel in Redis, started, updated
(worker count, pause, settings) and stopped as the channels change, and woken by pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping

import aiohttp

from taskrunner.aio import cancel_and_wait, wait_event
from taskrunner.attempt import ExecPolicy
from taskrunner.channel import CANCELLED, ChannelWorker
from taskrunner.errors import StoreUnavailable
from taskrunner.metrics import RunnerMetrics
from taskrunner.models import ChannelConfig
from taskrunner.reconnect import Outages, RedisRetry
from taskrunner.rpc import new_session
from taskrunner.scheduler import Scheduler
from taskrunner.store import Store, schedule_notice

# The runner's loops log under the runner's name, as they did when they lived in runner.py.
log = logging.getLogger("taskrunner.runner")

CHANNEL_REFRESH_S = 1.0
CLAIM_STOP_S = 2.0  # at a stop: how long a claim in flight may take to come back


class ChannelWorkers(Mapping[str, ChannelWorker]):
    """The workers by channel name. Reloads the channels from Redis every CHANNEL_REFRESH_S
    and on a pub/sub notice; after `close()` (a drain) it starts no new worker."""

    def __init__(
        self,
        store: Store,
        *,
        policy: ExecPolicy,
        metrics: RunnerMetrics,
        scheduler: Scheduler,
        default_channel: str,
        ensure_defaults: Callable[[], Awaitable[None]],
        closing: asyncio.Event,
        outages: Outages,
        task_done: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self.store = store
        self.policy = policy
        self.metrics = metrics
        self.scheduler = scheduler
        self.default_channel = default_channel
        self._ensure_defaults = ensure_defaults
        self._closing = closing
        self._outages = outages
        self._task_done = task_done
        self.refresh = asyncio.Event()  # set: reload the channels now
        self._workers: dict[str, ChannelWorker] = {}
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        self._draining = False
        self._http: aiohttp.ClientSession | None = None  # rpc jobs' client, from open_http()

    def __getitem__(self, name: str) -> ChannelWorker:
        return self._workers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._workers)

    def __len__(self) -> int:
        return len(self._workers)

    def open_http(self) -> None:
        self._http = new_session()

    async def close_http(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    # -- channels -------------------------------------------------------------------------

    async def channel_loop(self) -> None:
        backoff = RedisRetry("reload channels")
        while not self._closing.is_set():
            await wait_event(self.refresh, CHANNEL_REFRESH_S)
            self.refresh.clear()
            try:
                await self.sync_channels()
                backoff.ok()
            except StoreUnavailable as exc:
                self._outages.lost("channels", backoff)
                await backoff.wait(exc)

    async def sync_channels(self) -> None:
        configs = await self.store.load_channels()
        if self.default_channel not in configs:  # Redis lost its data, or a hand deleted it
            await self._ensure_defaults()
            configs = await self.store.load_channels()
        for name, config in configs.items():
            if name in self._workers:
                self._workers[name].update(config)
            elif not self._draining:
                self._add_worker(config)
        for name in [n for n in self._workers if n not in configs]:
            log.info("channel %s deleted: no new jobs will start here", name)
            self._workers[name].close()
            if not self._workers[name].running_count:
                self._workers.pop(name)
                self._worker_tasks.pop(name, None)

    def _add_worker(self, config: ChannelConfig) -> None:
        worker = ChannelWorker(
            config,
            store=self.store,
            policy=self.policy,
            http=self._http,
            metrics=self.metrics.channel(config.name),
        )
        self._workers[config.name] = worker
        task = asyncio.create_task(worker.run(), name=f"channel:{config.name}")
        task.add_done_callback(self._task_done)
        self._worker_tasks[config.name] = task
        self.scheduler.kick()

    def config(self, name: str) -> ChannelConfig | None:
        """A channel's settings as this runner applies them (kept current by pub/sub)."""
        worker = self._workers.get(name)
        return None if worker is None else worker.config

    def updated(self, config: ChannelConfig) -> None:
        worker = self._workers.get(config.name)
        if worker is not None:
            worker.update(config)

    # -- pub/sub wake-ups -----------------------------------------------------------------

    async def events_loop(self) -> None:
        keys = self.store.keys
        handlers: dict[str, Callable[[str], None]] = {
            keys.wake_events: self._on_wake,
            keys.schedule_events: self._on_schedule,
            keys.channel_events: lambda _name: self.refresh.set(),
            keys.cancel_events: self._on_cancel,
        }
        backoff = RedisRetry("listen for wake-ups")
        while not self._closing.is_set():
            try:
                async with self.store.subscribe(*handlers) as subscription:
                    self.wake_everything()  # anything published while we were not listening
                    backoff.ok()
                    while not self._closing.is_set() and self.store.follows_primary(subscription):
                        notice = await subscription.next(timeout_s=1.0)
                        if notice is not None:
                            handlers[notice.channel](notice.data)
                    if not self._closing.is_set():
                        log.info("Redis primary moved (Sentinel failover): subscribing again")
            except StoreUnavailable as exc:
                self._outages.lost("events", backoff)
                await backoff.wait(exc)

    def _on_wake(self, channel: str) -> None:
        worker = self._workers.get(channel)
        if worker is not None:
            worker.wake()

    def _on_cancel(self, job_id: str) -> None:
        for worker in self._workers.values():
            if worker.terminate(job_id, CANCELLED):
                log.info(
                    "job %s cancelled: stopping its process group",
                    job_id,
                    extra={"job_id": job_id, "channel": worker.name},
                )
                return
        for worker in self._workers.values():
            worker.expect_cancel(job_id)  # its claim may still be on the way to us

    def _on_schedule(self, payload: str) -> None:
        _, due_ms = schedule_notice(payload)
        with contextlib.suppress(ValueError):
            self.scheduler.kick(int(due_ms) / 1000)

    def wake_everything(self) -> None:
        for worker in self._workers.values():
            worker.wake()
        self.scheduler.kick()
        self.refresh.set()

    # -- stopping -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop claiming in every channel, and start no new worker; the reload goes on."""
        self._draining = True
        for worker in self._workers.values():
            worker.close()

    async def stop_claiming(self) -> None:
        """Let the channels' claim loops end; one waiting on a Redis that does not answer is
        cancelled after CLAIM_STOP_S (a claim that ran in Redis stays this runner's: it is
        held, so the runner stays registered and its lease hands the job back)."""
        tasks = list(self._worker_tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=CLAIM_STOP_S)
            await cancel_and_wait(list(late))

    def cancel_tasks(self) -> None:
        for task in self._worker_tasks.values():
            task.cancel()
        self._worker_tasks.clear()

    def terminate_all(self, reason: str) -> int:
        """Stop every running job for `reason`; how many were stopped."""
        return sum(w.terminate_all(reason) for w in self._workers.values())

    def abandon_writes(self) -> None:
        for worker in self._workers.values():
            worker.abandon_writes()

    async def wait_idle(self, timeout_s: float | None) -> None:
        await asyncio.gather(*(w.wait_idle(timeout_s) for w in self._workers.values()))

    def running_count(self) -> int:
        return sum(w.running_count for w in self._workers.values())

    def process_count(self) -> int:
        """Jobs whose process (or request) still runs: not those writing their end."""
        return sum(w.process_count for w in self._workers.values())

    def running_counts(self) -> dict[str, int]:
        return {name: w.running_count for name, w in self._workers.items()}

    def running_job_ids(self) -> set[str]:
        return {job_id for w in self._workers.values() for job_id in w.running_job_ids()}

    def handed_back(self) -> int:
        return sum(w.handed_back for w in self._workers.values())

    def abandoned_writes(self) -> int:
        return sum(w.abandoned_writes for w in self._workers.values())
