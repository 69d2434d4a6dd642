"""Exit records: one VM exit as a trace or a client describes it.

Only ``reason`` (the basic exit reason number, SDM Appendix C) is required. The other members
are what ``kvm_exit`` trace events and HAXM's logs carry; the engine writes them into the VMCS
exit-information fields at the exit (``info1`` is the exit qualification, ``info2`` is
``IDT_VECTORING_INFO_FIELD`` on VMX hosts in Linux's ``vmx_get_exit_info``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ExitBatch", "ExitRecord"]


@dataclass(slots=True)
class ExitRecord:
    """One VM exit. Integers are unsigned and fit 64 bits; ``timestamp`` is seconds."""

    reason: int
    rip: int = 0
    qualification: int = 0
    info2: int = 0
    intr_info: int = 0
    error_code: int = 0
    guest_physical_address: int = 0
    instruction_len: int = 0
    timestamp: float | None = None
    vcpu: int = 0


COLUMNS = (
    "reason", "rip", "qualification", "info2", "intr_info", "error_code",
    "guest_physical_address", "instruction_len",
)  # fmt: skip
"""The integer columns of a batch, in ExitRecord order (timestamps are kept apart)."""


@dataclass(slots=True)
class ExitBatch:
    """Exits as packed columns: ``reason`` defines the length; any other column is either empty
    (all zero) or exactly as long. This is the wire shape (one message per batch, not per exit)."""

    reason: list[int]
    rip: list[int] = field(default_factory=list)
    qualification: list[int] = field(default_factory=list)
    info2: list[int] = field(default_factory=list)
    intr_info: list[int] = field(default_factory=list)
    error_code: list[int] = field(default_factory=list)
    guest_physical_address: list[int] = field(default_factory=list)
    instruction_len: list[int] = field(default_factory=list)
    timestamp: list[float] = field(default_factory=list)
    sequence: int = 0

    def __len__(self) -> int:
        return len(self.reason)

    @classmethod
    def from_records(cls, records: Iterable[ExitRecord], sequence: int = 0) -> ExitBatch:
        """Columns from records (every column filled)."""
        batch = cls([], sequence=sequence)
        columns = [getattr(batch, name) for name in COLUMNS]
        stamps = batch.timestamp
        for record in records:
            for column, name in zip(columns, COLUMNS, strict=True):
                column.append(getattr(record, name))
            stamps.append(record.timestamp if record.timestamp is not None else 0.0)
        return batch

    def records(self) -> list[ExitRecord]:
        """The batch as records (empty columns read as zero)."""
        n = len(self.reason)
        cols = [getattr(self, name) or [0] * n for name in COLUMNS]
        stamps: list[float | None] = list(self.timestamp) if self.timestamp else [None] * n
        rows = zip(*cols, stamps, strict=True)
        return [
            ExitRecord(r, a, b, c, d, e, f, g, timestamp=t) for r, a, b, c, d, e, f, g, t in rows
        ]
