"""Re-checking a VMCS that passed every check: only the checks that read a changed field run.

The engine enters the guest once per batch, and between two entries only a few fields change
(exit information, GUEST_RIP, what the handler wrote). A check whose declared ``fields`` did not
change since the VMCS last passed every check passes again, so VM entry needs to run only the
checks that read a changed field, plus those that read vCPU state or guest memory (BASIC rows,
``needs_memory`` rows and rows declaring an ``@`` pseudo-value), which always run. The order of
the checks that run is the table's, so the first failure is the processor's first failure.
This relies on each row declaring every field it reads (tests/test_entry_checks.py checks it).
"""

from __future__ import annotations

from ..fields import BY_NAME, FIELDS
from .table import Check, Stage

__all__ = ["PassedState"]


class PassedState:
    """The values of a VMCS when it last passed every check, and which checks read what."""

    __slots__ = ("_always", "_by_bit", "_checks", "values")

    def __init__(self, checks: tuple[Check, ...]) -> None:
        self._checks = checks
        self.values: list[int] | None = None
        by_bit: list[set[int]] = [set() for _ in FIELDS]
        always: set[int] = set()
        for number, check in enumerate(checks):
            if check.stage is Stage.BASIC or check.needs_memory:
                always.add(number)
            for name in check.fields:
                if name.startswith("@"):
                    always.add(number)
                else:
                    by_bit[BY_NAME[name].bit].add(number)
        self._always = frozenset(always)
        self._by_bit = tuple(frozenset(s) for s in by_bit)

    def checks_for(self, values: list[int]) -> tuple[Check, ...]:
        """The checks an entry with these VMCS values must run (all of them the first time)."""
        passed = self.values
        if passed is None:
            return self._checks
        numbers = set(self._always)
        by_bit = self._by_bit
        for bit, (old, new) in enumerate(zip(passed, values, strict=True)):
            if old != new:
                numbers |= by_bit[bit]
        checks = self._checks
        return tuple(checks[n] for n in sorted(numbers))

    def record(self, values: list[int]) -> None:
        """These values passed every check."""
        self.values = list(values)
