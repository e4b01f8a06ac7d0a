"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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


class OncePerIteration:
    """Calls `callback` once, soon after the current event-loop iteration, however often it
    was requested during it; at once when no loop runs in this thread. For work that is
    cheaper done in one go (one write for many lines)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._due_on: asyncio.AbstractEventLoop | None = None

    def request(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._callback()
            return
        if self._due_on is not loop:  # (a loop that closed before its turn came is replaced)
            self._due_on = loop
            loop.call_soon(self._run)

    def _run(self) -> None:
        self._due_on = None
        self._callback()


class Backoff:
    """The delays of one retry loop: `first_s`, doubling up to `max_s`, and `first_s` again
    once a try succeeds. `failing` tells the loop whether this failure is the first of an
    outage, so it logs once an outage, not at every retry."""

    def __init__(self, *, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failing = False
        self._delay_s = first_s

    def next_delay_s(self) -> float:
        """A try failed: how long to wait before the next one (the one after waits twice as
        long)."""
        delay_s, self._delay_s = self._delay_s, min(self._delay_s * 2, self.max_s)
        self.failing = True
        return delay_s

    async def wait(self) -> None:
        """A try failed: sleep before the next one."""
        await asyncio.sleep(self.next_delay_s())

    def reset(self) -> bool:
        """A try succeeded: the next failure waits `first_s` again. True when it ends an outage."""
        ended, self.failing, self._delay_s = self.failing, False, self.first_s
        return ended
