"""Exit records: one VM exit as a trace or a client describes it.

Only ``reason`` (the basic exit reason number, SDM Appendix C) is required. The other members
are what ``kvm_exit`` trace events and HAXM's logs carry; the engine writes them into the VMCS
exit-information fields at the exit (``info1`` is the exit qualification, ``info2`` is
``IDT_VECTORING_INFO_FIELD`` on VMX hosts in Linux's ``vmx_get_exit_info``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    (all zero) or exactly as long. This is the wire shape (one message per batch, not per exit).

    A column is any sequence of ints (floats for ``timestamp``) with ``len`` and indexing:
    a list, or an ``array.array`` as the trace readers and the service build them (which
    ``numpy.asarray``/``numpy.frombuffer`` read without a copy through the buffer protocol).
    ``vcpu`` and ``vm`` say who made each exit (the trace's vCPU and VM keys, see
    ``vmxsim_client.traces``); the engine does not read them.
    """

    reason: Sequence[int]
    rip: Sequence[int] = field(default_factory=list)
    qualification: Sequence[int] = field(default_factory=list)
    info2: Sequence[int] = field(default_factory=list)
    intr_info: Sequence[int] = field(default_factory=list)
    error_code: Sequence[int] = field(default_factory=list)
    guest_physical_address: Sequence[int] = field(default_factory=list)
    instruction_len: Sequence[int] = field(default_factory=list)
    timestamp: Sequence[float] = field(default_factory=list)
    sequence: int = 0
    vcpu: Sequence[int] = field(default_factory=list)
    vm: Sequence[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.reason)

    @classmethod
    def from_records(cls, records: Iterable[ExitRecord], sequence: int = 0) -> ExitBatch:
        """Columns from records (every column filled)."""
        columns: list[list[int]] = [[] for _ in COLUMNS]
        stamps: list[float] = []
        for record in records:
            for column, name in zip(columns, COLUMNS, strict=True):
                column.append(getattr(record, name))
            stamps.append(record.timestamp if record.timestamp is not None else 0.0)
        reason, rip, qualification, info2, intr_info, error_code, gpa, length = columns
        return cls(
            reason, rip, qualification, info2, intr_info, error_code, gpa, length,
            timestamp=stamps, sequence=sequence,
        )  # fmt: skip

    def records(self) -> list[ExitRecord]:
        """The batch as records (empty columns read as zero)."""
        n = len(self.reason)
        cols = [getattr(self, name) or [0] * n for name in COLUMNS]
        stamps: list[float | None] = list(self.timestamp) if self.timestamp else [None] * n
        vcpus = self.vcpu or [0] * n
        rows = zip(*cols, stamps, vcpus, strict=True)
        return [
            ExitRecord(r, a, b, c, d, e, f, g, timestamp=t, vcpu=v)
            for r, a, b, c, d, e, f, g, t, v in rows
        ]
