"""A least-recently-used function cache bounded in bytes, not in entries.

`functools.lru_cache(maxsize=N)` bounds the number of entries whatever their size: 4,096
command lines of 64 KiB each held half a gigabyte. `bytes_lru_cache(max_bytes)` counts what
each entry holds (its key and its value, with the objects inside them) and evicts the least
recently used entries to stay within `max_bytes`; an entry over `max_bytes // 16` is never
kept. Thread-safe: the function may run in threads (its calls are not serialised, only the
bookkeeping is). Exceptions are not cached.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

ENTRY_OVERHEAD_BYTES = 120  # the ordered dict's node and hash slot of one entry, roughly
LARGEST_ENTRY_SHARE = 16  # an entry may take at most 1/16 of the budget


def deep_size(obj: object) -> int:
    """Bytes an object holds with the items of its tuples, lists, sets and dicts (strings,
    bytes and numbers count as themselves): what keeping it in a cache keeps alive."""
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple | list | set | frozenset):
        size += sum(deep_size(item) for item in obj)
    elif isinstance(obj, dict):
        size += sum(deep_size(k) + deep_size(v) for k, v in obj.items())
    return size


@dataclass(frozen=True, slots=True)
class CacheInfo:
    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int


class BytesLRU(Generic[K, V]):
    """The cache itself: `get`, `put`, `clear`, `info`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[V, int] | None:
        """(value, its size in bytes), or None if the key is not cached."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return found

    def put(self, key: K, value: V) -> None:
        size = deep_size(key) + deep_size(value) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes // LARGEST_ENTRY_SHARE:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(
                self._hits, self._misses, len(self._items), self._bytes, self.max_bytes
            )


def bytes_lru_cache(max_bytes: int) -> Callable[[Callable[[K], V]], BytesCached[K, V]]:
    """Decorate a one-argument function with a `BytesLRU` of `max_bytes`."""

    def decorate(func: Callable[[K], V]) -> BytesCached[K, V]:
        return BytesCached(func, BytesLRU(max_bytes))

    return decorate


class BytesCached(Generic[K, V]):
    """A function with its cache: call it as the function; `cache_info()`, `cache_clear()`."""

    def __init__(self, func: Callable[[K], V], cache: BytesLRU[K, V]) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self._cache = cache

    def __call__(self, key: K) -> V:
        found = self._cache.get(key)
        if found is not None:
            return found[0]
        value = self._func(key)
        self._cache.put(key, value)
        return value

    def cache_info(self) -> CacheInfo:
        return self._cache.info()

    def cache_clear(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return f"<bytes_lru_cache of {self._func!r}>"
