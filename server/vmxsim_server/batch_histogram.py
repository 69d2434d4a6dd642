"""A Prometheus histogram fed a whole batch at a time: ``{value: count}`` tallies, not samples.

prometheus_client's ``Histogram.observe`` takes one sample (~525 ns each, DESIGN.md
"Performance facts"), and a batch of 4,096 exits would cost 4,096 calls per histogram. The
engine already returns each batch's distribution as a ``collections.Counter`` of value ->
number of exits, so ``BatchHistogram`` adds it in one step per distinct value (a handful per
batch) and exposes classic cumulative buckets like any other histogram.

Invariants: bucket bounds are sorted and end with ``+Inf``; a value lands in the first bucket
whose upper bound is >= the value (Prometheus' ``le``); children are created once per label
set and are thread-safe.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["BatchHistogram", "BatchHistogramChild"]


class BatchHistogramChild:
    """The buckets of one label set."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self._lock = threading.Lock()
        self._counts = [0] * len(bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._index: dict[float, int] = {}  # value -> bucket; a batch repeats few values

    def add(self, tally: Mapping[float, int] | Mapping[int, int]) -> None:
        """Add ``count`` observations of each ``value`` in ``tally`` (one batch's distribution)."""
        index = self._index
        with self._lock:
            for value, count in tally.items():
                i = index.get(value)
                if i is None:
                    i = index[value] = bisect.bisect_left(self._bounds, value)
                self._counts[i] += count
                self._sum += value * count

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (aligned with the bounds) and the sum of observed values."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for count in counts:
            running += count
            cumulative.append(running)
        return cumulative, total


class BatchHistogram(Collector):
    """A labelled histogram whose children take ``{value: count}`` tallies; register-once."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds: tuple[float, ...] = tuple(bounds)
        self._le = ["+Inf" if b == math.inf else repr(b) for b in self.bounds]
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], BatchHistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> BatchHistogramChild:
        """The child of one label set (created on first use); bind it once, call ``add`` often."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = BatchHistogramChild(self.bounds)
            return child

    def describe(self) -> Iterable[Metric]:
        """The metric family without samples, for the registry's duplicate-name check."""
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        """One histogram family with every child's cumulative buckets, sum and count."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            cumulative, total = child.snapshot()
            family.add_metric(list(values), list(zip(self._le, cumulative, strict=True)), total)
        return [family]
