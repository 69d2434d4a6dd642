"""The VM-entry/exit engine: runs exits through a hypervisor profile, its cache and a latency model.

Per exit (DESIGN.md "The core" 7, compiled by ``plans.py``): the processor writes the exit
information into the VMCS; the profile's accesses run through its cache (and, nested, through the
L0 model); the flush; VM entry; the exit's counts and simulated latency are accumulated.

Each batch starts with a real VMRESUME (or VMLAUNCH) on the vCPU, with every VM-entry check, and
ends in VMX root operation right after its last exit, so a harness can VMREAD the exit
information between batches. Inside a batch the handlers' writes store the value a field already
holds (GUEST_RIP advances by the instruction length), so no field a VM-entry check reads changes
and the checks that passed at the batch's entry hold for every entry in it.

Speed: an exit's counts depend only on its reason and a small state (cache entries that survive
exits, write-if-changed fields already written, a pending user exit, L0's state), compiled once per
(state, reason) into a plan. A batch is counted as transitions (``aggregate.py``): once every
reason has been seen the surviving cache state stops growing, every reason's exit leads from the
run's state back to it, and the batch is one ``bincount`` over its reasons (states that still
depend on the previous reason: pair codes checked and kept from batch to batch; before that point
exits are walked one at a time). The batch's stats are then a product of those counts with the
plans' count matrix plus Python work per plan run, not per exit; the plan of every exit is only
gathered for per-exit output and RIP tracking. The last exit's information is still written into
the VMCS exactly, and GUEST_RIP as the exits left it.
"""

from __future__ import annotations

import array
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, NamedTuple

import numpy as np

from .aggregate import Transitions, plan_indices
from .cache import Counters
from .entry_checks import valid_state
from .exceptions import InvalidArgument, StateError
from .fields import BY_NAME
from .latency import LatencyModel
from .plans import INITIAL_STATE, PlanArrays, PlanTable, State
from .profiles import Profile
from .records import COLUMNS, ExitBatch
from .vcpu import Mode, Outcome, Vcpu
from .vmcs import LaunchState

__all__ = ["BatchStats", "Engine", "ReasonTotals"]

_RIP = BY_NAME["GUEST_RIP"]
_GPA = BY_NAME["GUEST_PHYSICAL_ADDRESS"]
_EPT_MISCONFIG = 49  # | 1 also maps EPT_VIOLATION (48) to it
_EXIT_INFORMATION = tuple(
    (BY_NAME[name].bit, column)
    for name, column in (
        ("VM_EXIT_REASON", "reason"), ("EXIT_QUALIFICATION", "qualification"),
        ("IDT_VECTORING_INFO_FIELD", "info2"), ("VM_EXIT_INTR_INFO", "intr_info"),
        ("VM_EXIT_INTR_ERROR_CODE", "error_code"), ("VM_EXIT_INSTRUCTION_LEN", "instruction_len"),
    )
)  # fmt: skip
"""The exit-information fields the CPU writes at an exit, and the column each comes from."""
_U64 = (1 << 64) - 1
_COUNTER_NAMES = tuple(Counters.__dataclass_fields__)


def _free_pages(vcpu: Vcpu, count: int) -> list[int]:
    """``count`` untouched 4 KiB pages at the top of the vCPU's physical memory, where the engine
    puts its own VMXON region and VMCS for a vCPU driven without set-up (away from the low
    addresses harnesses use, and distinct for every vCPU of a VM)."""
    used = set(vcpu.memory.regions()) | {a & ~0xFFF for a in vcpu.memory.words()}
    pages: list[int] = []
    page = vcpu.capabilities.physical_address_limit - 0x1000
    while len(pages) < count:
        if page not in used:
            pages.append(page)
        page -= 0x1000
    return pages


@dataclass(slots=True)
class ReasonTotals:
    """Per exit reason: exits, VMREADs, VMWRITEs, simulated seconds and L0 exits."""

    exits: int = 0
    vmread: int = 0
    vmwrite: int = 0
    simulated_seconds: float = 0.0
    l0_exits: int = 0


@dataclass(slots=True)
class BatchStats:
    """Exact counts of a run of exits (one batch, or accumulated over many).

    ``counters`` are the VMX instructions (and cache hits/misses); ``other`` the other L1
    instructions by op; ``l0_*`` what the L0 model saw (nested modes; ``l0_model`` is None in
    native mode); ``panics`` exits by reason whose handler stops the VM (not in ``exits``).
    """

    exits: int = 0
    counters: Counters = field(default_factory=Counters)
    simulated_seconds: float = 0.0
    by_reason: dict[int, ReasonTotals] = field(default_factory=dict)
    vmread_hist: Counter[int] = field(default_factory=Counter)
    vmwrite_hist: Counter[int] = field(default_factory=Counter)
    latency_hist: Counter[float] = field(default_factory=Counter)
    per_exit_vmread: list[int] = field(default_factory=list)
    per_exit_vmwrite: list[int] = field(default_factory=list)
    per_exit_seconds: list[float] = field(default_factory=list)
    sequence: int = 0
    other: Counter[str] = field(default_factory=Counter)
    l0_model: str | None = None
    l0_exits: int = 0
    l0_by_cause: Counter[str] = field(default_factory=Counter)
    l0_hist: Counter[int] = field(default_factory=Counter)
    l0_seconds: float = 0.0
    vmcs02_rebuilds: int = 0
    panics: Counter[int] = field(default_factory=Counter)

    def add(self, other: BatchStats) -> None:
        """Accumulate another run (per-exit lists are not carried over)."""
        self.exits += other.exits
        self.counters.add(other.counters)
        self.simulated_seconds += other.simulated_seconds
        by_reason = self.by_reason
        for reason, totals in other.by_reason.items():
            mine = by_reason.get(reason)
            if mine is None:
                mine = by_reason[reason] = ReasonTotals()
            mine.exits += totals.exits
            mine.vmread += totals.vmread
            mine.vmwrite += totals.vmwrite
            mine.simulated_seconds += totals.simulated_seconds
            mine.l0_exits += totals.l0_exits
        for name in _COUNTER_MEMBERS:
            mine_hist, theirs = getattr(self, name), getattr(other, name)
            if theirs:
                get = mine_hist.get
                for key, n in theirs.items():
                    mine_hist[key] = get(key, 0) + n
        self.l0_model = self.l0_model or other.l0_model
        self.l0_exits += other.l0_exits
        self.l0_seconds += other.l0_seconds
        self.vmcs02_rebuilds += other.vmcs02_rebuilds
        self.sequence = max(self.sequence, other.sequence)


_COUNTER_MEMBERS = (
    "vmread_hist", "vmwrite_hist", "latency_hist", "other", "l0_by_cause", "l0_hist", "panics",
)  # fmt: skip
"""The ``Counter`` members of ``BatchStats``, which ``add`` sums key by key."""


def _column(name: str, values: Sequence[int] | Any, n: int, limit: int) -> Any:
    """One column as an integer array, its length and range checked in C loops: a list is
    packed once into uint64 (``array('Q')`` rejects negative, oversized and non-integer values),
    an array or buffer is viewed without a copy and checked by numpy (not at all when its type
    cannot exceed the limit); ``InvalidArgument`` names the first bad value."""
    if len(values) != n:
        raise InvalidArgument(
            f"column {name} has {len(values)} values for {n} exits (give all or none)"
        )
    try:
        if isinstance(values, list | tuple):
            column = np.frombuffer(array.array("Q", values), dtype=np.uint64)
        else:
            column = np.asarray(values)
            dtype = column.dtype
            type_max = _TYPE_MAX.get(dtype)
            if type_max is None:
                if dtype.kind not in "iu":
                    raise TypeError
                type_max = _TYPE_MAX.setdefault(dtype, int(np.iinfo(dtype).max))
            if dtype.kind == "i" and n and int(column.min()) < 0:
                raise TypeError
            if type_max <= limit:  # the type itself bounds it: no pass
                return column
        ok = limit >= _U64 or not n or int(column.max()) <= limit
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        bad = next(v for v in values if not _in_range(v, limit))
        raise InvalidArgument(f"{name} value {bad} is outside 0..{limit:#x}")
    return column


_TYPE_MAX: dict[Any, int] = {}
"""The largest value of each integer dtype met (``np.iinfo`` costs more than a small column's
check)."""


def _in_range(value: Any, limit: int) -> bool:
    try:
        return 0 <= operator.index(value) <= limit
    except TypeError:
        return False


_COLUMN_LIMITS = {
    "reason": 0xFFFF, "rip": _U64, "qualification": _U64, "info2": 0xFFFF_FFFF,
    "intr_info": 0xFFFF_FFFF, "error_code": 0xFFFF_FFFF, "guest_physical_address": _U64,
    "instruction_len": 0xFFFF_FFFF,
}  # fmt: skip


class Engine:
    """Runs exits on one vCPU through a profile and a latency model; deterministic."""

    def __init__(self, vcpu: Vcpu, profile: Profile, latency: LatencyModel) -> None:
        self.vcpu = vcpu
        self.profile = profile
        self.latency = latency
        self.l0 = latency.l0_for(profile)
        self.totals = BatchStats(l0_model=self.l0.name if self.l0 else None)
        self.plans = PlanTable.shared(profile, latency, self.l0)
        self._row = self.plans.row_of(INITIAL_STATE)
        self._seen: set[int] = set()  # reasons run so far: the state has absorbed their effect
        self._steady = Transitions()  # this run's checked (state, reason) transitions

    # --- set-up --------------------------------------------------------------------------------

    def start(self) -> None:
        """Put the vCPU in the guest: resume a harness's VMCS, or set up the engine's own."""
        vcpu = self.vcpu
        if vcpu.mode is Mode.NON_ROOT:
            return
        if vcpu.mode is Mode.ROOT and vcpu.current is not None:
            launched = vcpu.current.launch_state is LaunchState.LAUNCHED
            outcome = vcpu.vmresume() if launched else vcpu.vmlaunch()
            if not outcome.ok:
                detail = outcome.message or outcome.result.value
                error = f" error {outcome.error}" if outcome.error else ""
                raise StateError(f"VM entry failed ({outcome.result.value}{error}): {detail}")
            return
        revision = vcpu.capabilities.revision_id
        vmcs, vmxon = _free_pages(vcpu, 2)
        steps: list[Callable[[], Outcome]] = []
        if vcpu.mode is Mode.OFF:
            vcpu.memory.write32(vmxon, revision)
            steps.append(partial(vcpu.vmxon, vmxon))
        vcpu.memory.write32(vmcs, revision)
        steps += [partial(vcpu.vmclear, vmcs), partial(vcpu.vmptrld, vmcs)]
        for name, value in valid_state(vcpu.capabilities).items():
            steps.append(partial(vcpu.vmwrite, BY_NAME[name].encoding, value))
        steps.append(vcpu.vmlaunch)
        for step in steps:
            outcome = step()
            if not outcome.ok:
                raise StateError(f"cannot set up the vCPU for driving: {outcome}")

    # --- state (snapshots) ---------------------------------------------------------------------

    @property
    def cache_state(self) -> tuple[int, int, bool]:
        """The cache state the next exit starts in: (valid mask, asserted mask, user exit)."""
        valid, asserted, user_exit, _ = self._row.state
        return valid, asserted, user_exit

    @property
    def state(self) -> State:
        """The whole state the next exit starts in (cache state and L0 state)."""
        return self._row.state

    def resume_from(self, totals: BatchStats, cache_state: tuple[int, int, bool]) -> None:
        """Continue an earlier run: its totals and its cache state (a restored snapshot). L0's
        state at an exit boundary is always the one after an entry (``l0.AFTER_ENTRY``)."""
        self.totals = totals
        self.totals.l0_model = self.l0.name if self.l0 else None
        self._row = self.plans.row_of((*cache_state, INITIAL_STATE[3]))
        self._steady.clear()

    # --- running -------------------------------------------------------------------------------

    def run_batch(self, batch: ExitBatch, per_exit: bool = False) -> BatchStats:
        """Run a batch of exits; returns its exact stats and adds them to ``totals``."""
        n = len(batch.reason)
        columns = {
            name: _column(name, getattr(batch, name), n, _COLUMN_LIMITS[name])
            for name in COLUMNS
            if name == "reason" or len(getattr(batch, name))
        }
        self.start()
        region = self.vcpu.current
        assert region is not None
        reasons = columns["reason"].astype(np.intp)
        rips, lengths = columns.get("rip"), columns.get("instruction_len")
        # GUEST_RIP is tracked exit by exit only when a simple formula cannot give its final
        # value: no RIP column (handlers advance it from exit to exit) or RIPs of 0 (= none given)
        track_rip = lengths is not None and (rips is None or (n > 0 and int(rips.min()) == 0))
        counted = plan_indices(
            self.plans, self._row, reasons, self._seen, self._steady, per_exit or track_rip
        )
        self._row = counted.row
        arrays = self.plans.arrays()
        stats = _summarise(arrays, counted.counts, batch.sequence, self.totals.l0_model)
        indices = counted.indices
        if n:
            advances_last = bool(arrays.advances_rip[counted.last])
            rip = None
            if track_rip:
                assert lengths is not None
                rip = _tracked_rip(region.values[_RIP.bit], rips, lengths, indices, arrays)
            _store_last_exit(region.values, reasons, columns, advances_last, rip)
            self.vcpu.mode = Mode.ROOT  # the last exit: its handler ran, the next batch re-enters
        if per_exit:
            stats.per_exit_vmread = arrays.vmread[indices].tolist()
            stats.per_exit_vmwrite = arrays.vmwrite[indices].tolist()
            stats.per_exit_seconds = arrays.seconds[indices].tolist()
        self.totals.add(stats)
        return stats


def _tracked_rip(start: int, rips: Any, lengths: Any, indices: Any, arrays: PlanArrays) -> int:
    """GUEST_RIP after the batch: from the last exit that gave a RIP (or the VMCS's value), each
    later exit whose handler advances it adds its instruction length (modulo 2**64)."""
    given = np.flatnonzero(rips) if rips is not None else np.empty(0, dtype=np.intp)
    first = int(given[-1]) if given.size else 0
    rip = int(rips[first]) if rips is not None and given.size else start
    advances = arrays.advances_rip[indices[first:]].astype(np.uint64)
    added = int(np.dot(lengths[first:].astype(np.uint64), advances))  # wraps modulo 2**64
    return (rip + added) & _U64


def _store_last_exit(
    values: list[int],
    reasons: Any,
    columns: dict[str, Any],
    advances_last: bool,
    tracked_rip: int | None,
) -> None:
    """Leave the VMCS as the batch's exits leave it: the last exit's information, the last EPT
    exit's guest-physical address, and GUEST_RIP as the exits wrote it and their handlers advanced
    it by the instruction length.

    Exit information of earlier exits is overwritten by later ones before anything outside the
    batch can read it, so only what survives is stored (the reference interpreter stores every
    exit's; tests check that both leave the same VMCS).
    """
    for bit, column in _EXIT_INFORMATION:
        values[bit] = int(columns[column][-1]) if column in columns else 0
    gpas = columns.get("guest_physical_address")
    if gpas is not None:
        ept = _last_ept_exit(reasons)
        if ept is not None:
            values[_GPA.bit] = int(gpas[ept])
    if tracked_rip is not None:
        values[_RIP.bit] = tracked_rip & _U64
    elif "rip" in columns:
        lengths = columns.get("instruction_len")
        advance = int(lengths[-1]) if advances_last and lengths is not None else 0
        values[_RIP.bit] = (int(columns["rip"][-1]) + advance) & _U64


class _Routes(NamedTuple):
    """Where each count of ``PlanArrays.keys`` goes in ``BatchStats``, by its column."""

    counters: tuple[int, ...]  # per ``Counters`` member, its column (-1: no plan counts it)
    other: tuple[tuple[int, str], ...]
    l0_by_cause: tuple[tuple[int, str], ...]
    l0_exits: int
    vmcs02_rebuilds: int


@lru_cache(maxsize=64)
def _routes(keys: tuple[str, ...]) -> _Routes:
    """A count named like a ``Counters`` member goes to ``counters``, ``other:OP`` to ``other``,
    ``l0:CAUSE`` to ``l0_by_cause``, ``l0_exits``/``vmcs02_rebuilds`` to their totals
    (``panic`` is counted by reason, from the plans)."""
    column = {key: j for j, key in enumerate(keys)}
    other: list[tuple[int, str]] = []
    causes: list[tuple[int, str]] = []
    for j, key in enumerate(keys):
        kind, _, name = key.partition(":")
        if kind == "other":
            other.append((j, name))
        elif kind == "l0":
            causes.append((j, name))
    return _Routes(
        tuple(column.get(name, -1) for name in _COUNTER_NAMES),
        tuple(other),
        tuple(causes),
        column.get("l0_exits", -1),
        column.get("vmcs02_rebuilds", -1),
    )


def _last_ept_exit(reasons: Any) -> int | None:
    """The index of the last EPT violation or misconfiguration (reasons 48, 49), looked for in
    the last exits first (EPT exits are frequent where they occur at all)."""
    tail = max(0, len(reasons) - 256)
    for start in (tail, 0) if tail else (0,):
        found = np.flatnonzero((reasons[start:] | 1) == _EPT_MISCONFIG)
        if found.size:
            return start + int(found[-1])
    return None


def _summarise(arrays: PlanArrays, counts: Any, sequence: int, l0_model: str | None) -> BatchStats:
    """Stats from how often each plan ran: the count totals as one product of the run counts and
    the plans' count matrix, and per plan run (not per exit) its reason totals and histograms."""
    ran = np.flatnonzero(counts)
    if not ran.size:
        return BatchStats(sequence=sequence, l0_model=l0_model)
    times = counts[ran]
    totals = (times @ arrays.counts[ran]).tolist()
    routes = _routes(arrays.keys)
    exits, seconds_total, l0_seconds_total = 0, 0.0, 0.0
    by_reason: dict[int, ReasonTotals] = {}
    vmread_hist: dict[int, int] = {}
    vmwrite_hist: dict[int, int] = {}
    latency_hist: dict[float, int] = {}
    l0_hist: dict[int, int] = {}
    panics: dict[int, int] = {}
    rows = arrays.rows
    for i, n in zip(ran.tolist(), times.tolist(), strict=True):
        reason, panic, vmread, vmwrite, seconds, l0_seconds, l0_exits = rows[i]
        if panic:
            panics[reason] = panics.get(reason, 0) + n
            continue
        exits += n
        seconds_total += seconds * n
        l0_seconds_total += l0_seconds * n
        totals_of = by_reason.get(reason)
        if totals_of is None:
            totals_of = by_reason[reason] = ReasonTotals()
        totals_of.exits += n
        totals_of.vmread += vmread * n
        totals_of.vmwrite += vmwrite * n
        totals_of.simulated_seconds += seconds * n
        totals_of.l0_exits += l0_exits * n
        vmread_hist[vmread] = vmread_hist.get(vmread, 0) + n
        vmwrite_hist[vmwrite] = vmwrite_hist.get(vmwrite, 0) + n
        latency_hist[seconds] = latency_hist.get(seconds, 0) + n
        l0_hist[l0_exits] = l0_hist.get(l0_exits, 0) + n
    return BatchStats(
        exits=exits,
        counters=Counters(*(totals[j] if j >= 0 else 0 for j in routes.counters)),
        simulated_seconds=seconds_total,
        by_reason=by_reason,
        vmread_hist=_counter(vmread_hist),
        vmwrite_hist=_counter(vmwrite_hist),
        latency_hist=_counter(latency_hist),
        sequence=sequence,
        other=_counter({name: totals[j] for j, name in routes.other if totals[j]}),
        l0_model=l0_model,
        l0_exits=totals[routes.l0_exits] if routes.l0_exits >= 0 else 0,
        l0_by_cause=_counter({name: totals[j] for j, name in routes.l0_by_cause if totals[j]}),
        l0_hist=_counter(l0_hist if l0_model is not None else {}),
        l0_seconds=l0_seconds_total,
        vmcs02_rebuilds=totals[routes.vmcs02_rebuilds] if routes.vmcs02_rebuilds >= 0 else 0,
        panics=_counter(panics),
    )


def _counter(counts: dict[Any, int]) -> Counter[Any]:
    """A ``Counter`` of a dict of counts (``dict.update``: ``Counter``'s own is Python code)."""
    counter: Counter[Any] = Counter()
    dict.update(counter, counts)
    return counter
