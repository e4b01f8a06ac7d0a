"""A job's output: both pipes drained without blocking, only their first and last bytes kept.

Both pipes are read with ``loop.add_reader`` from the moment the process starts, and keep being
drained after the cap; only the first and last ``capture_bytes // 2`` bytes are kept (the result
says when the middle was dropped).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import IO

logger = logging.getLogger("taskrunner.executor")

_READ_SIZE = 65536


class OutputCapture:
    """Drains one pipe without blocking; keeps its first and last bytes up to a cap."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, file: IO[bytes], cap_bytes: int) -> None:
        self._loop = loop
        self._file = file
        self._fd = file.fileno()
        self._head = bytearray()
        self._tail = bytearray()
        self._head_cap = max(cap_bytes, 0) // 2
        self._tail_cap = max(cap_bytes, 0) - self._head_cap
        self._seen = 0
        self.eof: asyncio.Future[None] = loop.create_future()

    def open(self) -> None:
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        if self._file.closed:
            return
        self._loop.remove_reader(self._fd)
        self._file.close()
        if not self.eof.done():
            self.eof.set_result(None)

    @property
    def truncated(self) -> bool:
        return self._seen > self._head_cap + self._tail_cap

    def value(self) -> bytes:
        return bytes(self._head + self._tail)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.warning("reading output pipe failed: %s", exc)
            chunk = b""
        if chunk:
            self._keep(chunk)
        else:
            self.close()

    def _keep(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        tail = self._tail
        tail += chunk
        excess = len(tail) - self._tail_cap
        if excess > 0:
            del tail[:excess]
