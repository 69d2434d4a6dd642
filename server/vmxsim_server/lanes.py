"""Fair hand-off of streams' work to worker threads (issue 15.3): one lane per stream, served
round robin.

A stream submits its jobs (a batch to run, an answer to build) to its ``Lane``; a lane's jobs
run one at a time, in the order submitted, and a job that raises drops the jobs queued behind
it and every job submitted to the lane after it (a stream's later batches never run after an
earlier one failed, even one read after the failure and before the stream saw it).
``Lanes`` serves the lanes that have work round robin, one job per lane per turn, on at most
``workers`` threads: a stream with several batches queued waits its turn like any other, so
none starves and none runs ahead.

No asyncio round trip per job: ``submit`` appends under a lock; the workers are drains on the
event loop's default executor that run while any lane has work (under load they never stop,
so no executor hand-off at all), and finished jobs go back to the event loop in bunches (one
``call_soon_threadsafe`` wakes it for every result finished since its last wake-up).

A lane closed by its stream (ended or cancelled) drops what it has queued; a job already
running finishes and its result is discarded, as ``asyncio.to_thread`` would. ``in_order`` is
how a stream uses its lane: it reads up to ``READ_AHEAD`` requests ahead of the answer it
sends, each queued as a job, and sends the answers in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["BATCH_WORKERS", "READ_AHEAD", "Lane", "Lanes", "in_order"]

T = TypeVar("T")

BATCH_WORKERS = 2
"""Worker threads for streams' jobs. The engine holds the GIL for most of a batch, so threads
beyond the cores only queue on it (the executor's default was 6 on 2 cores); on the 2-core
development machine 1 and 2 workers measured the same within noise at 64 streams
(bench_fairness.py), and 2 leave a batch's GIL-free numpy parts room to overlap another's."""


READ_AHEAD = 4
"""Requests a stream reads ahead of the one it answers (its batches queued on its lane); past
that it reads no more and gRPC's flow control holds the client back."""

_DROPPED = object()
"""The outcome of a job dropped without running (its lane closed, or a job before it failed)."""


@dataclass(eq=False)
class _Job(Generic[T]):
    call: Callable[[], T]
    future: asyncio.Future[T]


@dataclass(eq=False)  # a lane is itself: the round robin finds it by identity
class Lane:
    """One stream's queue of jobs (make it with ``Lanes.lane``)."""

    lanes: Lanes
    jobs: deque[_Job[Any]] = field(default_factory=deque)
    """Submitted, not yet started, in order."""
    ready: bool = False
    """In the round robin: it has jobs and none of its jobs is running."""
    running: _Job[Any] | None = None
    closed: bool = False
    failed: bool = False
    """A job of this lane raised: the jobs submitted after it are dropped without running."""

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``call`` behind this lane's other jobs (from the event loop); its result."""
        return self.lanes._submit(self, call)

    def close(self) -> None:
        """The stream ended: drop the jobs not yet started (their futures are cancelled)."""
        self.lanes._close(self)


class Lanes:
    """The round robin over streams' lanes and its worker threads, for one event loop."""

    def __init__(self, workers: int = BATCH_WORKERS) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._ready: deque[Lane] = deque()
        self._draining = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished: list[tuple[_Job[Any], object, Any]] = []
        self._wake_pending = False

    def lane(self) -> Lane:
        """A new stream's lane."""
        return Lane(self)

    def _submit(self, lane: Lane, call: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("one Lanes serves one event loop")
        job = _Job(call, loop.create_future())
        with self._lock:
            if lane.closed:
                raise RuntimeError("this lane is closed")
            if lane.failed:
                job.future.cancel()
                return job.future
            lane.jobs.append(job)
            if lane.running is None and not lane.ready:
                lane.ready = True
                self._ready.append(lane)
            start = bool(self._ready) and self._draining < self.workers
            if start:
                self._draining += 1
        if start:
            loop.run_in_executor(None, self._drain)
        return job.future

    def _close(self, lane: Lane) -> None:
        with self._lock:
            lane.closed = True
            dropped = list(lane.jobs)  # and the running one's result will be discarded
            if lane.running is not None:
                dropped.append(lane.running)
            lane.jobs.clear()
            if lane.ready:
                lane.ready = False
                self._ready.remove(lane)
        for job in dropped:
            job.future.cancel()

    def _drain(self) -> None:
        """A worker: run the ready lanes' next jobs round robin until no lane is ready."""
        while True:
            with self._lock:
                if not self._ready:
                    self._draining -= 1
                    return
                lane = self._ready.popleft()
                job = lane.jobs.popleft()
                lane.ready, lane.running = False, job
            outcome: object = None
            result: Any = None
            try:
                result = job.call()
            except BaseException as exc:  # to the stream, as concurrent.futures does
                outcome = exc
            with self._lock:
                lane.running = None
                self._finished.append((job, outcome, result))
                if outcome is not None:  # the jobs behind a failed one do not run
                    lane.failed = True
                    self._finished.extend((later, _DROPPED, None) for later in lane.jobs)
                    lane.jobs.clear()
                if lane.jobs and not lane.closed:
                    lane.ready = True
                    self._ready.append(lane)
                wake = not self._wake_pending
                self._wake_pending = True
            if wake:
                self._wake()

    def _wake(self) -> None:
        assert self._loop is not None
        with suppress(RuntimeError):  # the loop is closed: nobody waits for these results
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the event loop: settle the futures of every job finished since the last call."""
        with self._lock:
            finished, self._finished = self._finished, []
            self._wake_pending = False
        for job, outcome, result in finished:
            future = job.future
            if future.done():
                continue  # its stream stopped waiting
            if outcome is _DROPPED:
                future.cancel()
            elif isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(result)


async def in_order(lanes: Lanes, jobs: AsyncIterator[Callable[[], T]]) -> AsyncGenerator[T]:
    """Run a stream's jobs on a lane of its own and yield their results in order, with at
    most ``READ_AHEAD`` jobs taken from ``jobs`` and not yet answered (the next ones are read
    while earlier ones run). An error of ``jobs`` itself (a bad request) is raised once the
    results before it are yielded. Use with ``aclosing``: the lane and the reading end with
    the generator."""
    lane = lanes.lane()
    slots = asyncio.Semaphore(READ_AHEAD)
    queued: asyncio.Queue[asyncio.Future[T] | None] = asyncio.Queue()

    async def read() -> None:
        iterator = aiter(jobs)
        while True:
            await slots.acquire()
            try:
                job = await anext(iterator)
            except StopAsyncIteration:
                queued.put_nowait(None)
                return
            except Exception as exc:
                if not lane.closed:
                    failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
                    failed.set_exception(exc)
                    queued.put_nowait(failed)
                return
            if lane.closed:  # a cancellation lost in asyncio.wait_for (Python 3.11)
                return
            queued.put_nowait(lane.submit(job))

    reader = asyncio.create_task(read())
    try:
        while (future := await queued.get()) is not None:
            result = await future
            slots.release()
            yield result
    finally:
        lane.close()
        reader.cancel()
