"""`PassageCache`: tokenized passage pieces by key, bounded in bytes, least recently used out first.

`rag_core.contexts.ContextAssembler` keeps one for every prefix together (keys `(prefix, doc id)`),
so neither many prefixes nor a large knowledge base grow memory past the budget, and a full cache
drops only its oldest entries instead of starting over.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any, Iterable, Optional

import numpy as np

from .errors import RagInputError

DEFAULT_CACHE_BYTES = 256 * 2**20  # about 180,000 passages of 150 tokens (int64 ids + ENTRY_OVERHEAD each)
DEFAULT_CACHE_SIZE = None  # no cap on the number of cached passages beyond the byte budget


class PassageCache:
    """Passage pieces by key (`(prefix, doc id)`), bounded in bytes, least recently used evicted first.

    An entry costs its ids' `nbytes` (or, for a piece kept as a string, the string's size) plus
    `ENTRY_OVERHEAD`: the dict slot, the key and the bookkeeping tuple (about 256 bytes, measured
    with tracemalloc), the array header (112) and the piece tuple (56). Entries are added until
    `max_bytes` is reached; then the least recently used (read or written) go first. A piece
    larger than the whole budget is returned to its caller but not stored. `max_entries`, when
    set, also caps the number of entries. `max_bytes=0` turns caching off. Thread-safe.

    `generation` grows with every `clear()`. Reads and writes name the generation their caller
    started with; an older one reads nothing and stores nothing, so a call that began before a
    `clear()` (say, on an index since replaced) can neither see nor leave pieces in the new cache.

    Example:
        >>> cache = PassageCache(max_bytes=1 << 20)
        >>> generation = cache.generation
        >>> cache.put_many([((None, 3), (np.arange(5), None))], generation)
        >>> cache.get_many([(None, 3), (None, 4)], generation).keys()
        dict_keys([(None, 3)])
    """

    ENTRY_OVERHEAD = 424

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, max_entries: Optional[int] = DEFAULT_CACHE_SIZE):
        self._lock = threading.Lock()
        self._entries: "OrderedDict[Any, tuple[tuple, int]]" = OrderedDict()  # key -> (piece, its cost)
        self._max_bytes = _check_limit("cache_bytes", max_bytes)
        self._max_entries = None if max_entries is None else _check_limit("cache_size", max_entries)
        self.generation = 0
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    @classmethod
    def entry_bytes(cls, piece: tuple) -> int:
        """What one cached piece `(ids array or None, string or None)` counts against the budget."""
        ids, string = piece
        size = cls.ENTRY_OVERHEAD
        if ids is not None:
            size += int(ids.nbytes)
        if string is not None:
            size += sys.getsizeof(string)
        return size

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        with self._lock:
            self._max_bytes = _check_limit("cache_bytes", value)
            self._evict()

    @property
    def max_entries(self) -> Optional[int]:
        return self._max_entries

    @max_entries.setter
    def max_entries(self, value: Optional[int]) -> None:
        with self._lock:
            self._max_entries = None if value is None else _check_limit("cache_size", value)
            self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Iterable, generation: int) -> dict:
        """The cached pieces of `keys` (a dict holding the hits only); hits become the most recently used."""
        found = {}
        with self._lock:
            current = generation == self.generation
            for key in keys:
                entry = self._entries.get(key) if current else None
                if entry is None:
                    self.misses += 1
                else:
                    self._entries.move_to_end(key)
                    found[key] = entry[0]
                    self.hits += 1
        return found

    def put_many(self, items: Iterable[tuple], generation: int) -> None:
        """Store `(key, piece)` pairs (nothing when `generation` is no longer current), evicting as needed."""
        with self._lock:
            if generation != self.generation or self._max_bytes == 0:
                return
            for key, piece in items:
                ids = piece[0]
                if ids is not None and ids.base is not None:  # a view: keep the piece, not the array it came from
                    piece = (ids.copy(), piece[1])
                cost = self.entry_bytes(piece)
                old = self._entries.pop(key, None)
                if old is not None:
                    self.bytes -= old[1]
                if cost > self._max_bytes:
                    continue
                self._entries[key] = (piece, cost)
                self.bytes += cost
            self._evict()

    def _evict(self) -> None:
        while self._entries and (
            self.bytes > self._max_bytes or (self._max_entries is not None and len(self._entries) > self._max_entries)
        ):
            _, (_, cost) = self._entries.popitem(last=False)
            self.bytes -= cost
            self.evictions += 1

    def clear(self) -> int:
        """Drop every entry and start a new generation (returned); the counters keep counting."""
        with self._lock:
            self._entries = OrderedDict()
            self.bytes = 0
            self.generation += 1
            return self.generation

    def stats(self) -> dict:
        """hits, misses, evictions, entries, bytes, max_bytes, max_entries, generation (a consistent snapshot)."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._entries),
                "bytes": self.bytes,
                "max_bytes": self._max_bytes,
                "max_entries": self._max_entries,
                "generation": self.generation,
            }


def _check_limit(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise RagInputError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_CACHE_SIZE", "PassageCache"]
