"""The observer hook: how metrics (or anything else) learn what the service did.

The registry calls an ``Observer`` once per batch, once per executed instruction and whenever
the number of VMs or vCPUs changes, never once per exit; the default does nothing. The metrics
module implements this protocol with pre-bound Prometheus children (DESIGN.md "Performance
facts"), so no Prometheus call ever sits in the emulator's inner loop.
"""

from __future__ import annotations

from typing import Protocol

from .vmx.engine import BatchStats
from .vmx.vcpu import Outcome

__all__ = ["NULL_OBSERVER", "NullObserver", "Observer"]


class Observer(Protocol):
    """Receives the service's events; implementations must be cheap and thread-safe."""

    def on_batch(self, profile: str, mode: str, stats: BatchStats) -> None:
        """A batch of exits ran on a vCPU with ``profile`` in latency ``mode``."""

    def on_instruction(self, op: str, outcome: Outcome) -> None:
        """One instruction or pseudo-op (``op`` as in ``InstructionResult.op``) executed."""

    def on_counts_changed(self, vms: int, vcpus: int) -> None:
        """The number of VMs or vCPUs on the server changed."""


class NullObserver:
    """The default observer: ignores everything."""

    def on_batch(self, profile: str, mode: str, stats: BatchStats) -> None:
        """Ignore a batch."""

    def on_instruction(self, op: str, outcome: Outcome) -> None:
        """Ignore an instruction."""

    def on_counts_changed(self, vms: int, vcpus: int) -> None:
        """Ignore a count change."""


NULL_OBSERVER: Observer = NullObserver()
