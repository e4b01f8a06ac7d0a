"""The runner process: composes store, channel workers, ingress, liveness, scheduler and
HTTP; owns start, drain and stop."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from taskrunner.adoption import Adoption
from taskrunner.aio import cancel_and_wait
from taskrunner.api.app import CONNECTIONS, build_app
from taskrunner.api.connections import GuardedSite
from taskrunner.api.kingtask_tcp import KingtaskTcpServer, start_kingtask_tcp
from taskrunner.attempt import ExecPolicy
from taskrunner.channel import DRAIN
from taskrunner.config import Settings
from taskrunner.errors import ConfigError, StoreRefusing, StoreUnavailable
from taskrunner.guard import WATCHDOG, adopt_unmarked, reap_strays
from taskrunner.ingress import Ingress
from taskrunner.kingtask_ingress import KingtaskIngress
from taskrunner.liveness import STOP_REDIS_S, Liveness
from taskrunner.metrics import RunnerMetrics
from taskrunner.reconnect import Outages, RedisRetry
from taskrunner.scheduler import Scheduler
from taskrunner.service import Service, ServiceSettings
from taskrunner.store import Store
from taskrunner.workers import ChannelWorkers

log = logging.getLogger("taskrunner.runner")

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REAP_INTERVAL_S = 5.0
HANDBACK_WAIT_S = 3.0  # after the kill grace: how long stopped jobs may take to be written back


def new_runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Runner:
    """One `taskrunner run` process. `serve()` runs until a stop signal, then drains."""

    @classmethod
    def from_url(cls, settings: Settings, url: str) -> Runner:
        """A runner on the Redis at `url` (any URL form taskrunner accepts); its store is
        closed by the caller (`runner.store.close()`)."""
        return cls(settings, Store.from_url(url))

    def __init__(self, settings: Settings, store: Store, *, runner_id: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.runner_id = runner_id or new_runner_id()
        self.metrics = RunnerMetrics()
        self.stop_requested = asyncio.Event()
        self.force_requested = asyncio.Event()
        self.draining = False
        self.failed = False
        # Set by close(); the loops also check it: a swallowed cancel cannot keep one alive.
        self._closing = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._web: web.AppRunner | None = None
        self._kingtask_tcp: KingtaskTcpServer | None = None
        outages = Outages(self.metrics)
        self.scheduler = Scheduler(store, lambda: list(self.workers))
        self.workers = ChannelWorkers(
            store,
            policy=_exec_policy(settings, self.runner_id),
            metrics=self.metrics,
            scheduler=self.scheduler,
            default_channel=settings.channel_default,
            ensure_defaults=lambda: self.service.ensure_default_channels(),  # (made next)
            closing=self._closing,
            outages=outages,
            task_done=self._loop_done,
        )
        self.service = Service(
            store,
            _service_settings(settings, self.runner_id),
            channels=self.workers.config,
            channel_updated=self.workers.updated,
        )
        self.liveness = Liveness(
            settings,
            store,
            self.service,
            runner_id=self.runner_id,
            workers=self.workers,
            outages=outages,
            closing=self._closing,
        )
        self.adoption = Adoption(
            self.service, dead_letter_cap=settings.dead_letter_cap, metrics=self.metrics
        )
        self.ingress = Ingress(
            settings,
            store,
            self.service,
            runner_id=self.runner_id,
            workers=self.workers,
            metrics=self.metrics,
            outages=outages,
        )
        self.kingtask = self.ingress.alongside(KingtaskIngress)

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
        self.workers.open_http()
        await self._wait_until_redis_serves()
        if self.stop_requested.is_set():
            return  # stopped while Redis refused to serve: nothing was set up
        self._spawn(self.ingress.ingress_loop(), "ingress")
        if self.settings.bin_path is not None:  # only a runner that can run scripts polls
            self._spawn(self.kingtask.poll_loop(), "kingtask")
        self._spawn(self.workers.channel_loop(), "channels")
        self._spawn(self.workers.events_loop(), "events")
        self._spawn(self.liveness.heartbeat_loop(), "heartbeat")
        self._spawn(self.liveness.audit_loop(), "audit")
        self._spawn(self.liveness.recovery_loop(), "recovery")
        self._spawn(self.scheduler.run(), "scheduler")
        self._spawn(self._reaper_loop(), "reaper")
        if self.settings.task_mode:  # TaskRunner's queued commands: taskrunner.adoption
            self._spawn(self.adoption.loop(interval_s=self.settings.adopt_interval_s), "adopt")
        await self._start_http()
        if self.settings.kingtask_addr:
            requests = self.service.on_store(self.store.for_requests())
            self._kingtask_tcp = await start_kingtask_tcp(self.settings, requests)
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
        backoff = RedisRetry("set this runner up", max_s=2.0)
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
            else:
                backoff.ok()
                return

    async def _set_up_in_redis(self) -> None:
        await self.store.load_scripts()  # a Redis that restarted knows none; load all at once
        await self.liveness.register()
        await self.service.ensure_default_channels()
        if indexed := await self.store.index_earlier_jobs():
            log.info("job index: %d jobs created before it indexed (once per Redis)", indexed)
        await self.workers.sync_channels()

    async def _start_http(self) -> None:
        service = self.service.on_store(self.store.for_requests())  # a bounded pool
        app = build_app(service, self.health, self.metrics_text, self.settings)
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
        self.ingress.close()
        self.kingtask.close()
        self.scheduler.close()
        self.workers.close()
        if self._kingtask_tcp is not None:
            self._kingtask_tcp.stop_accepting()
        await self.workers.stop_claiming()
        running = self.workers.process_count()
        log.info("drain 1/3: intake stopped; %d jobs running, queued jobs stay in Redis", running)
        await self._wait_idle_unless_forced(self.settings.drain_timeout_s)
        left = self.workers.process_count()
        writing = self.workers.running_count() - left
        log.info(
            "drain 2/3: %d jobs finished, %d still running%s", max(0, running - left), left,
            f"; {writing} results still being written" if writing else "",
        )  # fmt: skip
        killed = self.workers.terminate_all(DRAIN)
        await self._wait_handed_back()
        handed = self.workers.handed_back()
        log.info(
            "drain 3/3: %d jobs killed, %d of them handed back to their queues", killed, handed
        )

    async def _wait_handed_back(self) -> None:
        """Wait for stopped attempts to be written back; give up on Redis at a deadline or a
        second signal, so a stop with Redis away still ends."""
        await self._wait_idle_unless_forced(self.settings.kill_grace_s + HANDBACK_WAIT_S)
        if self.workers.running_count():
            self.workers.abandon_writes()
            await self.workers.wait_idle(None)
        stuck = self.workers.abandoned_writes()
        if stuck:
            log.error(
                "%d jobs could not be written back to Redis; their lease expiry hands them back",
                stuck,
            )
            self.failed = True

    async def _wait_idle_unless_forced(self, timeout_s: float) -> None:
        """Wait until no job runs, at most `timeout_s`, or until a second stop signal."""
        idle = asyncio.ensure_future(self.workers.wait_idle(timeout_s))
        force = asyncio.ensure_future(self.force_requested.wait())
        await asyncio.wait([idle, force], return_when=asyncio.FIRST_COMPLETED)
        for waiter in (idle, force):
            waiter.cancel()
        await asyncio.gather(idle, force, return_exceptions=True)

    async def close(self) -> None:
        """Idempotent teardown in reverse order of setup."""
        self.ingress.close()
        self.kingtask.close()
        self._closing.set()
        self.workers.refresh.set()
        loops, self._loops = self._loops, []
        await cancel_and_wait(loops)
        self.workers.close()
        self.workers.terminate_all(DRAIN)
        await self._wait_handed_back()
        self.workers.cancel_tasks()
        if self._kingtask_tcp is not None:
            kingtask_tcp, self._kingtask_tcp = self._kingtask_tcp, None
            await kingtask_tcp.close()
        if self._web is not None:
            web_runner, self._web = self._web, None
            await web_runner.cleanup()
        await self.workers.close_http()
        await self.liveness.leave()

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
        return self.workers.running_count()

    def health(self) -> dict[str, Any]:
        """`/healthz`: `ok` is False (503) when Redis answered no heartbeat for a while."""
        silent_s = self.liveness.redis_silent_s()
        reachable = silent_s is None
        return {
            "ok": reachable,
            "runner": self.runner_id,
            "draining": self.draining,
            "running": self.running_count(),
            "redis": "ok" if reachable else "unreachable",
            **({} if silent_s is None else {"redis_unreachable_s": round(silent_s, 1)}),
        }

    async def metrics_text(self) -> bytes:
        """`GET /metrics`: this runner's series and the queue counts read from Redis now."""
        running = self.workers.running_counts()
        return await self.metrics.exposition(self.store, running=running, draining=self.draining)

    async def _reaper_loop(self) -> None:
        while not self._closing.is_set():
            await asyncio.sleep(REAP_INTERVAL_S)
            reaped = reap_strays()
            if reaped:
                log.info(
                    "reaped %d exited processes that had left their job's process group", reaped
                )


def _service_settings(settings: Settings, runner_id: str) -> ServiceSettings:
    return ServiceSettings(
        runner_id=runner_id,
        default_channel=settings.channel_default,
        concurrent=settings.concurrent,
        limits=settings.limits,
        result_ttl_s=settings.result_ttl_s,
        allow=settings.allow,
        shell=settings.shell,
        bin_path=settings.bin_path,
        restores_default_channels=True,
        default_channels=settings.default_channels,
    )


def _exec_policy(settings: Settings, runner_id: str) -> ExecPolicy:
    return ExecPolicy(
        runner_id=runner_id,
        shell=settings.shell,
        kill_grace_s=settings.kill_grace_s,
        default_timeout_s=settings.default_timeout_s,
        capture_bytes=settings.capture_bytes,
        result_ttl_s=settings.result_ttl_s,
        task_mode=settings.task_mode,
        bin_path=settings.bin_path,
        allow=settings.allow,
    )
