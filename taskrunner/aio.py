"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait for `event` up to `timeout_s`; True if it was set.

    Uses `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11, `wait_for` can swallow a
    cancellation that arrives as the event is set, and a loop that lost its cancel never stops.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


CANCEL_AGAIN_S = 0.1


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until every one has ended.

    A cancellation can still be swallowed inside a library (redis-py connects under a timeout,
    and on Python 3.11 a timeout that fires with the cancel eats it): a task that is not done
    a moment later is cancelled again, so a stop never hangs on one lost cancel."""
    for task in tasks:
        task.cancel()
    pending = [task for task in tasks if not task.done()]
    while pending:
        _, still = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)
        pending = list(still)
        for task in pending:
            task.cancel()
