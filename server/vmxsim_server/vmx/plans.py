"""Plans: the compiled effect of one exit of one reason in one state, and the table that memoises
them (the engine's unit of work; ``aggregate.py`` counts batches of them).

A state is ``(valid, asserted, user_exit, l0)``: the read-cache entries that survive exits (control
and host state), the write-if-changed fields already written once, a user-exit flag (kept for the
snapshot format; always False: no exit depends on it) and the L0 model's ``L0State``.
``_Compiler`` counts one exit with bit masks, in execution order (DESIGN.md "The core" 7):

1. ``after_exit``; with ``run.reload_vmcs`` the put (VMCLEAR, VMXOFF, ``vmcs_put`` rows);
2. the handler: with the VMCS put away and ``handler_vmcs_loaded`` false, each executed
   VMREAD/VMWRITE inside a load (``vmcs_load`` rows, VMXON, VMPTRLD) ... put of its own, or one
   around all of them with ``wrap = "once"``; a panicking handler ends the exit here (see
   ``profiles.py``: nothing of it is counted but ``panic``);
3. with ``reload_vmcs`` the load; the handler's ``entry_read``/``entry_write``; ``after_user_exit``
   when it returned to user space; ``before_entry``; the flush of write-back fields, last;
4. the entry, VMLAUNCH when the exit cleared the VMCS, else VMRESUME.
Within a section: reads, writes, then ``instructions`` rows. In nested modes every executed
instruction is also fed, in that order, to the L0 model (``l0.L0Exit``).

Counts are a flat ``{name: n}`` (only non-zero ones): the ``Counters`` names, ``other:OP``,
``l0:CAUSE``, ``l0_exits``, ``vmcs02_rebuilds``, ``panic``; the engine sums them generically.

Model rule for write-if-changed fields: a handler's write of guest state carries new state (it
is always issued); a write of control or host state re-asserts its configured value, so it is
issued once (the first time) and skipped afterwards.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .cache import KEEP_ON_EXIT
from .fields import BY_NAME, FIELDS, Field, Kind
from .l0 import AFTER_ENTRY, L0Exit, L0Model, L0State
from .latency import LatencyModel
from .profiles import Handler, Instruction, Profile, Section

__all__ = ["INITIAL_STATE", "Plan", "PlanArrays", "PlanRow", "PlanTable", "Row", "State"]

State = tuple[int, int, bool, L0State]
INITIAL_STATE: State = (0, 0, False, AFTER_ENTRY)
_RIP = BY_NAME["GUEST_RIP"]
_NO_WRAP, _WRAP_EACH, _WRAP_ONCE = 0, 1, 2


@dataclass(eq=False, slots=True)
class Plan:
    """One exit of ``reason`` from one state: its counts, prices and the state it leaves.

    ``next_row`` is the plan table of that state (reason -> plan), so running an exit is one
    dictionary look-up; ``index`` numbers the plan in its ``PlanTable``.
    """

    reason: int
    counts: dict[str, int]
    seconds: float
    l0_seconds: float
    advances_rip: bool
    panic: bool
    next_state: State
    index: int
    next_row: Row


@dataclass(eq=False, slots=True)
class Row:
    """A state and the plans compiled from it so far, by exit reason."""

    state: State
    plans: dict[int, Plan] = field(default_factory=dict)


class _Compiler:
    """Counts one exit field by field with masks; the result becomes a ``Plan``."""

    def __init__(self, profile: Profile, state: State, l0: L0Model | None, shadow: bool) -> None:
        self.profile = profile
        policy = profile.policy
        self.read_mask, self.write_mask, self.changed_mask = (
            policy.read_mask,
            policy.write_mask,
            policy.changed_mask,
        )
        valid, self.asserted, _, l0_state = state
        self.valid = valid & KEEP_ON_EXIT  # the exit invalidates guest and exit-info entries
        self.dirty = 0
        self.advances_rip = False
        self.n: Counter[str] = Counter()
        self.l0 = L0Exit(l0, shadow, l0_state) if l0 is not None else None
        self.wrap = _NO_WRAP
        self.wrapped_load = False
        self.cleared = False

    # --- instructions --------------------------------------------------------------------------

    def _vmx(self, name: str) -> None:
        self.n[name] += 1
        if self.l0 is not None:
            getattr(self.l0, name)()

    def _load(self) -> None:  # load_vmcs: vmcs_load rows, VMXON, VMPTRLD
        self.instructions(self.profile.vmcs_load.instructions)
        self._vmx("vmxon")
        self._vmx("vmptrld")

    def _put(self) -> None:  # put_vmcs: VMCLEAR, VMXOFF, vmcs_put rows
        self._vmx("vmclear")
        self._vmx("vmxoff")
        self.cleared = True
        self.instructions(self.profile.vmcs_put.instructions)

    def _access(self, f: Field, write: bool) -> None:
        if self.wrap == _WRAP_EACH or (self.wrap == _WRAP_ONCE and not self.wrapped_load):
            self._load()
            self.wrapped_load = True
        self.n["vmwrite" if write else "vmread"] += 1
        if self.l0 is not None:
            (self.l0.vmwrite if write else self.l0.vmread)(f)
        if self.wrap == _WRAP_EACH:
            self._put()
            self.wrapped_load = False

    def instructions(self, rows: tuple[Instruction, ...]) -> None:
        for row in rows:
            self.n[f"other:{row.op}"] += row.count
            if self.l0 is not None:
                self.l0.other(row)

    # --- accesses through the cache ------------------------------------------------------------

    def read(self, f: Field) -> None:
        bit = 1 << f.bit
        if self.read_mask & bit:
            if self.valid & bit:
                self.n["hits"] += 1
                return
            self.n["misses"] += 1
            self.valid |= bit
        self._access(f, write=False)

    def write(self, f: Field) -> None:
        bit = 1 << f.bit
        if f is _RIP:
            self.advances_rip = True
        if self.write_mask & bit:
            self.dirty |= bit
            self.valid |= bit & self.read_mask
            return
        if self.changed_mask & bit:
            if f.kind is not Kind.GUEST and self.asserted & bit:
                self.n["hits"] += 1
                return
            self.asserted |= bit
        self.valid |= bit & self.read_mask
        self._access(f, write=True)

    def section(self, section: Section) -> None:
        for f in section.reads:
            self.read(f)
        for f in section.writes:
            self.write(f)
        self.instructions(section.instructions)

    def run(self, handler: Handler) -> None:
        """Count the whole exit (the caller handles panicking handlers)."""
        profile = self.profile
        self.section(profile.after_exit)
        if profile.reload_vmcs:  # put_vmcs right after the exit
            self._put()
        if profile.reload_vmcs and not profile.handler_vmcs_loaded:
            self.wrap = _WRAP_ONCE if handler.wrap_once else _WRAP_EACH
        self.section(handler)
        if self.wrapped_load:
            self._put()
        self.wrap = _NO_WRAP
        if profile.reload_vmcs:  # load_vmcs at the top of the next run
            self._load()
        self.section(handler.entry)
        if handler.user_exit:
            self.section(profile.after_user_exit)
        self.section(profile.before_entry)
        dirty = self.dirty  # the flush: one VMWRITE per dirty field, the last step before entry
        while dirty:
            low = dirty & -dirty
            self._access(FIELDS[low.bit_length() - 1], write=True)
            dirty ^= low
        if self.l0 is not None:
            self.l0.entry(launch=self.cleared)
            self.n["l0_exits"] += self.l0.exits
            self.n["vmcs02_rebuilds"] += self.l0.rebuilds
            for cause, count in self.l0.by_cause.items():
                self.n[f"l0:{cause}"] += count


class PlanRow(NamedTuple):
    """What a batch summary needs of one plan, as Python values."""

    reason: int
    panic: bool
    vmread: int
    vmwrite: int
    seconds: float
    l0_seconds: float
    l0_exits: int


@dataclass(frozen=True, slots=True)
class PlanArrays:
    """Every plan's values indexed by plan number, so a batch's totals are array operations over
    the plans it ran: ``counts[i, j]`` is plan i's count named ``keys[j]`` (``keys`` sorted);
    ``rows[i]`` plan i's summary values; per-exit output and RIP tracking gather from the
    per-plan arrays."""

    size: int
    keys: tuple[str, ...]
    counts: Any  # int64 (size, len(keys))
    rows: tuple[PlanRow, ...]
    vmread: Any  # int64
    vmwrite: Any  # int64
    seconds: Any  # float64
    advances_rip: Any  # bool

    @classmethod
    def of(cls, plans: list[Plan]) -> PlanArrays:
        keys = tuple(sorted({key for plan in plans for key in plan.counts}))
        column = {key: j for j, key in enumerate(keys)}
        counts = np.zeros((len(plans), len(keys)), dtype=np.int64)
        for i, plan in enumerate(plans):
            for key, value in plan.counts.items():
                counts[i, column[key]] = value
        rows = tuple(
            PlanRow(
                p.reason, p.panic, p.counts.get("vmread", 0), p.counts.get("vmwrite", 0),
                p.seconds, p.l0_seconds, p.counts.get("l0_exits", 0),
            )
            for p in plans
        )  # fmt: skip
        return cls(
            len(plans), keys, counts, rows,
            np.array([row.vmread for row in rows], dtype=np.int64),
            np.array([row.vmwrite for row in rows], dtype=np.int64),
            np.array([row.seconds for row in rows], dtype=np.float64),
            np.array([p.advances_rip for p in plans], dtype=np.bool_),
        )  # fmt: skip


class PlanTable:
    """Every plan compiled so far for one profile, latency model and L0 model, by state.

    ``shared`` hands engines of the same (profile, latency model, L0 model) objects one table, so
    a server's vCPUs compile each plan once; compiling is serialised by a lock (plans are
    append-only and immutable, so readers need none).
    """

    _SHARED: ClassVar[OrderedDict[tuple[object, ...], tuple[object, ...]]] = OrderedDict()
    _SHARED_MAX: ClassVar[int] = 64
    _SHARED_LOCK: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls, profile: Profile, latency: LatencyModel, l0: L0Model | None) -> PlanTable:
        """The table of this profile, L0 model and latency configuration (mode and parameter
        objects: two models built alike share it); an LRU of the last 64 combinations."""
        key = (id(profile), latency.mode, id(latency.parameters), id(l0))
        with cls._SHARED_LOCK:
            found = cls._SHARED.get(key)
            if found is not None:  # the entry holds the objects, so their ids are not reused
                cls._SHARED.move_to_end(key)
                table = found[-1]
                assert isinstance(table, PlanTable)
                return table
            table = cls(profile, latency, l0)
            cls._SHARED[key] = (profile, latency.parameters, l0, table)
            while len(cls._SHARED) > cls._SHARED_MAX:
                cls._SHARED.popitem(last=False)
            return table

    def __init__(self, profile: Profile, latency: LatencyModel, l0: L0Model | None) -> None:
        self.profile = profile
        self.latency = latency
        self.l0 = l0
        self.rows: dict[State, Row] = {}
        self.plans: list[Plan] = []
        self._arrays = PlanArrays.of([])
        self._lock = threading.Lock()

    def row_of(self, state: State) -> Row:
        row = self.rows.get(state)
        if row is None:
            row = self.rows.setdefault(state, Row(state))
        return row

    def plan(self, row: Row, reason: int) -> Plan:
        """The plan of ``reason`` from ``row``'s state (compiled on first use)."""
        plan = row.plans.get(reason)
        return plan if plan is not None else self._compile(row, reason)

    def _compile(self, row: Row, reason: int) -> Plan:
        with self._lock:
            plan = row.plans.get(reason)  # another thread may have compiled it meanwhile
            return plan if plan is not None else self._compile_locked(row, reason)

    def _compile_locked(self, row: Row, reason: int) -> Plan:
        handler = self.profile.handler(reason)
        state = row.state
        if handler.panic:  # the VM stops: nothing runs, the state stays
            plan = Plan(reason, {"panic": 1}, 0.0, 0.0, False, True, state, len(self.plans), row)
        else:
            plan = self._compile_exit(reason, handler, state)
        self.plans.append(plan)
        row.plans[reason] = plan
        return plan

    def _compile_exit(self, reason: int, handler: Handler, state: State) -> Plan:
        latency = self.latency
        compiler = _Compiler(self.profile, state, self.l0, latency.shadow)
        compiler.run(handler)
        n, l0 = compiler.n, compiler.l0
        cycles = latency.exit_cycles(
            reason, n["vmread"], n["vmwrite"], n["vmptrld"], n["vmclear"], n["vmxon"] + n["vmxoff"],
            l0,
        )  # fmt: skip
        l0_seconds = l0.cycles / latency.clock_hz if l0 is not None else 0.0
        # Only what the next exit can see: the entries that survive an exit (the rest are dropped
        # at its start anyway) and no user-exit flag (nothing after the exit depends on it).
        # Keeping states canonical keeps them few, so batches aggregate (``aggregate.py``).
        next_state = (
            compiler.valid & KEEP_ON_EXIT,
            compiler.asserted,
            False,
            l0.state if l0 is not None else state[3],
        )
        counts = {key: value for key, value in n.items() if value}
        return Plan(
            reason, counts, cycles / latency.clock_hz, l0_seconds, compiler.advances_rip, False,
            next_state, len(self.plans), self.row_of(next_state),
        )  # fmt: skip

    def arrays(self) -> PlanArrays:
        """Every plan compiled so far (at least) as ``PlanArrays``, rebuilt after compiles from a
        copy of the list (other threads may append to it meanwhile)."""
        arrays = self._arrays
        if arrays.size < len(self.plans):
            arrays = self._arrays = PlanArrays.of(self.plans[:])
        return arrays
