"""Polling instead of sleeping: wait for a condition with a deadline, and fail saying what was
awaited and what was last seen, rather than sleeping a fixed time and hoping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    predicate: Callable[[], object] | Callable[[], Awaitable[object]],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    message: str = "",
) -> None:
    """Poll `predicate` (sync or async) until it returns something truthy.

    Raises AssertionError naming `message` (or the predicate) after `timeout_s`. The predicate is
    evaluated at least once; exceptions it raises propagate.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(_timeout_message(predicate, timeout_s, message, result))
        await asyncio.sleep(interval_s)


def wait_until_sync(
    predicate: Callable[[], object],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    message: str = "",
) -> None:
    """The blocking twin of `wait_until`, for sync tests and fixtures (sync predicates only)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # no "never awaited" warning on top of the TypeError
            raise TypeError("wait_until_sync got an async predicate: use `await wait_until(...)`")
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(_timeout_message(predicate, timeout_s, message, result))
        time.sleep(interval_s)


def _timeout_message(predicate: object, timeout_s: float, message: str, last: object) -> str:
    what = message or getattr(predicate, "__qualname__", repr(predicate))
    return f"timed out after {timeout_s} s waiting for {what} (last result: {last!r})"
