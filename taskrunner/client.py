"""The Python client: push jobs, read and wait for their results, cancel them.

`Client` is asyncio; `BlockingClient` offers the same methods to plain (non-async) code. Both talk
to Redis directly through the service core the runner and the CLI use: no HTTP server needed.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from msgspec import UnsetType

from taskrunner.admission import accepted_id
from taskrunner.errors import StoreRefusing, StoreUnavailable
from taskrunner.models import JobRecord, JobState
from taskrunner.service import Service, ServiceSettings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_WAIT_S = 60.0

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """A job as stored: its state and, once it ran, exit code, output and times (unix seconds).

    `record` is the whole stored record (`models.JobRecord`; `record.to_view()` is what the
    native API returns for the job); the fields here are its values with plain defaults for
    those not set yet (no exit code, no output)."""

    id: str
    channel: str
    task: str
    args: tuple[str, ...] | None
    state: JobState
    final: bool  # ended for good: succeeded, failed, cancelled or dead
    attempt: int
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    error: str | None
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    duration: float | None
    record: JobRecord = field(repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED

    @classmethod
    def from_record(cls, record: JobRecord) -> JobResult:
        """A result from a job's stored record."""
        args = _given(record.args)
        return cls(
            id=record.id,
            channel=record.channel,
            task=record.task,
            args=None if args is None else tuple(args),
            state=JobState(record.state),
            final=record.final,
            attempt=_given(record.attempt) or 0,
            exit_code=_given(record.exit_code),
            signal=_given(record.signal),
            stdout=_given(record.stdout) or "",
            stderr=_given(record.stderr) or "",
            error=_given(record.error),
            created_at=_given(record.created_at),
            started_at=_given(record.started_at),
            finished_at=_given(record.finished_at),
            duration=_given(record.duration),
            record=record,
        )


def _given(value: T | UnsetType | None) -> T | None:
    """A record's value, None where it is not set."""
    return None if isinstance(value, UnsetType) else value


class Client:
    """Asyncio client on the runners' Redis: `async with Client(url) as client: ...`.

    One connection pool per client; close it with `aclose()` (or the `async with` block).
    Errors derive from TaskRunnerError: InvalidJob / InvalidChannel for bad input, DuplicateJob
    when a push is refused, JobNotFound for an unknown id, StoreUnavailable when Redis is down.
    """

    def __init__(
        self, redis_url: str = DEFAULT_REDIS_URL, *, default_channel: str = "default"
    ) -> None:
        self._service = Service.from_url(
            redis_url, ServiceSettings(runner_id="client", default_channel=default_channel)
        )
        self._closed = False

    async def __aenter__(self) -> Self:
        try:
            await self.ping()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._service.close()

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        async with self._redis():
            await self._service.ping()

    async def push(
        self,
        task: str,
        *,
        channel: str | None = None,
        args: Sequence[str] | None = None,
        id: str | None = None,
        run_at: float | None = None,
        delay: float | None = None,
        retries: int | None = None,
        retry_intervals: Sequence[float] | str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # the job's field, not this call's
        dedup_key: str | None = None,
        note: str | None = None,
    ) -> str:
        """Queue a job and return its id. The keywords are the job fields of an ingress message.

        `task` is the command line (or, with `args`, the program and its exact argv). `run_at`
        (unix seconds) or `delay` (seconds) schedule it; `retry_intervals` is a list of seconds
        or "60 600 3600"; `timeout` is in seconds; `note` is free text kept with the job
        (at most 1,000 characters). An `id` that names a job already (a retried
        push) creates nothing and returns that id: retry with the same `id` and the job runs
        once. Raises DuplicateJob when a live job has the same dedup key in a distinct channel,
        OutcomeUnknown (with `job_id`) when Redis did not answer within 2 s."""
        fields: dict[str, Any] = {
            "task": task,
            "channel": channel,
            "args": _as_list(args),
            "id": id,
            "run_at": run_at,
            "delay": delay,
            "retries": retries,
            "retry_intervals": _as_list(retry_intervals),
            "timeout": timeout,
            "dedup_key": dedup_key,
            "note": note,
        }
        async with self._redis():
            admission = await self._service.submit(
                {name: value for name, value in fields.items() if value is not None},
                source="client",
            )
        return accepted_id(admission)

    async def get(self, id: str) -> JobResult:
        """The job as it is now; JobNotFound if it never existed or its record expired."""
        async with self._redis():
            return JobResult.from_record(await self._service.get_job(id))

    async def wait(self, id: str, *, timeout_s: float = DEFAULT_WAIT_S) -> JobResult:
        """The final job, returned as soon as it ends (woken by Redis pub/sub, no polling).

        Raises TimeoutError if it has not ended within `timeout_s`, JobNotFound if unknown."""
        async with self._redis():
            record = await self._service.wait_job(id, timeout_s=timeout_s)
        result = JobResult.from_record(record)
        if not result.final:
            raise TimeoutError(f"job {id} is still {result.state} after {timeout_s} s")
        return result

    async def cancel(self, id: str) -> str:
        """Cancel a queued, scheduled or running job; returns its state after the call:
        'cancelled', 'running' (its runner was told to kill it), or the state it had already
        ended in. JobNotFound if unknown."""
        async with self._redis():
            return await self._service.cancel(id)

    @asynccontextmanager
    async def _redis(self) -> AsyncIterator[None]:
        if self._closed:
            raise RuntimeError("this taskrunner Client is closed")
        try:
            yield
        except StoreUnavailable as exc:
            if exc.detail is None:  # Service.ping's: it names the address already
                raise
            url = self._service.url_for_logs
            if isinstance(exc, StoreRefusing):
                raise StoreUnavailable(f"Redis at {url} cannot serve now: {exc}") from exc.__cause__
            raise StoreUnavailable(f"cannot reach Redis at {url}: {exc.detail}") from exc.__cause__


def _as_list(value: Sequence[Any] | str | None) -> list[Any] | str | None:
    """Sequences become JSON lists; a string is left for the job parser to read."""
    return value if value is None or isinstance(value, str) else list(value)


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[BlockingClient, P], T]:
    """A BlockingClient method that runs `method` of its Client on the private loop."""

    @functools.wraps(method)
    def call(self: BlockingClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(lambda client: method(client, *args, **kwargs))

    call.__qualname__ = f"BlockingClient.{method.__name__}"
    return call


class BlockingClient:
    """`Client` for plain (non-async) code: the same methods, blocking.

    It runs one private event loop in a daemon thread, started on first use, so the connection
    pool is reused between calls. Safe to share between threads. Close it with `close()` or a
    `with` block."""

    def __init__(
        self, redis_url: str = DEFAULT_REDIS_URL, *, default_channel: str = "default"
    ) -> None:
        self._redis_url = redis_url
        self._default_channel = default_channel
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._stop_loop: weakref.finalize[Any, Any] | None = None

    def __enter__(self) -> Self:
        try:
            self.ping()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    ping = _blocking(Client.ping)
    push = _blocking(Client.push)
    get = _blocking(Client.get)
    wait = _blocking(Client.wait)
    cancel = _blocking(Client.cancel)

    def close(self) -> None:
        """Close the connection pool and stop the loop's thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, client = self._loop, self._thread, self._client
        if loop is None or thread is None or self._stop_loop is None:
            return
        try:
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result()
        finally:
            self._stop_loop()
            thread.join()

    def _call(self, work: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        loop, client = self._started()
        future = asyncio.run_coroutine_threadsafe(work(client), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C): do not leave the call running
            raise

    def _started(self) -> tuple[asyncio.AbstractEventLoop, Client]:
        with self._lock:
            if self._closed:
                raise RuntimeError("this taskrunner BlockingClient is closed")
            if self._loop is None or self._client is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_loop, args=(loop,), name="taskrunner-client", daemon=True
                )
                thread.start()
                # Stops the loop if the client is garbage-collected without close().
                self._stop_loop = weakref.finalize(self, loop.call_soon_threadsafe, loop.stop)
                self._stop_loop.atexit = False
                self._loop, self._thread = loop, thread
                self._client = asyncio.run_coroutine_threadsafe(self._new_client(), loop).result()
            return self._loop, self._client

    async def _new_client(self) -> Client:
        return Client(self._redis_url, default_channel=self._default_channel)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """A BlockingClient's thread: run the loop until stopped, then clean up and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
