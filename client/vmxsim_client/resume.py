"""The request side of a replay that can survive its server: ``ReplayFeed``.

The server acknowledges a batch only once it is durable (with ``--state-dir``), and returns a
resume token with each acknowledgement. The feed reads the exit source once and keeps every
batch sent but not yet acknowledged in a bounded buffer (``max_unacked`` batches: reading
waits while it is full). When a stream is lost, the next attempt starts with the token and
sends the buffer again, then carries on reading: no exit is read twice or skipped, so the final
counts equal an uninterrupted run's.

Before the first acknowledgement there is no token: nothing is durable, and a replay on its own
temporary vCPU simply starts over with the buffered batches (nothing was acknowledged, so
nothing was dropped from the buffer). A replay on an existing vCPU cannot start over (the lost
server may have run some of its batches), nor can one whose server gave no token.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator

from vmxsim.v1 import vmxsim_pb2 as pb

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_MAX_UNACKED", "ReplayFeed"]

DEFAULT_BATCH_SIZE = 16384
"""Exits per streamed batch of drive and replay: large enough to amortise a message (each costs
both sides ~1-2 ms of gRPC and Python however many exits it holds: a 1M-exit replay took 1.58 s
in batches of 4,096 and 1.39 s in batches of 16,384, docs/performance.md), small enough for
progress and resume (~1.2 MB of packed columns). ``vmxsim load`` keeps 4,096
(``load.runner.LOAD_BATCH_SIZE``): its figure is a batch's round trip. Here, not in client.py,
so that the CLI's parsers get it without importing grpc (client.py re-exports it)."""

DEFAULT_MAX_UNACKED = 16
"""Batches in flight: deep enough to keep the server busy, small enough to hold in memory
(16 x 16,384 exits is about 20 MB of packed columns at most)."""


class ReplayFeed:
    """The ReplayRequest messages of a replay, over as many streams (attempts) as it takes."""

    def __init__(
        self,
        start: pb.ReplayStart,
        batches: Iterator[pb.ExitBatch],
        end: Callable[[], pb.ReplayEnd],
        max_unacked: int = DEFAULT_MAX_UNACKED,
    ) -> None:
        if max_unacked < 1:
            raise ValueError("max_unacked must be at least 1")
        self.start = start
        self.token = ""
        self.acks = 0
        self._batches = batches
        self._end = end
        self._max_unacked = max_unacked
        self._pending: deque[pb.ExitBatch] = deque()
        self._exhausted = False
        self._attempt = 0
        self._changed = threading.Condition()

    def can_resume(self) -> bool:
        """Whether a lost stream can be continued (with the token) or started over exactly."""
        if self.token:
            return True
        return not self.acks and not self.start.vcpu_id

    def prime(self) -> None:
        """Read the first batch now, before any stream: a source that fails at once (a damaged
        file, a strict reader's first error) raises here, with no call started to cancel (a call
        cancelled while the server is still starting its handler made grpc print a traceback)."""
        with self._changed:
            if not self._pending and not self._exhausted:
                self._read_one()

    def next_attempt(self) -> None:
        """Stop feeding the previous stream; the next ``requests()`` resumes or starts over."""
        with self._changed:
            self._attempt += 1
            self._changed.notify_all()

    def acknowledged(self, sequence: int, token: str) -> None:
        """The server made every batch up to ``sequence`` durable (or at least handled it)."""
        with self._changed:
            self.acks += 1
            self.token = token or self.token
            while self._pending and self._pending[0].sequence <= sequence:
                self._pending.popleft()
            self._changed.notify_all()

    def requests(self) -> Iterator[pb.ReplayRequest]:
        """One attempt's messages: the start (or the resume), the unacknowledged batches, then
        new batches as the buffer has room, then the end."""
        with self._changed:
            attempt = self._attempt
            start = pb.ReplayStart(resume_token=self.token) if self.token else self.start
        yield pb.ReplayRequest(start=start)
        sent = -1  # the sequence of the last batch sent on this attempt
        while True:
            with self._changed:
                batch = self._next(attempt, sent)
            if batch is None:
                return
            if isinstance(batch, pb.ReplayEnd):
                yield pb.ReplayRequest(end=batch)
                return
            sent = batch.sequence
            yield pb.ReplayRequest(batch=batch)

    def _next(self, attempt: int, sent: int) -> pb.ExitBatch | pb.ReplayEnd | None:
        """The next message of an attempt (caller holds the lock); None = the attempt is over."""
        while attempt == self._attempt:
            for batch in self._pending:
                if batch.sequence > sent:
                    return batch
            if self._exhausted:
                return self._end()
            if len(self._pending) >= self._max_unacked:
                self._changed.wait(0.5)
                continue
            self._read_one()
        return None

    def _read_one(self) -> None:
        """The source's next batch into the buffer, or the source is exhausted (lock held)."""
        read = next(self._batches, None)
        if read is None:
            self._exhausted = True
        else:
            self._pending.append(read)
