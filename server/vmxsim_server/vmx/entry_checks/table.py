"""The check-table types and ``evaluate``, the one routine that runs VM-entry checks.

A check is a row of data (``Check``): a stable id, its SDM section, the stage of VM entry it
belongs to, the VMCS fields it may read and two functions of a ``Values`` accessor and the vCPU's
``Capabilities``: ``holds`` (True when the check passes) and ``explain`` (a one-line message
naming the offending values, called only when it fails). VMLAUNCH/VMRESUME, ``vmxsim diagnose``
and the docs all derive from the same rows.

``Values`` maps a field-table name to the field's value (the full 64-bit value for a 64-bit
field). It may also answer the pseudo-values of ``PSEUDO_VALUES``: vCPU state rather than VMCS
fields (the basic checks read them), and ``@memory64:ADDR`` for the checks that read guest
memory, which ``evaluate`` answers from its ``memory`` argument.

An accessor raises ``UnknownField`` for a value it does not know (a field a dump does not show);
``evaluate`` then reports the check as not checked, never passed or failed on a made-up value.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..capabilities import Capabilities

__all__ = [
    "OUTCOMES",
    "PSEUDO_VALUES",
    "Check",
    "Failure",
    "Memory",
    "NotChecked",
    "Report",
    "Stage",
    "UnknownField",
    "Values",
    "evaluate",
]

Values = Callable[[str], int]
"""Field-table name (or ``@pseudo`` name) -> value."""

PSEUDO_VALUES: dict[str, str] = {
    "@current_vmcs": "1 when a VMCS is current (the current-VMCS pointer is valid), else 0",
    "@current_vmcs_pointer": "the current-VMCS pointer (VMPTRST's answer)",
    "@shadow_indicator": "bit 31 of the current VMCS's first word (the shadow-VMCS indicator)",
    "@mov_ss_blocking": "1 when VMLAUNCH/VMRESUME follows MOV SS or POP SS (events blocked)",
    "@launch": "1 for VMLAUNCH, 0 for VMRESUME (``evaluate`` answers it from ``launch``)",
    "@launch_state": "1 when the current VMCS is launched, 0 when it is clear",
    "@vmxon_epoch_ok": "1 when no VMXOFF and VMXON happened since the VMCS's VMLAUNCH",
    "@memory64:ADDR": "the 64-bit word at guest-physical address ADDR (hex), from ``memory``",
}
"""The pseudo-values a ``Values`` accessor may be asked for, and their meaning."""


class UnknownField(Exception):
    """Raised by a ``Values`` accessor for a value it does not know (e.g. not in a dump)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is unknown")
        self.field = field


class Memory(Protocol):
    """What the checks read of guest-physical memory: aligned 32-bit words."""

    def read32(self, address: int) -> int: ...


class Stage(enum.Enum):
    """The stages of VM entry, in the order the processor runs them (SDM 27.1-27.4)."""

    BASIC = "basic"
    CONTROL = "control"
    HOST = "host"
    GUEST = "guest"
    MSR_LOAD = "msr-load"


OUTCOMES: dict[Stage, str] = {
    Stage.CONTROL: "VMfailValid 7",  # SDM 27.2: invalid control field(s)
    Stage.HOST: "VMfailValid 8",  # SDM 27.2: invalid host-state field(s)
    Stage.GUEST: "entry-failed 0x80000021",  # SDM 27.8: basic reason 33 | bit 31
    Stage.MSR_LOAD: "entry-failed 0x80000022",  # SDM 27.8: basic reason 34 | bit 31
}
"""The failure outcome of a check of each stage (BASIC checks name their own)."""


def _no_qualification(values: Values, caps: Capabilities) -> int:
    return 0


@dataclass(frozen=True, slots=True)
class Check:
    """One VM-entry check of the SDM.

    ``outcome`` defaults to the stage's (``OUTCOMES``); ``qualification`` computes the exit
    qualification of a failed VM entry (SDM 27.8: 0 by default, 2 PDPTEs, 3 NMI injection with
    blocking by STI... , 4 VMCS link pointer, the entry number for MSR loading).
    """

    id: str
    section: str
    stage: Stage
    fields: tuple[str, ...]
    holds: Callable[[Values, Capabilities], bool]
    explain: Callable[[Values, Capabilities], str]
    needs_memory: bool = False
    outcome: str = ""
    qualification: Callable[[Values, Capabilities], int] = field(default=_no_qualification)

    def __post_init__(self) -> None:
        if not self.outcome:
            object.__setattr__(self, "outcome", OUTCOMES[self.stage])


@dataclass(frozen=True)
class Failure:
    """A check that failed: its message and the outcome VM entry gives for it."""

    check: Check
    message: str
    outcome: str
    qualification: int = 0


@dataclass(frozen=True)
class NotChecked:
    """A check that needs values the accessor does not know (``missing``)."""

    check: Check
    missing: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    """The result of ``evaluate``: failures in check order, the checks not run, those passed."""

    failures: tuple[Failure, ...]
    not_checked: tuple[NotChecked, ...]
    passed: tuple[Check, ...]

    @property
    def first(self) -> Failure | None:
        """The failure the processor reports (the first in SDM order), or None."""
        return self.failures[0] if self.failures else None


MEMORY_PREFIX = "@memory64:"
NO_MEMORY = "@memory"


def _with_memory(values: Values, memory: Memory) -> Values:
    def value(name: str) -> int:
        if name.startswith(MEMORY_PREFIX):
            address = int(name[len(MEMORY_PREFIX) :], 16)
            return memory.read32(address) | memory.read32(address + 4) << 32
        return values(name)

    return value


def _missing(check: Check, values: Values, unknown: str) -> tuple[str, ...]:
    missing: list[str] = []
    for name in check.fields:
        try:
            values(name)
        except UnknownField:
            missing.append(name)
    return tuple(missing) or (unknown,)


def evaluate(
    values: Values,
    caps: Capabilities,
    memory: Memory | None = None,
    *,
    launch: bool = True,
    stop_at_first: bool = False,
    checks: tuple[Check, ...] | None = None,
) -> Report:
    """Run the checks (default: every check of ``CHECKS``) in SDM order.

    ``launch`` answers ``@launch`` (VMLAUNCH or VMRESUME). ``stop_at_first`` stops at the first
    failing check, as the processor does; without it every check runs (diagnose). A check whose
    accessor raises ``UnknownField`` is not checked; without ``memory`` the checks that read
    guest memory are not checked.
    """
    if checks is None:
        from . import CHECKS

        checks = CHECKS

    def basic(name: str) -> int:
        return int(launch) if name == "@launch" else values(name)

    with_memory = _with_memory(values, memory) if memory is not None else values
    failures: list[Failure] = []
    not_checked: list[NotChecked] = []
    passed: list[Check] = []
    for check in checks:
        # Only BASIC rows read @launch and only needs_memory rows read memory: the others get
        # the caller's accessor itself (VMLAUNCH runs this once per entry; keep it lean).
        if check.needs_memory:
            if memory is None:
                not_checked.append(NotChecked(check, (NO_MEMORY,)))
                continue
            read = with_memory
        else:
            read = basic if check.stage is Stage.BASIC else values
        try:
            if check.holds(read, caps):
                passed.append(check)
                continue
            failure = Failure(
                check, check.explain(read, caps), check.outcome, check.qualification(read, caps)
            )
        except UnknownField as exc:
            not_checked.append(NotChecked(check, _missing(check, read, exc.field)))
            continue
        failures.append(failure)
        if stop_at_first:
            break
    return Report(tuple(failures), tuple(not_checked), tuple(passed))
