"""Redis's errors sorted by what a caller does about them, and turned into taskrunner's own
(StoreUnavailable, StoreRefusing, StoreError) where a store operation returns to its caller:
nothing outside this package sees a Redis exception."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final, TypeVar

import redis.exceptions as redis_errors

from taskrunner.errors import StoreError, StoreRefusing, StoreUnavailable

# Errors that mean "Redis is not reachable right now": callers back off and try again.
CONNECTION_ERRORS: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
# No free connection in this process's pool (HTTP requests have a pool of their own): the
# request answers 503 at once rather than wait.
POOL_EXHAUSTED_ERRORS: Final = (redis_errors.MaxConnectionsError,)


class ServerBusyError(redis_errors.ResponseError):
    """BUSY: Redis runs a script or function longer than its busy-reply-threshold."""


class PersistenceError(redis_errors.ResponseError):
    """MISCONF: Redis refuses writes because it cannot write its snapshot to disk."""


# Replies of a Redis that is up but cannot serve now: out of memory (maxmemory, noeviction), a
# long script (BUSY), a failed snapshot (MISCONF), loading its data (LOADING), a replica since
# a failover (READONLY), a replica cut from its primary (MASTERDOWN). redis-py raises the first
# two as plain ResponseErrors: this package's connections parse them into the classes above.
SERVER_REFUSALS: Final = (
    redis_errors.OutOfMemoryError,
    ServerBusyError,
    PersistenceError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
)
# Everything that means "Redis unavailable": every loop logs once, backs off and retries; a
# result is retried until it lands; HTTP answers 503 with `unavailable_reason`.
UNAVAILABLE_ERRORS: Final = (*CONNECTION_ERRORS, *SERVER_REFUSALS)


def out_of_reach(exc: BaseException) -> bool:
    """Whether a heartbeat that failed with `exc` leaves the lease standing (the watchdog's
    silence fence hears of it): Redis could not serve us (down, refused, reset, timed out), or
    refuses every runner alike (out of memory, busy, loading, MISCONF), so nobody can be judged
    meanwhile (heartbeat.lua). Not a failure of this process (a pool with no free connection),
    nor a server only we may be talking to (READONLY or MASTERDOWN: a replica after a failover,
    while the others judge on the new primary)."""
    only_ours = (
        redis_errors.ReadOnlyError,
        redis_errors.ClusterDownError,
        redis_errors.TryAgainError,
    )
    if isinstance(exc, (*POOL_EXHAUSTED_ERRORS, *only_ours)):
        return False
    return isinstance(exc, UNAVAILABLE_ERRORS)


_REASONS: Final = (
    (redis_errors.OutOfMemoryError, "out of memory (maxmemory reached)"),
    (ServerBusyError, "busy (BUSY: a long script)"),
    (PersistenceError, "refusing writes (MISCONF: it cannot save its snapshot)"),
    (redis_errors.BusyLoadingError, "loading its data (LOADING)"),
    (redis_errors.ReadOnlyError, "read-only (READONLY: a replica, after a failover?)"),
    (redis_errors.ClusterDownError, "cut from its primary or cluster"),
    (POOL_EXHAUSTED_ERRORS, "busy with too many requests of this process"),
)


def unavailable_reason(exc: BaseException) -> str:
    """Why Redis is unavailable, for a log line or an HTTP 503 ("out of memory (maxmemory
    reached): <Redis's words>"): `exc` is one of UNAVAILABLE_ERRORS."""
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return f"{reason}: {exc}"
    return f"out of reach ({exc.__class__.__name__})"  # its words may name the address


def translated(exc: Exception) -> StoreError:
    """taskrunner's error for a Redis one: StoreRefusing for a server that answers but cannot
    serve now, StoreUnavailable for one out of reach, StoreError for any other reply."""
    if isinstance(exc, SERVER_REFUSALS):
        reason = unavailable_reason(exc)
        return StoreRefusing(reason, detail=reason, out_of_reach=out_of_reach(exc))
    if isinstance(exc, CONNECTION_ERRORS):
        return StoreUnavailable(
            unavailable_reason(exc),
            detail=str(exc),
            out_of_reach=out_of_reach(exc),
            pool_exhausted=isinstance(exc, POOL_EXHAUSTED_ERRORS),
        )
    return StoreError(str(exc))


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """Raise a Redis error of the block as taskrunner's own (chained to it)."""
    try:
        yield
    except (redis_errors.RedisError, OSError) as exc:
        raise translated(exc) from exc


R = TypeVar("R")
C = TypeVar("C", bound=type)


def _translating_coroutine(
    method: Callable[..., Coroutine[Any, Any, R]],
) -> Callable[..., Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> R:
        with translating():
            return await method(*args, **kwargs)

    return wrapper


def translates_errors(cls: C) -> C:
    """Class decorator: every public coroutine method of `cls` (its bases' included) raises
    taskrunner's errors instead of Redis's. Inside the store, private helpers still see Redis's
    own (NOSCRIPT handling, the coalesced enqueues' futures)."""
    for name in dir(cls):
        method = inspect.getattr_static(cls, name)
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _translating_coroutine(method))
    return cls


def no_script(reply: Any) -> bool:
    """Whether a pipelined call's reply says the script was not loaded (it did not run)."""
    return isinstance(reply, redis_errors.NoScriptError) or (
        isinstance(reply, redis_errors.ResponseError) and str(reply).startswith("NOSCRIPT")
    )
