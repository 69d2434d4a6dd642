"""The field-at-a-time interpreter of a profile: the specification the compiled, aggregating engine
is checked against, and the naive baseline its benchmark is compared with.

It does per exit what the engine does (order: ``plans.py``), one field access at a time through
``VmcsCache``: write the exit information, invalidate the cache, run the profile's sections
(HAXM's load/put around handler-time instructions), flush, enter, and price the exit. Nested, every
executed instruction goes to the L0 model in order (``l0.L0Exit``, the model itself, shared).
No compilation, no memoisation, no aggregation. A panicking exit runs nothing and appears in the
per-exit lists with zeros (so they stay aligned with the input) and in ``panics``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .cache import CachePolicy, Counters, VmcsCache
from .fields import BY_NAME, FIELDS, Field, Kind
from .l0 import AFTER_ENTRY, L0Exit
from .latency import LatencyModel
from .profiles import Instruction, Profile, Section
from .records import ExitRecord
from .vcpu import write_exit_information

__all__ = ["ReferenceResult", "run_reference"]

_RIP = BY_NAME["GUEST_RIP"]


class ReferenceResult:
    """Totals and per-exit lists of a reference run."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.simulated_seconds = 0.0
        self.per_exit_vmread: list[int] = []
        self.per_exit_vmwrite: list[int] = []
        self.per_exit_seconds: list[float] = []
        self.per_exit_l0_exits: list[int] = []
        self.values: list[int] = []
        self.other: Counter[str] = Counter()
        self.l0_by_cause: Counter[str] = Counter()
        self.l0_seconds = 0.0
        self.vmcs02_rebuilds = 0
        self.panics: Counter[int] = Counter()


class _Interpreter:
    def __init__(self, profile: Profile, values: list[int], result: ReferenceResult) -> None:
        self.profile = profile
        self.policy: CachePolicy = profile.policy
        self.cache = VmcsCache(values, profile.policy)
        self.result = result
        self.asserted: set[int] = set()
        self.rip_target = 0
        self.l0: L0Exit | None = None
        self.wrap = ""
        self.loaded_for_handler = False
        self.cleared = False

    def load(self) -> None:
        self.instructions(self.profile.vmcs_load.instructions)
        c = self.cache.counters
        c.vmxon += 1
        c.vmptrld += 1
        if self.l0 is not None:
            self.l0.vmxon()
            self.l0.vmptrld()

    def put(self) -> None:
        c = self.cache.counters
        c.vmclear += 1
        c.vmxoff += 1
        if self.l0 is not None:
            self.l0.vmclear()
            self.l0.vmxoff()
        self.cleared = True
        self.instructions(self.profile.vmcs_put.instructions)

    def instructions(self, rows: tuple[Instruction, ...]) -> None:
        for row in rows:
            self.result.other[row.op] += row.count
            if self.l0 is not None:
                self.l0.other(row)

    def _around(self, f: Field, write: bool, executed: bool) -> None:
        """After one access: when it executed an instruction, the load before it and the put
        after it as the handler needs (the cache access touches no L0 state, so feeding L0 the
        load first keeps the order: load, access, put)."""
        if not executed:
            return
        if self.wrap == "each" or (self.wrap == "once" and not self.loaded_for_handler):
            self.load()
            self.loaded_for_handler = True
        if self.l0 is not None:
            (self.l0.vmwrite if write else self.l0.vmread)(f)
        if self.wrap == "each":
            self.put()
            self.loaded_for_handler = False

    def section(self, section: Section) -> None:
        cache, c = self.cache, self.cache.counters
        for f in section.reads:
            before = c.vmread
            cache.read(f)
            self._around(f, False, c.vmread > before)
        for f in section.writes:
            changed = None
            if f.name in self.policy.write_if_changed:
                changed = f.kind is Kind.GUEST or f.bit not in self.asserted
                self.asserted.add(f.bit)
            value = self.rip_target if f is _RIP else cache.values[f.bit]
            before = c.vmwrite
            cache.write(f, value, changed)
            self._around(f, True, c.vmwrite > before)
        self.instructions(section.instructions)

    def flush(self) -> None:
        cache = self.cache
        dirty = cache.dirty
        cache.flush()
        if self.l0 is not None:
            for f in FIELDS:
                if dirty >> f.bit & 1:
                    self.l0.vmwrite(f)


def run_reference(
    profile: Profile, latency: LatencyModel, records: Iterable[ExitRecord]
) -> ReferenceResult:
    """Run exits field at a time; returns exact totals and per-exit counts."""
    result = ReferenceResult()
    values = [0] * len(FIELDS)
    interpreter = _Interpreter(profile, values, result)
    cache = interpreter.cache
    c = cache.counters
    model = latency.l0_for(profile)
    for record in records:
        handler = profile.handler(record.reason & 0xFFFF)
        write_exit_information(values, record)
        if handler.panic:
            result.panics[record.reason & 0xFFFF] += 1
            result.per_exit_vmread.append(0)
            result.per_exit_vmwrite.append(0)
            result.per_exit_seconds.append(0.0)
            result.per_exit_l0_exits.append(0)
            continue
        start = Counters()
        start.add(c)
        l0 = interpreter.l0 = L0Exit(model, latency.shadow, AFTER_ENTRY) if model else None
        interpreter.cleared = False
        interpreter.rip_target = (values[_RIP.bit] + record.instruction_len) & _RIP.mask
        cache.vm_exit()
        interpreter.section(profile.after_exit)
        if profile.reload_vmcs:
            interpreter.put()
        if profile.reload_vmcs and not profile.handler_vmcs_loaded:
            interpreter.wrap = "once" if handler.wrap_once else "each"
        interpreter.section(handler)
        if interpreter.loaded_for_handler:
            interpreter.put()
            interpreter.loaded_for_handler = False
        interpreter.wrap = ""
        if profile.reload_vmcs:
            interpreter.load()
        interpreter.section(handler.entry)
        if handler.user_exit:
            interpreter.section(profile.after_user_exit)
        interpreter.section(profile.before_entry)
        interpreter.flush()
        if l0 is not None:
            l0.entry(launch=interpreter.cleared)
        reads, writes = c.vmread - start.vmread, c.vmwrite - start.vmwrite
        seconds = latency.exit_cycles(
            record.reason & 0xFFFF, reads, writes, c.vmptrld - start.vmptrld,
            c.vmclear - start.vmclear, c.vmxon - start.vmxon + c.vmxoff - start.vmxoff, l0,
        ) / latency.clock_hz  # fmt: skip
        result.per_exit_vmread.append(reads)
        result.per_exit_vmwrite.append(writes)
        result.per_exit_seconds.append(seconds)
        result.simulated_seconds += seconds
        if l0 is not None:
            result.per_exit_l0_exits.append(l0.exits)
            result.l0_by_cause.update(l0.by_cause)
            result.l0_seconds += l0.cycles / latency.clock_hz
            result.vmcs02_rebuilds += l0.rebuilds
        else:
            result.per_exit_l0_exits.append(0)
    result.counters = c
    result.values = values
    return result
