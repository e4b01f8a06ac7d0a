"""The runner process: wires store, channels, ingress, scheduler and HTTP; owns lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from taskrunner.aio import cancel_and_wait, wait_event
from taskrunner.api.app import CONNECTIONS, build_app
from taskrunner.api.connections import GuardedSite
from taskrunner.channel import CANCELLED, DRAIN, FENCED, ChannelWorker, ExecPolicy
from taskrunner.config import Settings
from taskrunner.errors import (
    ConfigError,
    InvalidChannel,
    InvalidJob,
    NotAllowed,
    StoreRefusing,
    StoreUnavailable,
)
from taskrunner.guard import WATCHDOG, adopt_unmarked, reap_strays
from taskrunner.jobs import ChannelConfig, Job, parse_message
from taskrunner.metrics import RunnerMetrics
from taskrunner.rpc import new_session
from taskrunner.scheduler import Scheduler
from taskrunner.service import Service, ServiceSettings
from taskrunner.store import (
    DEAD_LETTER_RAW_BYTES,
    HANDED_BACK,
    SERVER_REFUSALS,
    UNAVAILABLE_ERRORS,
    Admission,
    Store,
    out_of_reach,
    unavailable_reason,
)

log = logging.getLogger("taskrunner.runner")

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CHANNEL_REFRESH_S = 1.0
INGRESS_BLOCK_S = 1.0
INGRESS_BATCH = 100  # messages routed per round trip under load
# Parsing holds the event loop this long at most before what is parsed is enqueued (a round
# trip, so the loop runs meanwhile): 100 messages of 60 KB once stalled /healthz for seconds.
ROUTE_SLICE_S = 0.02
REAP_INTERVAL_S = 5.0
HANDBACK_WAIT_S = 3.0  # after the kill grace: how long stopped jobs may take to be written back
REDIS_UNHEALTHY_S = 5.0  # /healthz answers 503 when Redis answered no heartbeat this long
CLAIM_STOP_S = 2.0  # at a stop: how long a claim in flight may take to come back
STOP_REDIS_S = 3.0  # at a stop: how long the last Redis calls (unregister) may take  # after the kill grace: how long stopped jobs may take to be written back


def new_runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Runner:
    """One `taskrunner run` process. `serve()` runs until a stop signal, then drains."""

    def __init__(self, settings: Settings, store: Store, *, runner_id: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.runner_id = runner_id or new_runner_id()
        self.service = Service(
            store,
            ServiceSettings(
                runner_id=self.runner_id,
                default_channel=settings.channel_default,
                concurrent=settings.concurrent,
                limits=settings.limits,
                result_ttl_s=settings.result_ttl_s,
                allow=settings.allow,
                shell=settings.shell,
                bin_path=settings.bin_path,
                restores_default_channels=True,
            ),
            channels=self._channel_config,
            channel_updated=self._channel_updated,
        )
        self.policy = ExecPolicy(
            runner_id=self.runner_id,
            shell=settings.shell,
            kill_grace_s=settings.kill_grace_s,
            default_timeout_s=settings.default_timeout_s,
            capture_bytes=settings.capture_bytes,
            result_ttl_s=settings.result_ttl_s,
            task_mode=settings.task_mode,
            bin_path=settings.bin_path,
            allow=settings.allow,
        )
        self.metrics = RunnerMetrics()
        self.workers: dict[str, ChannelWorker] = {}
        self.scheduler = Scheduler(store, lambda: list(self.workers))
        self.stop_requested = asyncio.Event()
        self.force_requested = asyncio.Event()
        self.draining = False
        self._intake_open = True
        self._refresh = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        self._connected_since = time.monotonic()
        self._web: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None  # rpc jobs' client, from start()
        self.failed = False
        self._closing = False
        self._audit_suspects: set[tuple[str, str]] = set()  # (job id, attempt)
        self._registered = False  # in Redis's runner set: close() leaves it
        self._redis_answered_at = time.monotonic()  # the last heartbeat Redis answered
        self._epoch = ""  # names the data Redis held at registration (Store.data_epoch)
        self._data_check = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def serve(self) -> None:
        """Start, wait for a stop signal, drain, stop. Raises ConfigError on startup failures."""
        loop = asyncio.get_running_loop()
        adopt_unmarked()  # this process's children are its jobs': it is `taskrunner run`
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request_stop, sig)
        try:
            if await self._started_unless_stopped():
                await self.stop_requested.wait()
                await self.drain()
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            await self.close()

    async def _started_unless_stopped(self) -> bool:
        """`start()`, unless a stop signal comes first (Redis hangs during start-up): False."""
        start = asyncio.ensure_future(self.start())
        stop = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait([start, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if start.done():
            start.result()  # raises what made the start fail
            return True
        await cancel_and_wait([start])
        log.info("stopped during start-up, before any job was taken")
        return False

    def request_stop(self, sig: int | None = None) -> None:
        """Signal handler: first call drains, a second one skips the wait."""
        name = signal.Signals(sig).name if sig else "request"
        if self.stop_requested.is_set():
            log.warning("%s again: skipping the drain wait", name)
            self.force_requested.set()
        else:
            log.info("%s received: draining (again to skip the wait)", name)
            self.stop_requested.set()

    async def start(self) -> None:
        # If this process dies, its jobs are stopped before their lease hands them to others.
        WATCHDOG.configure(grace_s=min(self.settings.kill_grace_s, self.settings.lease_s / 2))
        self._http = new_session()
        await self._wait_until_redis_serves()
        if self.stop_requested.is_set():
            return  # stopped while Redis refused to serve: nothing was set up
        self._spawn(self._ingress_loop(), "ingress")
        self._spawn(self._channel_loop(), "channels")
        self._spawn(self._events_loop(), "events")
        self._spawn(self._heartbeat_loop(), "heartbeat")
        self._spawn(self._audit_loop(), "audit")
        self._spawn(self._recovery_loop(), "recovery")
        self._spawn(self.scheduler.run(), "scheduler")
        self._spawn(self._reaper_loop(), "reaper")
        await self._start_http()
        log.info(
            "taskrunner started: runner=%s redis=%s http=%s channels=%s task_mode=%s",
            self.runner_id, self.store.url_for_logs, self.settings.http_addr,
            ",".join(f"{n}({w.config.worker_count})" for n, w in sorted(self.workers.items())),
            self.settings.task_mode,
        )  # fmt: skip

    async def _wait_until_redis_serves(self) -> None:
        """Set this runner up in Redis. Unreachable at start: StoreUnavailable (exit 2). Reachable
        but refusing (loading, out of memory, busy, read-only, ...): log once and retry until it
        serves, or until a stop is requested."""
        backoff = _Backoff("set this runner up", max_s=2.0)
        reached = False
        while not self.stop_requested.is_set():
            try:
                await self.store.ping()
                reached = True
                await self._set_up_in_redis()
            except StoreUnavailable as exc:
                if not (reached or isinstance(exc, StoreRefusing)):
                    raise
                await backoff.wait(exc)
            except UNAVAILABLE_ERRORS as exc:
                await backoff.wait(exc)
            else:
                backoff.ok()
                return

    async def _set_up_in_redis(self) -> None:
        await self.store.load_scripts()  # a Redis that restarted knows none; load all at once
        await self.store.register_runner(self.runner_id, lease_s=self.settings.lease_s)
        self._registered = True
        self._epoch = await self.store.data_epoch()
        await self.service.ensure_default_channels()
        await self._sync_channels()

    async def _start_http(self) -> None:
        app = build_app(self)
        read_timeout_s = self.settings.http_read_timeout_s
        self._web = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=read_timeout_s,  # the next request on a kept-alive connection
            lingering_time=min(read_timeout_s, 10.0),  # reading a body nobody asked for
            shutdown_timeout=STOP_REDIS_S,  # at exit: requests in flight (long polls) end by then
        )
        await self._web.setup()
        host, port = self.settings.http_host_port()
        site = GuardedSite(self._web, host, port, app[CONNECTIONS])
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on --http-addr {self.settings.http_addr}: {exc.strerror}"
            ) from exc
        log.info(
            "HTTP on %s: at most %d connections, %g s to send a request's headers and its body",
            self.settings.http_addr, app[CONNECTIONS].max_connections, read_timeout_s,
        )  # fmt: skip

    async def drain(self) -> None:
        """Three logged phases: stop intake; wait for running jobs; kill and hand back the rest."""
        self.draining = True
        self._intake_open = False
        self.scheduler.close()
        for worker in self.workers.values():
            worker.close()
        await self._stop_claiming()
        running = self.process_count()
        log.info("drain 1/3: intake stopped; %d jobs running, queued jobs stay in Redis", running)
        await self._wait_idle_unless_forced(self.settings.drain_timeout_s)
        left, writing = self.process_count(), self.running_count() - self.process_count()
        log.info(
            "drain 2/3: %d jobs finished, %d still running%s", max(0, running - left), left,
            f"; {writing} results still being written" if writing else "",
        )  # fmt: skip
        killed = sum(w.terminate_all(DRAIN) for w in self.workers.values())
        await self._wait_handed_back()
        handed = sum(w.handed_back for w in self.workers.values())
        log.info(
            "drain 3/3: %d jobs killed, %d of them handed back to their queues", killed, handed
        )

    async def _stop_claiming(self) -> None:
        """Let the channels' claim loops end; one waiting on a Redis that does not answer is
        cancelled after CLAIM_STOP_S (a claim that ran in Redis stays this runner's: it is
        held, so the runner stays registered and its lease hands the job back)."""
        tasks = list(self._worker_tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=CLAIM_STOP_S)
            await cancel_and_wait(list(late))

    async def _wait_handed_back(self) -> None:
        """Wait for stopped attempts to be written back; give up on Redis at a deadline or a
        second signal, so a stop with Redis away still ends."""
        await self._wait_idle_unless_forced(self.settings.kill_grace_s + HANDBACK_WAIT_S)
        if self.running_count():
            for worker in self.workers.values():
                worker.abandon_writes()
            await self._wait_idle(None)
        stuck = sum(w.abandoned_writes for w in self.workers.values())
        if stuck:
            log.error(
                "%d jobs could not be written back to Redis; their lease expiry hands them back",
                stuck,
            )
            self.failed = True

    async def _wait_idle_unless_forced(self, timeout_s: float) -> None:
        """Wait until no job runs, at most `timeout_s`, or until a second stop signal."""
        idle = asyncio.ensure_future(self._wait_idle(timeout_s))
        force = asyncio.ensure_future(self.force_requested.wait())
        await asyncio.wait([idle, force], return_when=asyncio.FIRST_COMPLETED)
        for waiter in (idle, force):
            waiter.cancel()
        await asyncio.gather(idle, force, return_exceptions=True)

    async def _wait_idle(self, timeout_s: float | None) -> None:
        await asyncio.gather(*(w.wait_idle(timeout_s) for w in self.workers.values()))

    async def close(self) -> None:
        """Idempotent teardown in reverse order of setup."""
        self._intake_open = False
        self._closing = True  # loops also check this: a swallowed cancel cannot keep one alive
        self._refresh.set()
        loops, self._loops = self._loops, []
        await cancel_and_wait(loops)
        for worker in self.workers.values():
            worker.close()
            worker.terminate_all(DRAIN)
        await self._wait_handed_back()
        for task in self._worker_tasks.values():
            task.cancel()
        self._worker_tasks.clear()
        if self._web is not None:
            web_runner, self._web = self._web, None
            await web_runner.cleanup()
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()
        await self._leave()

    async def _leave(self) -> None:
        """Put unrouted messages back and unregister, within STOP_REDIS_S: a stop ends
        whatever Redis does; what is left is handed back by the lease."""
        if not self._registered:
            return
        self._registered = False
        try:
            async with asyncio.timeout(STOP_REDIS_S):
                restored = await self.store.restore_inflight(self.runner_id)
                if restored:
                    log.info("%d unrouted messages put back on the prepare queue", restored)
                held = await self.store.unregister_runner(self.runner_id)
        except (TimeoutError, *UNAVAILABLE_ERRORS) as exc:
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

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._loop_done)
        self._loops.append(task)

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "internal loop %s failed: %r; stopping",
                task.get_name(),
                task.exception(),
                exc_info=task.exception(),
            )
            self.failed = True
            self.stop_requested.set()

    def running_count(self) -> int:
        return sum(w.running_count for w in self.workers.values())

    def health(self) -> dict[str, Any]:
        """`/healthz`: `ok` is False (503) when Redis answered no heartbeat for a while."""
        silent_s = time.monotonic() - self._redis_answered_at
        reachable = silent_s <= max(REDIS_UNHEALTHY_S, 2 * self.settings.lease_s / 5)
        return {
            "ok": reachable,
            "runner": self.runner_id,
            "draining": self.draining,
            "running": self.running_count(),
            "redis": "ok" if reachable else "unreachable",
            **({} if reachable else {"redis_unreachable_s": round(silent_s, 1)}),
        }

    def process_count(self) -> int:
        """Jobs whose process (or request) still runs: not those writing their end."""
        return sum(w.process_count for w in self.workers.values())

    def _channel_config(self, name: str) -> ChannelConfig | None:
        """A channel's settings as this runner applies them (kept current by pub/sub)."""
        worker = self.workers.get(name)
        return None if worker is None else worker.config

    def _channel_updated(self, config: ChannelConfig) -> None:
        worker = self.workers.get(config.name)
        if worker is not None:
            worker.update(config)

    async def metrics_text(self) -> bytes:
        """`GET /metrics`: this runner's series and the queue counts read from Redis now."""
        running = {name: w.running_count for name, w in self.workers.items()}
        return await self.metrics.exposition(self.store, running=running, draining=self.draining)

    # -- ingress --------------------------------------------------------------------------

    async def _ingress_loop(self) -> None:
        if not self.settings.task_mode:
            log.info("--no-task-mode: routing jobs but running none")
        backoff = _Backoff("take from the prepare queue")
        resync = False
        while self._intake_open:
            try:
                if resync:  # a reply may have been lost: route what we hold before taking more
                    await self.route_many(await self.store.inflight_messages(self.runner_id))
                    resync = False
                # Under load, take a batch per round trip; when the queue is empty, block.
                batch = await self._take_batch()
                if not batch:
                    raw = await self.store.take_message(self.runner_id, timeout_s=INGRESS_BLOCK_S)
                    batch = [] if raw is None else [raw]
                await self.route_many(batch)
                backoff.ok()
            except UNAVAILABLE_ERRORS as exc:
                resync = True
                self._connection_lost("ingress", backoff)
                await backoff.wait(exc)
            except RedisError as exc:  # e.g. OOM or a READONLY replica: retry, keep the message
                resync = True
                await backoff.wait(exc)

    async def route_many(self, raws: Sequence[bytes]) -> None:
        """Route messages taken from the prepare queue (they are in our in-flight list)."""
        jobs: list[tuple[Job, bytes]] = []
        now, slice_started = time.time(), time.monotonic()
        for raw in raws:
            try:
                job = parse_message(
                    raw,
                    default_channel=self.settings.channel_default,
                    now=now,
                    limits=self.settings.limits,
                )
                await self.service.check_allowed(job)
            except (InvalidJob, InvalidChannel, NotAllowed) as exc:
                await self._dead_letter(raw, str(exc))
                continue
            jobs.append((job, raw))
            if time.monotonic() - slice_started >= ROUTE_SLICE_S:  # big messages: let the loop run
                await self._enqueue_routed(jobs)
                jobs, slice_started = [], time.monotonic()
        await self._enqueue_routed(jobs)

    async def _enqueue_routed(self, jobs: Sequence[tuple[Job, bytes]]) -> None:
        if not jobs:
            return
        admissions = await self._admit(jobs)
        for (job, raw), admission in zip(jobs, admissions, strict=True):
            await self._admitted(job, raw, admission)

    async def _admit(self, jobs: Sequence[tuple[Job, bytes]]) -> list[Admission]:
        """Enqueue routed jobs. A default channel found missing (Redis lost its data) is ensured
        again and its jobs are enqueued again, not dead-lettered."""
        admissions = await self.store.enqueue_many(jobs, runner_id=self.runner_id)
        defaults = self.service.default_channel_names
        lost = [
            i for i, (admission, (job, _)) in enumerate(zip(admissions, jobs, strict=True))
            if admission.status == "nochan" and job.channel in defaults
        ]  # fmt: skip
        if lost:
            await self.service.ensure_default_channels()
            again = await self.store.enqueue_many([jobs[i] for i in lost], runner_id=self.runner_id)
            for i, admission in zip(lost, again, strict=True):
                admissions[i] = admission
        return admissions

    async def _admitted(self, job: Job, raw: bytes, admission: Admission) -> None:
        if admission.status == "nochan":
            await self._dead_letter(
                raw,
                f"unknown channel {job.channel!r}: create it with POST /queue or `taskrunner queue create`",
            )
        elif admission.status == "routed":  # this routing ran twice (a lost reply): done
            log.debug("message of job %s was routed already", job.id, extra={"job_id": job.id})
        elif admission.status == "exists":
            log.info(
                "message for job %s: a job with this id exists already; nothing created",
                job.id, extra={"job_id": job.id, "channel": job.channel},
            )  # fmt: skip
        elif admission.status == "duplicate":
            log.info(
                "job refused: duplicate of live job %s in channel %s",
                admission.job_id,
                job.channel,
                extra={"job_id": admission.job_id, "channel": job.channel},
            )
        else:
            log.debug(
                "job %s queued in %s",
                job.id,
                job.channel,
                extra={"job_id": job.id, "channel": job.channel},
            )
            worker = self.workers.get(job.channel)
            if worker is not None and job.run_at is None:
                worker.wake()  # no need to wait for our own wake-up to come back through pub/sub

    async def _take_batch(self, count: int = INGRESS_BATCH) -> list[bytes]:
        """Up to `count` messages; one over the size limit is dead-lettered inside Redis (its
        first bytes kept), so it is never read whole, nor sent back."""
        limits = self.settings.limits
        taken = await self.store.take_messages(
            self.runner_id,
            count=count,
            max_bytes=limits.max_message_bytes,
            dead_letter_cap=self.settings.dead_letter_cap,
        )
        for size in taken.refused_sizes:
            self.metrics.dead_letters_routed.inc()
            log.warning(
                "dead-lettered message: message is %d bytes, over the limit of %d (first %d"
                " bytes kept)", size, limits.max_message_bytes, DEAD_LETTER_RAW_BYTES,
            )  # fmt: skip
        return taken.messages

    async def _dead_letter(self, raw: bytes, reason: str) -> None:
        if len(raw) > self.settings.limits.max_message_bytes:  # a blocking take brought it
            await self._take_batch(0)  # dead-letters it inside Redis: no need to send it back
            return
        count = await self.store.dead_letter(
            raw=raw,
            reason=reason,
            runner_id=self.runner_id,
            source="prepare_queue",
            cap=self.settings.dead_letter_cap,
        )
        self.metrics.dead_letters_routed.inc()
        log.warning("dead-lettered message #%d: %s: %r", count, reason, raw[:200])

    # -- channels -------------------------------------------------------------------------

    async def _channel_loop(self) -> None:
        backoff = _Backoff("reload channels")
        while not self._closing:
            await wait_event(self._refresh, CHANNEL_REFRESH_S)
            self._refresh.clear()
            try:
                await self._sync_channels()
                backoff.ok()
            except UNAVAILABLE_ERRORS as exc:
                self._connection_lost("channels", backoff)
                await backoff.wait(exc)

    async def _sync_channels(self) -> None:
        configs = await self.store.load_channels()
        if (
            self.settings.channel_default not in configs
        ):  # Redis lost its data, or a hand deleted it
            await self.service.ensure_default_channels()
            configs = await self.store.load_channels()
        for name, config in configs.items():
            if name in self.workers:
                self.workers[name].update(config)
            elif not self.draining:
                self._add_worker(config)
        for name in [n for n in self.workers if n not in configs]:
            log.info("channel %s deleted: no new jobs will start here", name)
            self.workers[name].close()
            if not self.workers[name].running_count:
                self.workers.pop(name)
                self._worker_tasks.pop(name, None)

    def _add_worker(self, config: ChannelConfig) -> None:
        worker = ChannelWorker(
            config,
            store=self.store,
            policy=self.policy,
            http=self._http,
            metrics=self.metrics.channel(config.name),
        )
        self.workers[config.name] = worker
        task = asyncio.create_task(worker.run(), name=f"channel:{config.name}")
        task.add_done_callback(self._loop_done)
        self._worker_tasks[config.name] = task
        self.scheduler.kick()

    # -- pub/sub wake-ups -----------------------------------------------------------------

    async def _events_loop(self) -> None:
        keys = self.store.keys
        handlers: dict[str, Callable[[str], None]] = {
            keys.wake_events: self._on_wake,
            keys.schedule_events: self._on_schedule,
            keys.channel_events: lambda _name: self._refresh.set(),
            keys.cancel_events: self._on_cancel,
        }
        backoff = _Backoff("listen for wake-ups")
        while not self._closing:
            try:
                async with self.store.subscribe(*handlers) as pubsub:
                    self._wake_everything()  # anything published while we were not listening
                    backoff.ok()
                    while not self._closing and self.store.follows_primary(pubsub):
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            handlers[_text(message["channel"])](_text(message["data"]))
                    if not self._closing:
                        log.info("Redis primary moved (Sentinel failover): subscribing again")
            except UNAVAILABLE_ERRORS as exc:
                self._connection_lost("events", backoff)
                await backoff.wait(exc)

    def _on_wake(self, channel: str) -> None:
        worker = self.workers.get(channel)
        if worker is not None:
            worker.wake()

    def _on_cancel(self, job_id: str) -> None:
        for worker in self.workers.values():
            if worker.terminate(job_id, CANCELLED):
                log.info(
                    "job %s cancelled: stopping its process group",
                    job_id,
                    extra={"job_id": job_id, "channel": worker.name},
                )
                return
        for worker in self.workers.values():
            worker.expect_cancel(job_id)  # its claim may still be on the way to us

    def _on_schedule(self, payload: str) -> None:
        _, _, due_ms = payload.partition(" ")
        with contextlib.suppress(ValueError):
            self.scheduler.kick(int(due_ms) / 1000)

    def _wake_everything(self) -> None:
        for worker in self.workers.values():
            worker.wake()
        self.scheduler.kick()
        self._refresh.set()

    async def _reaper_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(REAP_INTERVAL_S)
            reaped = reap_strays()
            if reaped:
                log.info(
                    "reaped %d exited processes that had left their job's process group", reaped
                )

    # -- liveness and recovery ------------------------------------------------------------

    def _connection_lost(self, loop: str, backoff: _Backoff) -> None:
        if not backoff.failing:  # the first failure of an outage
            self.metrics.redis_lost(loop)
        self._connected_since = time.monotonic()

    async def _heartbeat_loop(self) -> None:
        interval_s = self.settings.lease_s / 5
        backoff = _Backoff("send heartbeat", max_s=interval_s)
        WATCHDOG.watch_silence(**silence_fence(self.settings))
        try:
            while not self._closing:
                try:
                    alive = await self._beat(timeout_s=interval_s)
                    backoff.ok()
                except UNAVAILABLE_ERRORS as exc:
                    self._connection_lost("heartbeat", backoff)
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
        except UNAVAILABLE_ERRORS as exc:
            if out_of_reach(exc):
                WATCHDOG.heard(sent_at)
            raise
        if alive:
            WATCHDOG.heard(sent_at)
        return alive

    async def _audit_loop(self) -> None:
        """Audits in their own loop: however long one takes, the heartbeat does not wait."""
        while not self._closing:
            await asyncio.sleep(self.settings.lease_s / 5)
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                await self._audit_owned_jobs()

    async def _audit_owned_jobs(self) -> None:
        """Hand back jobs Redis says we own but we do not run: a claim whose reply was lost.

        A job must look orphaned on two audits in a row with the same attempt, so a claim still
        in flight is not mistaken for one, nor a new claim of a job handed back meanwhile."""
        owned = await self.store.runner_job_channels(self.runner_id)
        local = {job_id for w in self.workers.values() for job_id in w.running_job_ids()}
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
        except UNAVAILABLE_ERRORS as exc:
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
        self._wake_everything()  # claims were refused while unregistered: claim now
        return True

    async def _fenced(self) -> None:
        """Another runner declared us dead and took our jobs: stop our copies, rejoin."""
        stopped = sum(w.terminate_all(FENCED) for w in self.workers.values())
        log.error(
            "this runner was declared dead (no heartbeat for %.1f s); stopped %d jobs now run elsewhere",
            self.settings.lease_s,
            stopped,
        )
        await self._wait_idle(None)  # its claims are refused meanwhile: this ends
        await self.store.register_runner(self.runner_id, lease_s=self.settings.lease_s)
        self._wake_everything()  # claim again now, not at the next wake-up

    async def _recovery_loop(self) -> None:
        interval_s = min(self.settings.lease_s / 3, 5.0)
        backoff = _Backoff("recover jobs of dead runners")
        while not self._closing:
            await asyncio.sleep(interval_s)
            # Only judge others after being connected a full lease ourselves: after an outage
            # every runner needs that long to refresh its heartbeat.
            if time.monotonic() - self._connected_since < self.settings.lease_s:
                continue
            try:
                await self.recover_dead_runners()
                backoff.ok()
            except UNAVAILABLE_ERRORS as exc:
                self._connection_lost("recovery", backoff)
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


class _Backoff:
    """Exponential backoff that logs the first failure and the recovery, not every retry."""

    def __init__(self, what: str, *, max_s: float = 5.0) -> None:
        self.what = what
        self.max_s = max_s
        self.delay_s = 0.1
        self.failing = False

    async def wait(self, exc: BaseException) -> None:
        if not self.failing:
            why = unavailable_reason(exc) if isinstance(exc, SERVER_REFUSALS) else exc
            log.warning("Redis unavailable: cannot %s (%s); retrying with backoff", self.what, why)
        self.failing = True
        await asyncio.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)

    def ok(self) -> None:
        if self.failing:
            log.info("Redis back: %s works again", self.what)
        self.failing = False
        self.delay_s = 0.1


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
