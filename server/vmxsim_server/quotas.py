"""The registry's checks of limits.LIMITS: counts against their limits, what an Execute or a
snapshot would add to a VM's memory, and a snapshot's inflated size. Each raises
``LimitExceeded`` (or ``SnapshotTooLarge``) with ``limits.limit_error``'s message.

No gRPC here.
"""

from __future__ import annotations

from collections.abc import Iterable

from .limits import BY_NAME, limit_error
from .vmx import snapshot as snapshots
from .vmx.exceptions import LimitExceeded, SnapshotTooLarge
from .vmx.memory import PhysicalMemory

__all__ = ["Quotas"]


class Quotas:
    """The limits of one server, by name (limits.LIMITS; a missing one has its default)."""

    def __init__(self, limits: dict[str, int | float]) -> None:
        unknown = set(limits) - set(BY_NAME)
        if unknown:
            raise TypeError(f"unknown limits {sorted(unknown)}")
        self.limits = {name: limits.get(name, limit.default) for name, limit in BY_NAME.items()}

    def check(self, name: str, value: int, what: str) -> None:
        """``LimitExceeded`` when ``value`` is above the limit ``name``."""
        limit = self.limits[name]
        if value > limit:
            raise LimitExceeded(limit_error(name, limit, what), quota=name, limit=limit)

    def memory(
        self,
        memory: PhysicalMemory,
        where: str,
        regions: Iterable[int] = (),
        words: Iterable[int] = (),
        msrs: tuple[dict[int, int], Iterable[int], str] | None = None,
    ) -> None:
        """Adding VMCS regions and memory words (by address) to ``memory`` (of VM ``where``),
        and MSRs (by index) to a vCPU's ``(msrs, new indexes, vcpu id)``."""
        new = set(regions)
        if new:
            total = len(memory.regions().keys() | new)
            self.check("max_vmcs_regions", total, f"{where} would hold {total}")
        new = set(words)
        if new:
            total = len(memory.words().keys() | new)
            self.check("max_memory_words", total, f"{where} would hold {total}")
        if msrs is not None:
            held, more, vcpu_id = msrs
            new = set(more)
            if new:
                total = len(held.keys() | new)
                self.check("max_memory_words", total, f"{vcpu_id} would hold {total} MSRs")

    def load(self, data: bytes) -> snapshots.Snapshot:
        """Validated snapshot bytes, inflated within ``max_snapshot_bytes``."""
        limit = int(self.limits["max_snapshot_bytes"])
        try:
            return snapshots.load(data, limit)
        except SnapshotTooLarge as exc:
            raise SnapshotTooLarge(limit_error("max_snapshot_bytes", limit, str(exc))) from None

    def snapshot(self, saved: snapshots.Snapshot) -> None:
        """A snapshot's memory and MSRs against the per-VM limits."""
        regions, words, msrs = len(saved.regions), len(saved.words), len(saved.vcpu_state["msrs"])
        self.check("max_vmcs_regions", regions, f"the snapshot has {regions}")
        self.check("max_memory_words", words, f"the snapshot has {words}")
        self.check("max_memory_words", msrs, f"the snapshot has {msrs} MSRs")
