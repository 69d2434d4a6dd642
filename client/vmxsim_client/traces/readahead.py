"""Work done by a thread ahead of its consumer: decompressed blocks (compression.py) and a
trace's batches (``ReadAhead``, ``vmxsim replay``).

The trace reader's C scan releases the interpreter lock over most lines (scan.py), so a reader
in a thread of its own reads on one core while the rest of the process (the gRPC stream, the
embedded server, and at start-up the server's imports) runs on the other. What the consumer
sees does not change: the same items in the same order, an exception of the producer raised
to the consumer after the items before it, and a consumer that stops early (or is closed)
stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["READ_AHEAD_BATCHES", "Ahead", "ReadAhead", "read_ahead"]

T = TypeVar("T")

READ_AHEAD_BATCHES = 8
"""Batches a replay's reader keeps ready ahead of the stream (8 x 16,384 exits: ~13 MB),
enough to cover the embedded server's start-up (~0.2 s, ~250,000 exits read meanwhile)."""


class _Failed:
    """What the producing thread hands over when its iterator raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class Ahead(Generic[T]):
    """``items``, produced by a daemon thread ``name`` up to ``depth`` items ahead of the
    consumer, from ``start()`` (or the first ``next()``). An exception of ``items`` is raised
    to the consumer after the items before it; ``close()`` (or the consumer's end) stops the
    thread."""

    def __init__(self, items: Iterator[T], depth: int, name: str) -> None:
        self._items = items
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, name=name, daemon=True)

    def start(self) -> None:
        if self._worker.ident is None:
            self._worker.start()

    def _hand(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._hand(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._hand(_Failed(exc))
            return
        self._hand(_END)

    def __iter__(self) -> Generator[T, None, None]:
        self.start()
        try:
            while (item := self._ready.get()) is not _END:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._worker.ident is not None:
            self._worker.join(timeout=1)  # a daemon: one blocked on a pipe does not hold exit up


def read_ahead(items: Iterator[T], depth: int, name: str) -> Generator[T, None, None]:
    """``Ahead(items, depth, name)`` as a generator: the thread starts with the first
    ``next()`` and stops when the generator is closed (or dropped)."""
    return iter(Ahead(items, depth, name))


class ReadAhead:
    """A trace reader whose ``batches(size)`` a thread reads from now on, ``depth`` batches
    ahead of the caller; every other attribute (counters, ``bytes_read``, ``source``) is the
    reader's. For a consumer that reads the batches once, at ``size``, and nothing else of the
    reader's exits (``vmxsim replay`` without ``--out`` of any trace but a HAXM log, whose
    recorded counters the per-exit tap takes from the reader as it reads). ``close()`` stops
    the thread."""

    def __init__(self, reader: Any, size: int, depth: int = READ_AHEAD_BATCHES) -> None:
        self.reader = reader
        self.size = size
        self._ahead: Ahead[Any] = Ahead(iter(reader.batches(size)), depth, "vmxsim-read-ahead")
        self._taken = False
        self._ahead.start()

    def batches(self, size: int) -> Iterator[Any]:
        """The batches the thread has been reading (once; ``size`` must be the one given)."""
        if size != self.size or self._taken:
            raise ValueError(f"a read-ahead reader gives its batches of {self.size:,} once")
        self._taken = True
        return iter(self._ahead)

    def close(self) -> None:
        """Stop the thread (the reader itself is closed by its owner)."""
        self._ahead.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)
