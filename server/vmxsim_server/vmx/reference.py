"""The field-at-a-time interpreter of a profile: the specification the compiled engine is checked
against, and the naive baseline its benchmark is compared with.

It does per exit what the engine does, one field access at a time through ``VmcsCache``: write the
exit information, invalidate the cache, run the profile's sections (counting HAXM's load/put
around handler-time instructions), flush, and price the exit. No compilation, no memoisation.
"""

from __future__ import annotations

from collections.abc import Iterable

from .cache import CachePolicy, Counters, VmcsCache
from .fields import BY_NAME, FIELDS, Field, Kind
from .latency import SHADOWED_FIELDS, LatencyModel
from .profiles import Profile, Section
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
        self.values: list[int] = []


class _Interpreter:
    def __init__(self, profile: Profile, values: list[int]) -> None:
        self.profile = profile
        self.policy: CachePolicy = profile.policy
        self.cache = VmcsCache(values, profile.policy)
        self.asserted: set[int] = set()
        self.shadowed = 0
        self.rip_target = 0

    def _instruction(self, f: Field, before: int, after: int, wrapped: bool) -> None:
        if after == before:
            return
        if f.name in SHADOWED_FIELDS:
            self.shadowed += 1
        if wrapped:
            c = self.cache.counters
            c.vmxon += 1
            c.vmptrld += 1
            c.vmclear += 1
            c.vmxoff += 1

    def section(self, section: Section, wrapped: bool = False) -> None:
        cache, c = self.cache, self.cache.counters
        for f in section.reads:
            before = c.vmread
            cache.read(f)
            self._instruction(f, before, c.vmread, wrapped)
        for f in section.writes:
            changed = None
            if f.name in self.policy.write_if_changed:
                changed = f.kind is Kind.GUEST or f.bit not in self.asserted
                self.asserted.add(f.bit)
            value = self.rip_target if f is _RIP else cache.values[f.bit]
            before = c.vmwrite
            cache.write(f, value, changed)
            self._instruction(f, before, c.vmwrite, wrapped)


def run_reference(
    profile: Profile, latency: LatencyModel, records: Iterable[ExitRecord]
) -> ReferenceResult:
    """Run exits field at a time; returns exact totals and per-exit counts."""
    result = ReferenceResult()
    values = [0] * len(FIELDS)
    interpreter = _Interpreter(profile, values)
    cache = interpreter.cache
    c = cache.counters
    shadow_bits = {BY_NAME[name].bit for name in SHADOWED_FIELDS}
    for record in records:
        start = Counters()
        start.add(c)
        interpreter.shadowed = 0
        write_exit_information(values, record)
        interpreter.rip_target = (values[_RIP.bit] + record.instruction_len) & _RIP.mask
        cache.vm_exit()
        interpreter.section(profile.after_exit)
        if profile.reload_vmcs:
            c.vmclear += 1
            c.vmxoff += 1
        handler = profile.handler(record.reason & 0xFFFF)
        unloaded = profile.reload_vmcs and not profile.handler_vmcs_loaded
        executed = c.vmread + c.vmwrite
        interpreter.section(handler, wrapped=unloaded and not handler.wrap_once)
        if unloaded and handler.wrap_once and c.vmread + c.vmwrite > executed:
            c.vmxon += 1
            c.vmptrld += 1
            c.vmclear += 1
            c.vmxoff += 1
        if profile.reload_vmcs:
            c.vmxon += 1
            c.vmptrld += 1
        if handler.user_exit:
            interpreter.section(profile.after_user_exit)
        interpreter.section(profile.before_entry)
        interpreter.shadowed += sum(1 for bit in shadow_bits if cache.dirty >> bit & 1)
        cache.flush()
        reads, writes = c.vmread - start.vmread, c.vmwrite - start.vmwrite
        seconds = latency.exit_seconds(
            record.reason & 0xFFFF, reads, writes, c.vmptrld - start.vmptrld,
            c.vmclear - start.vmclear, c.vmxon - start.vmxon + c.vmxoff - start.vmxoff,
            interpreter.shadowed,
        )  # fmt: skip
        result.per_exit_vmread.append(reads)
        result.per_exit_vmwrite.append(writes)
        result.per_exit_seconds.append(seconds)
        result.simulated_seconds += seconds
    result.counters = c
    result.values = values
    return result
