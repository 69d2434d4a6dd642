"""The VM-entry/exit engine: runs exits through a hypervisor profile, its cache and a latency model.

Per exit (DESIGN.md "The core" 7):
1. the processor writes the exit information into the current VMCS (``write_exit_information``);
2. the profile's accesses run through its cache, in order: ``after_exit``; with ``reload_vmcs``
   VMCLEAR+VMXOFF; the reason's handler (each executed VMREAD/VMWRITE wrapped in
   VMXON+VMPTRLD ... VMCLEAR+VMXOFF when ``handler_vmcs_loaded`` is false and the VMCS was put
   away); with ``reload_vmcs`` VMXON+VMPTRLD; ``after_user_exit`` when the handler returned to user
   space; ``before_entry``; the flush of write-back fields, last;
3. VM entry;
4. the exit's counts and simulated latency are accumulated.

Each batch starts with a real VMRESUME (or VMLAUNCH) on the vCPU, with every VM-entry check, and
ends in VMX root operation right after its last exit, so a harness can VMREAD the exit
information between batches. Inside a batch the handlers' writes store the value a field already
holds (GUEST_RIP advances by the instruction length), so no field a VM-entry check reads changes
and the checks that passed at the batch's entry hold for every entry in it.

Speed: the count of an exit depends only on its reason and a small cache state (valid entries
that survive exits, write-if-changed fields already written, a pending user-exit), so each
(reason, state) pair is compiled once with bitmask operations into an ``_Plan`` and every later
exit is a dictionary look-up. Exit information values are still written into the VMCS exactly.

Model rule for write-if-changed fields: a handler's write of guest state carries new state (it
is always issued); a write of control or host state re-asserts its configured value, so it is
issued once (the first time) and skipped afterwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from .cache import KEEP_ON_EXIT, Counters
from .entry_checks import valid_state
from .exceptions import InvalidArgument, StateError
from .fields import BY_NAME, Field, Kind, mask_of
from .latency import SHADOWED_FIELDS, LatencyModel
from .profiles import Handler, Profile, Section
from .records import COLUMNS, ExitBatch
from .vcpu import Mode, Outcome, Vcpu
from .vmcs import LaunchState

__all__ = ["BatchStats", "Engine", "ReasonTotals"]

_SHADOW_MASK = mask_of(SHADOWED_FIELDS)
_RIP = BY_NAME["GUEST_RIP"]
_U64 = (1 << 64) - 1


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


@dataclass(eq=False, slots=True)
class _Plan:
    """The compiled effect of one exit of one reason in one cache state.

    ``next_row`` is the plan table of the state this exit leaves (reason -> plan), so running an
    exit is one dictionary look-up; ``index`` numbers the plan for counting occurrences.
    """

    reason: int
    vmread: int
    vmwrite: int
    vmptrld: int
    vmclear: int
    vmxon: int
    vmxoff: int
    hits: int
    misses: int
    shadowed: int
    seconds: float
    advances_rip: bool
    next_state: tuple[int, int, bool]
    index: int
    next_row: _Row


@dataclass(eq=False, slots=True)
class _Row:
    """A cache state and the plans compiled from it so far, by exit reason."""

    state: tuple[int, int, bool]
    plans: dict[int, _Plan] = field(default_factory=dict)


@dataclass
class ReasonTotals:
    """Per exit reason: exits, VMREADs, VMWRITEs and simulated seconds."""

    exits: int = 0
    vmread: int = 0
    vmwrite: int = 0
    simulated_seconds: float = 0.0


@dataclass
class BatchStats:
    """Exact counts of a run of exits (one batch, or accumulated over many)."""

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

    def add(self, other: BatchStats) -> None:
        """Accumulate another run (per-exit lists are not carried over)."""
        self.exits += other.exits
        self.counters.add(other.counters)
        self.simulated_seconds += other.simulated_seconds
        for reason, totals in other.by_reason.items():
            mine = self.by_reason.setdefault(reason, ReasonTotals())
            mine.exits += totals.exits
            mine.vmread += totals.vmread
            mine.vmwrite += totals.vmwrite
            mine.simulated_seconds += totals.simulated_seconds
        self.vmread_hist.update(other.vmread_hist)
        self.vmwrite_hist.update(other.vmwrite_hist)
        self.latency_hist.update(other.latency_hist)
        self.sequence = max(self.sequence, other.sequence)


class _Compiler:
    """Counts one exit field by field with masks; the result becomes a ``_Plan``."""

    def __init__(self, profile: Profile, state: tuple[int, int, bool]) -> None:
        self.profile = profile
        policy = profile.policy
        self.read_mask, self.write_mask, self.changed_mask = (
            policy.read_mask,
            policy.write_mask,
            policy.changed_mask,
        )
        valid, self.asserted, _ = state
        self.valid = valid & KEEP_ON_EXIT  # the exit invalidates guest and exit-info entries
        self.dirty = 0
        self.advances_rip = False
        self.c = Counters()
        self.shadowed = 0

    def _executed(self, f: Field, wrapped: bool, write: bool) -> None:
        if write:
            self.c.vmwrite += 1
        else:
            self.c.vmread += 1
        if _SHADOW_MASK >> f.bit & 1:
            self.shadowed += 1
        if wrapped:  # HAXM's vmread()/vmwrite() with the VMCS put away: load_vmcs ... put_vmcs
            self._load_put()

    def _load_put(self) -> None:
        self.c.vmxon += 1
        self.c.vmptrld += 1
        self.c.vmclear += 1
        self.c.vmxoff += 1

    def read(self, f: Field, wrapped: bool) -> None:
        bit = 1 << f.bit
        if self.read_mask & bit:
            if self.valid & bit:
                self.c.hits += 1
                return
            self.c.misses += 1
            self.valid |= bit
        self._executed(f, wrapped, write=False)

    def write(self, f: Field, wrapped: bool) -> None:
        bit = 1 << f.bit
        if f is _RIP:
            self.advances_rip = True
        if self.write_mask & bit:
            self.dirty |= bit
            self.valid |= bit & self.read_mask
            return
        if self.changed_mask & bit:
            if f.kind is not Kind.GUEST and self.asserted & bit:
                self.c.hits += 1
                return
            self.asserted |= bit
        self.valid |= bit & self.read_mask
        self._executed(f, wrapped, write=True)

    def section(self, section: Section, wrapped: bool = False) -> None:
        for f in section.reads:
            self.read(f, wrapped)
        for f in section.writes:
            self.write(f, wrapped)

    def run(self, handler: Handler) -> bool:
        """Count the whole exit; returns whether the handler returned to user space."""
        profile = self.profile
        self.section(profile.after_exit)
        if profile.reload_vmcs:  # put_vmcs right after the exit
            self.c.vmclear += 1
            self.c.vmxoff += 1
        unloaded = profile.reload_vmcs and not profile.handler_vmcs_loaded
        executed = self.c.vmread + self.c.vmwrite
        self.section(handler, wrapped=unloaded and not handler.wrap_once)
        if unloaded and handler.wrap_once and self.c.vmread + self.c.vmwrite > executed:
            self._load_put()
        if profile.reload_vmcs:  # load_vmcs at the top of the next run
            self.c.vmxon += 1
            self.c.vmptrld += 1
        if handler.user_exit:
            self.section(profile.after_user_exit)
        self.section(profile.before_entry)
        dirty = self.dirty  # the flush: one VMWRITE per dirty field, the last step before entry
        self.c.vmwrite += dirty.bit_count()
        self.shadowed += (dirty & _SHADOW_MASK).bit_count()
        return handler.user_exit


class Engine:
    """Runs exits on one vCPU through a profile and a latency model; deterministic."""

    def __init__(self, vcpu: Vcpu, profile: Profile, latency: LatencyModel) -> None:
        self.vcpu = vcpu
        self.profile = profile
        self.latency = latency
        self.totals = BatchStats()
        self._rows: dict[tuple[int, int, bool], _Row] = {}
        self._plans: list[_Plan] = []
        self._row = self._row_of((0, 0, False))

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
        return self._row.state

    def resume_from(self, totals: BatchStats, cache_state: tuple[int, int, bool]) -> None:
        """Continue an earlier run: its totals and its cache state (a restored snapshot)."""
        self.totals = totals
        self._row = self._row_of(cache_state)

    # --- compilation ---------------------------------------------------------------------------

    def _row_of(self, state: tuple[int, int, bool]) -> _Row:
        row = self._rows.get(state)
        if row is None:
            row = self._rows[state] = _Row(state)
        return row

    def _compile(self, reason: int, state: tuple[int, int, bool]) -> _Plan:
        compiler = _Compiler(self.profile, state)
        user_exit = compiler.run(self.profile.handler(reason))
        c = compiler.c
        seconds = self.latency.exit_seconds(
            reason, c.vmread, c.vmwrite, c.vmptrld, c.vmclear, c.vmxon + c.vmxoff,
            compiler.shadowed,
        )  # fmt: skip
        next_state = (compiler.valid, compiler.asserted, user_exit)
        plan = _Plan(
            reason, c.vmread, c.vmwrite, c.vmptrld, c.vmclear, c.vmxon, c.vmxoff, c.hits,
            c.misses, compiler.shadowed, seconds, compiler.advances_rip, next_state,
            len(self._plans), self._row_of(next_state),
        )  # fmt: skip
        self._plans.append(plan)
        self._row_of(state).plans[reason] = plan
        return plan

    # --- running -------------------------------------------------------------------------------

    def run_batch(self, batch: ExitBatch, per_exit: bool = False) -> BatchStats:
        """Run a batch of exits; returns its exact stats and adds them to ``totals``."""
        n = len(batch.reason)
        columns = []
        for name in COLUMNS:
            column = getattr(batch, name)
            if column and len(column) != n:
                raise InvalidArgument(
                    f"column {name} has {len(column)} values for {n} exits (give all or none)"
                )
            columns.append(column)
        for name, column in zip(COLUMNS, columns, strict=True):
            limit = _COLUMN_LIMITS[name]
            if column and (min(column) < 0 or max(column) > limit):
                bad = next(v for v in column if not 0 <= v <= limit)
                raise InvalidArgument(f"{name} value {bad} is outside 0..{limit:#x}")
        self.start()
        region = self.vcpu.current
        assert region is not None
        plans = self._plans
        row = self._row
        seen: Counter[int] = Counter()
        trail: list[_Plan] = []  # this batch's plans in order, kept only when asked per exit
        lengths, rips = columns[7], columns[1]
        # GUEST_RIP is tracked exit by exit only when a simple formula cannot give its final
        # value: no RIP column (handlers advance it from exit to exit) or RIPs of 0 (= none given)
        track_rip = bool(lengths) and (not rips or 0 in rips)
        rip = region.values[_RIP.bit]
        plan: _Plan | None = None
        for i, reason in enumerate(batch.reason):
            plan = row.plans.get(reason)
            if plan is None:
                plan = self._compile(reason, row.state)
            seen[plan.index] += 1
            row = plan.next_row
            if track_rip:
                if rips and rips[i]:
                    rip = rips[i]
                if plan.advances_rip:
                    rip += lengths[i]
            if per_exit:
                trail.append(plan)
        self._row = row
        if plan is not None:
            _store_last_exit(region.values, columns, plan, rip if track_rip else None)
            self.vcpu.mode = Mode.ROOT  # the last exit: its handler ran, the next batch re-enters
        stats = _summarise(plans, seen, batch.sequence)
        if per_exit:
            stats.per_exit_vmread = [p.vmread for p in trail]
            stats.per_exit_vmwrite = [p.vmwrite for p in trail]
            stats.per_exit_seconds = [p.seconds for p in trail]
        self.totals.add(stats)
        return stats


_COLUMN_LIMITS = {
    "reason": 0xFFFF, "rip": _U64, "qualification": _U64, "info2": 0xFFFF_FFFF,
    "intr_info": 0xFFFF_FFFF, "error_code": 0xFFFF_FFFF, "guest_physical_address": _U64,
    "instruction_len": 0xFFFF_FFFF,
}  # fmt: skip


def _store_last_exit(
    values: list[int], columns: list[list[int]], last: _Plan, tracked_rip: int | None
) -> None:
    """Leave the VMCS as the batch's exits leave it: the last exit's information, the last EPT
    exit's guest-physical address, and GUEST_RIP as the exits wrote it and their handlers advanced
    it by the instruction length.

    Exit information of earlier exits is overwritten by later ones before anything outside the
    batch can read it, so only what survives is stored (the reference interpreter stores every
    exit's; tests check that both leave the same VMCS).
    """
    reasons = columns[0]
    i = len(reasons) - 1
    targets = (
        ("VM_EXIT_REASON", 0), ("EXIT_QUALIFICATION", 2), ("IDT_VECTORING_INFO_FIELD", 3),
        ("VM_EXIT_INTR_INFO", 4), ("VM_EXIT_INTR_ERROR_CODE", 5), ("VM_EXIT_INSTRUCTION_LEN", 7),
    )  # fmt: skip
    for name, column in targets:
        values[BY_NAME[name].bit] = columns[column][i] if columns[column] else 0
    gpas = columns[6]
    if gpas:
        for j in range(i, -1, -1):
            if reasons[j] in (48, 49):
                values[BY_NAME["GUEST_PHYSICAL_ADDRESS"].bit] = gpas[j]
                break
    if tracked_rip is not None:
        values[_RIP.bit] = tracked_rip & _U64
    elif columns[1]:
        advance = columns[7][i] if last.advances_rip and columns[7] else 0
        values[_RIP.bit] = (columns[1][i] + advance) & _U64


def _summarise(plans: list[_Plan], seen: Counter[int], sequence: int) -> BatchStats:
    stats = BatchStats(sequence=sequence)
    c = stats.counters
    for index, n in seen.items():
        plan = plans[index]
        stats.exits += n
        c.vmread += plan.vmread * n
        c.vmwrite += plan.vmwrite * n
        c.vmptrld += plan.vmptrld * n
        c.vmclear += plan.vmclear * n
        c.vmxon += plan.vmxon * n
        c.vmxoff += plan.vmxoff * n
        c.hits += plan.hits * n
        c.misses += plan.misses * n
        stats.simulated_seconds += plan.seconds * n
        totals = stats.by_reason.setdefault(plan.reason, ReasonTotals())
        totals.exits += n
        totals.vmread += plan.vmread * n
        totals.vmwrite += plan.vmwrite * n
        totals.simulated_seconds += plan.seconds * n
        stats.vmread_hist[plan.vmread] += n
        stats.vmwrite_hist[plan.vmwrite] += n
        stats.latency_hist[plan.seconds] += n
    return stats
