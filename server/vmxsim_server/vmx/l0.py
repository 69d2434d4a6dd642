"""L0 models: what an outer hypervisor does with each instruction its L1 guest hypervisor executes.

A nested run (DESIGN.md "Nested virtualization at two levels") has an L1 profile (which instructions
L1 executes per exit of its L2) and an L0 model, a data file ``l0/<name>.toml`` (schema 1; every
price carries ``value``, ``status`` = sourced | derived | assumption and ``source``, as in
``latency.toml``):

```toml
schema = 1
name = "kvm-4.17"                       # = the file name
title = "..."; description = "..."
[[sources]]                             # repo, commit (or version tag), path, functions, note
[base]
nested_l2_exit_cycles = {...}           # L2 exit -> L0 -> reflected to L1 -> L1's VMRESUME -> L0 ->
                                        # L2, with no other L0 exit on the way (the entry's own
                                        # round trip is in here, not in VMRESUME's price)
l1_exit_roundtrip_cycles = {...}        # one L1 instruction exiting to L0 and back, trivial handler
[shadow]                                # the VMCS-shadowing option (mode nested-shadow)
available = true
read = ["GUEST_RIP", ...]               # VMREAD of these runs in L1 without an exit
write = [...]                           # VMWRITE of these likewise (also the "shadow-listed" set)
nested_l2_exit_cycles = {...}           # optional: the base when L0 shadows (else [base]'s)
[msr]                                   # L1's MSR bitmap as L0 leaves it
read_passthrough = ["IA32_FS_BASE", ...]; write_passthrough = [...]
[instructions.default]                  # any op without a table of its own (required)
exits = "always"; cost_cycles = {...}
[instructions.<OP>]                     # OP from l1_instructions.OPS, VMX ones included
exits = "always" | "never" | "unless_shadowed" | "unless_passthrough" | "first_since_l0_exit"
operands = { CR3 = "never", CR8 = "never" }   # per-operand override of ``exits``
cost_cycles = {...}                     # L0's work for one exit of this op, beyond the round trip
# op-specific, all optional (0 / "never" when absent):
dirties_vmcs12 = "always" | "never" | "unless_shadow_listed"   # VMWRITE, VMPTRLD (new pointer)
same_pointer_cost_cycles = {...}        # VMPTRLD of the vmcs12 that is already current
shadow_sync_cycles = {...}              # VMPTRLD in shadow mode: vmcs12 -> shadow VMCS copy
rebuild_cycles = {...}                  # VMLAUNCH/VMRESUME: full vmcs02 preparation (dirty/new)
first_entry_cycles = {...}              # VMLAUNCH/VMRESUME: first entry on a new vmcs02 (checks)
```

``exits`` rules: ``unless_shadowed`` exits except in mode nested-shadow for a field in
``shadow.read`` (VMREAD) / ``shadow.write`` (VMWRITE); ``unless_passthrough`` exits except for an
MSR in ``msr.read_passthrough`` (RDMSR) / ``msr.write_passthrough`` (WRMSR);
``first_since_l0_exit`` is KVM's MOV-DR handling (``KVM_DEBUGREG_WONT_EXIT``): the first one after
any L0 exit exits, L0 then clears MOV-DR exiting until its next exit re-arms it. The L2 exit that
starts every L1 handler is itself an L0 exit, so each L2 exit starts armed.

State L0 keeps across instructions (``L0State``), with fixed meaning:
- VMXON allocates nested state (vmcs02 becomes NEW, nothing current);
- VMXOFF frees it (``free_nested``: vmcs02 FREED, nothing current, nothing dirty);
- VMPTRLD of a pointer that is not current makes it current and, per ``dirties_vmcs12``, marks
  vmcs12 dirty; of the current pointer it costs ``same_pointer_cost_cycles`` and changes nothing;
- VMCLEAR releases the current vmcs12 (written back): nothing current;
- VMWRITE that exits marks vmcs12 dirty per ``dirties_vmcs12`` (a shadowed one that does not exit
  never dirties: L0 syncs the shadow VMCS on every nested entry, which is in the base);
- VMLAUNCH/VMRESUME (always counted as an L0 exit; the engine issues VMLAUNCH when the exit's
  handling cleared the VMCS, VMRESUME otherwise): a dirty vmcs12 or a NEW vmcs02 costs
  ``rebuild_cycles`` and counts one vmcs02 rebuild; a NEW vmcs02 also ``first_entry_cycles``.
  After it vmcs02 is READY, vmcs12 clean and current.
Every L2 exit therefore starts in ``AFTER_ENTRY``; the state is still part of the engine's
plan key, so a model that changes this needs no engine change.

``load_l0`` accepts a bundled name or a ``.toml`` path; problems are ``ProfileError``s naming the
file and key.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from .bundled import BundledFiles
from .exceptions import InvalidArgument, ProfileError
from .fields import BY_NAME, Field
from .l1_instructions import OPS, Op, operand_of
from .parameters import Parameter, parse_parameter
from .profiles import Instruction, Source

__all__ = [
    "AFTER_ENTRY",
    "EXIT_RULES",
    "L0Exit",
    "L0Model",
    "L0State",
    "OpRule",
    "available_l0_models",
    "load_l0",
    "parse_l0",
]

EXIT_RULES = ("always", "never", "unless_shadowed", "unless_passthrough", "first_since_l0_exit")
_DIRTY_RULES = ("always", "never", "unless_shadow_listed")
_TOP_KEYS = {
    "schema", "name", "title", "description", "sources", "base", "shadow", "msr", "instructions",
}  # fmt: skip
_OP_KEYS = {
    "exits", "operands", "cost_cycles", "dirties_vmcs12", "same_pointer_cost_cycles",
    "shadow_sync_cycles", "rebuild_cycles", "first_entry_cycles",
}  # fmt: skip
_PRICES = (
    "cost_cycles", "same_pointer_cost_cycles", "shadow_sync_cycles", "rebuild_cycles",
    "first_entry_cycles",
)  # fmt: skip
_ZERO = Parameter(0.0, "derived", "not priced: absent from the model file")

FREED, NEW, READY = 0, 1, 2


class L0State(NamedTuple):
    """What L0 remembers between L1 instructions: vmcs02 FREED/NEW/READY, vmcs12 dirty, current."""

    vmcs02: int
    dirty: bool
    current: bool


AFTER_ENTRY = L0State(READY, False, True)
"""After L1's VMLAUNCH/VMRESUME of L2: vmcs02 ready, vmcs12 clean and current."""


@dataclass(frozen=True)
class OpRule:
    """An L0 model's handling of one op: when it exits, per-operand overrides, prices."""

    exits: str
    operands: dict[str, str]
    prices: dict[str, Parameter]
    dirties_vmcs12: str = "never"

    def price(self, name: str) -> float:
        return self.prices.get(name, _ZERO).value


@dataclass(frozen=True)
class L0Model:
    """An outer hypervisor's handling of L1 instructions, as data."""

    name: str
    title: str
    description: str
    sources: tuple[Source, ...]
    base: dict[str, Parameter]
    shadow_available: bool
    shadow_read: int
    shadow_write: int
    shadow_base: Parameter | None
    msr_read_passthrough: frozenset[str]
    msr_write_passthrough: frozenset[str]
    rules: dict[str, OpRule]
    path: str
    params: dict[str, Parameter] = field(default_factory=dict)

    def rule(self, op: str) -> OpRule:
        return self.rules.get(op) or self.rules["default"]

    def base_cycles(self, shadow: bool) -> float:
        """The nested base of one L2 exit (shadow mode may have its own)."""
        if shadow and self.shadow_base is not None:
            return self.shadow_base.value
        return self.base["nested_l2_exit_cycles"].value

    def with_values(self, **values: float) -> L0Model:
        """A copy with some prices replaced (status 'override'), by their ``params`` names
        (``base.nested_l2_exit_cycles``, ``instructions.VMPTRLD.cost_cycles``, ...)."""
        model = self
        for name, value in values.items():
            if name not in self.params:
                raise InvalidArgument(f"unknown L0 parameter {name!r} of {self.name}")
            new = Parameter(float(value), "override", "set by the caller")
            section, _, rest = name.partition(".")
            if section == "base":
                model = replace(model, base={**model.base, rest: new})
            elif section == "shadow":
                model = replace(model, shadow_base=new)
            else:
                op, _, price = rest.partition(".")
                rule = model.rules[op]
                rules = {**model.rules, op: replace(rule, prices={**rule.prices, price: new})}
                model = replace(model, rules=rules)
            model = replace(model, params={**model.params, name: new})
        return model

    def assumptions(self) -> dict[str, str]:
        """Prices whose value is an assumption, with the reason given for it."""
        return {n: p.source for n, p in self.params.items() if p.status == "assumption"}


@dataclass(eq=False)
class L0Exit:
    """One L2 exit's L1 instructions as L0 sees them, fed in execution order.

    Counts L0 exits by cause, L0 cycles (round trips and L0's work), vmcs02 rebuilds, and the
    VMREADs/VMWRITEs that ran natively in L1 because L0 shadows them.
    """

    model: L0Model
    shadow: bool
    state: L0State = AFTER_ENTRY
    exits: int = 0
    by_cause: Counter[str] = field(default_factory=Counter)
    cycles: float = 0.0
    rebuilds: int = 0
    native_reads: int = 0
    native_writes: int = 0
    _dr_armed: bool = True

    def _exit(self, cause: str, rule: OpRule, price: str = "cost_cycles") -> None:
        self.exits += 1
        self.by_cause[cause] += 1
        self.cycles += self.model.base["l1_exit_roundtrip_cycles"].value + rule.price(price)
        self._dr_armed = True

    def _exits(self, op: Op, rule: OpRule, operand: str | None) -> bool:
        how = self._how(rule, operand)
        if how == "never":
            return False
        if how == "unless_passthrough":
            allowed = (
                self.model.msr_read_passthrough
                if op.name == "RDMSR"
                else self.model.msr_write_passthrough
            )
            return operand not in allowed
        if how == "first_since_l0_exit":
            armed, self._dr_armed = self._dr_armed, False
            return armed
        return True  # always; unless_shadowed applies to VMREAD/VMWRITE only

    @staticmethod
    def _how(rule: OpRule, operand: str | None) -> str:
        return rule.operands.get(operand, rule.exits) if operand is not None else rule.exits

    def vmread(self, f: Field) -> None:
        rule = self.model.rule("VMREAD")
        if self._shadowed(rule, self.model.shadow_read, f):
            self.native_reads += 1
            return
        self._exit("VMREAD", rule)

    def vmwrite(self, f: Field) -> None:
        rule = self.model.rule("VMWRITE")
        if self._shadowed(rule, self.model.shadow_write, f):
            self.native_writes += 1
            return
        self._exit("VMWRITE", rule)
        listed = self.model.shadow_write >> f.bit & 1
        if rule.dirties_vmcs12 == "always" or (
            rule.dirties_vmcs12 == "unless_shadow_listed" and not listed
        ):
            self.state = self.state._replace(dirty=True)

    def _shadowed(self, rule: OpRule, mask: int, f: Field) -> bool:
        if rule.exits == "never":
            return True
        return rule.exits == "unless_shadowed" and self.shadow and bool(mask >> f.bit & 1)

    def vmptrld(self) -> None:
        rule = self.model.rule("VMPTRLD")
        if self.state.current:
            self._exit("VMPTRLD", rule, "same_pointer_cost_cycles")
            return
        self._exit("VMPTRLD", rule)
        if self.shadow:
            self.cycles += rule.price("shadow_sync_cycles")
        dirty = self.state.dirty or rule.dirties_vmcs12 != "never"
        self.state = self.state._replace(current=True, dirty=dirty)

    def vmclear(self) -> None:
        self._exit("VMCLEAR", self.model.rule("VMCLEAR"))
        self.state = self.state._replace(current=False)

    def vmxon(self) -> None:
        self._exit("VMXON", self.model.rule("VMXON"))
        self.state = L0State(NEW, False, False)

    def vmxoff(self) -> None:
        self._exit("VMXOFF", self.model.rule("VMXOFF"))
        self.state = L0State(FREED, False, False)

    def other(self, instruction: Instruction) -> None:
        op = OPS[instruction.op]
        rule = self.model.rule(op.name)
        for _ in range(instruction.count):
            if self._exits(op, rule, instruction.operand):
                self._exit(op.cause, rule)
                if self._how(rule, instruction.operand) == "first_since_l0_exit":
                    self._dr_armed = False  # L0 stops MOV-DR exiting until its next exit

    def entry(self, launch: bool) -> None:
        """L1's VMLAUNCH/VMRESUME of L2; its round trip is in the base, not added here."""
        op = "VMLAUNCH" if launch else "VMRESUME"
        rule = self.model.rule(op)
        self.exits += 1
        self.by_cause[op] += 1
        self.cycles += rule.price("cost_cycles")
        if self.state.dirty or self.state.vmcs02 == NEW:
            self.rebuilds += 1
            self.cycles += rule.price("rebuild_cycles")
        if self.state.vmcs02 == NEW:
            self.cycles += rule.price("first_entry_cycles")
        self._dr_armed = True
        self.state = AFTER_ENTRY


# --- loading -----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ProfileError:
        return ProfileError(self.path, key, problem)

    def table(self, data: dict[str, Any], key: str, allowed: set[str] | None) -> dict[str, Any]:
        value = data.get(key.rsplit(".", 1)[-1], {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        unknown = set(value) - allowed if allowed is not None else set()
        if unknown:
            raise self.fail(
                key, f"unknown keys {sorted(unknown)} (allowed: {sorted(allowed or ())})"
            )
        return value

    def mask(self, data: dict[str, Any], key: str) -> int:
        value = data.get(key.rsplit(".", 1)[-1], [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of VMCS field names")
        mask = 0
        for i, name in enumerate(value):
            f = BY_NAME.get(name) if isinstance(name, str) else None
            if f is None:
                raise self.fail(f"{key}[{i}]", f"unknown VMCS field {name!r}")
            mask |= 1 << f.bit
        return mask

    def msrs(self, data: dict[str, Any], key: str) -> frozenset[str]:
        value = data.get(key.rsplit(".", 1)[-1], [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of MSR names or hex numbers")
        found = set()
        for i, name in enumerate(value):
            try:
                found.add(operand_of(OPS["RDMSR"], name) or "")
            except ValueError as exc:
                raise self.fail(f"{key}[{i}]", str(exc)) from None
        return frozenset(found)

    def choice(self, data: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
        value = data.get(key.rsplit(".", 1)[-1], default)
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}")
        return str(value)

    def rule(self, op_name: str, raw: Any, key: str, params: dict[str, Parameter]) -> OpRule:
        if not isinstance(raw, dict):
            raise self.fail(key, "must be a table")
        unknown = set(raw) - _OP_KEYS
        if unknown:
            raise self.fail(key, f"unknown keys {sorted(unknown)} (allowed: {sorted(_OP_KEYS)})")
        exits = self.choice(raw, f"{key}.exits", EXIT_RULES, "always")
        operands: dict[str, str] = {}
        op = OPS.get(op_name)
        for operand, how in self.table(raw, f"{key}.operands", None).items():
            if op is None:
                raise self.fail(f"{key}.operands", "the default rule has no operands")
            try:
                name = operand_of(op, operand)
            except ValueError as exc:
                raise self.fail(f"{key}.operands.{operand}", str(exc)) from None
            if how not in EXIT_RULES or name is None:
                raise self.fail(f"{key}.operands.{operand}", f"must be one of {EXIT_RULES}")
            operands[name] = how
        prices = {}
        for price in _PRICES:
            if price in raw:
                where = f"{key}.{price}"
                prices[price] = params[where] = parse_parameter(self.path, where, raw[price])
        if exits != "never" and "cost_cycles" not in prices:
            raise self.fail(f"{key}.cost_cycles", "required for an op that exits")
        dirties = self.choice(raw, f"{key}.dirties_vmcs12", _DIRTY_RULES, "never")
        return OpRule(exits, operands, prices, dirties)


def _sources(r: _Reader, raw: Any) -> tuple[Source, ...]:
    if not isinstance(raw, list):
        raise r.fail("sources", "must be an array of tables ([[sources]])")
    found = []
    for i, item in enumerate(raw):
        key = f"sources[{i}]"
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) and item[k] for k in ("repo", "commit", "path")
        ):
            raise r.fail(key, "needs repo, commit (or version) and path")
        functions = item.get("functions", [])
        if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
            raise r.fail(f"{key}.functions", "must be a list of strings")
        found.append(Source(item["repo"], item["commit"], item["path"], tuple(functions)))
    return tuple(found)


def parse_l0(text: str, path: str) -> L0Model:
    """Validate an L0 model document and compile it."""
    r = _Reader(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise r.fail("-", f"not valid TOML: {exc}") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise r.fail("-", f"unknown top-level keys {sorted(unknown)}")
    if data.get("schema") != 1:
        raise r.fail("schema", "must be 1")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise r.fail("name", "must be a non-empty string")
    if path.endswith(".toml") and Path(path).stem != name:
        raise r.fail("name", f"{name!r} does not match the file name {Path(path).stem!r}")
    params: dict[str, Parameter] = {}
    base_raw = r.table(data, "base", {"nested_l2_exit_cycles", "l1_exit_roundtrip_cycles"})
    base: dict[str, Parameter] = {}
    for key in ("nested_l2_exit_cycles", "l1_exit_roundtrip_cycles"):
        if key not in base_raw:
            raise r.fail(f"base.{key}", "required")
        base[key] = params[f"base.{key}"] = parse_parameter(path, f"base.{key}", base_raw[key])
    shadow = r.table(data, "shadow", {"available", "read", "write", "nested_l2_exit_cycles"})
    available = shadow.get("available", False)
    if not isinstance(available, bool):
        raise r.fail("shadow.available", "must be true or false")
    shadow_base = None
    if "nested_l2_exit_cycles" in shadow:
        where = "shadow.nested_l2_exit_cycles"
        shadow_base = params[where] = parse_parameter(path, where, shadow[where.split(".")[1]])
    msr = r.table(data, "msr", {"read_passthrough", "write_passthrough"})
    rules = {}
    for op_name, raw in r.table(data, "instructions", None).items():
        if op_name != "default" and op_name not in OPS:
            raise r.fail(f"instructions.{op_name}", f"unknown op (one of {', '.join(OPS)})")
        rules[op_name] = r.rule(op_name, raw, f"instructions.{op_name}", params)
    if "default" not in rules:
        raise r.fail("instructions.default", "required (the rule of ops without their own)")
    title, description = data.get("title", name), data.get("description", "")
    if not isinstance(title, str) or not isinstance(description, str):
        raise r.fail("title", "title and description must be strings")
    return L0Model(
        name=name,
        title=title,
        description=description,
        sources=_sources(r, data.get("sources", [])),
        base=base,
        shadow_available=available,
        shadow_read=r.mask(shadow, "shadow.read"),
        shadow_write=r.mask(shadow, "shadow.write"),
        shadow_base=shadow_base,
        msr_read_passthrough=r.msrs(msr, "msr.read_passthrough"),
        msr_write_passthrough=r.msrs(msr, "msr.write_passthrough"),
        rules=rules,
        path=path,
        params=params,
    )


_FILES = BundledFiles("l0", "L0 model", parse_l0)


def available_l0_models() -> list[str]:
    """Names of the L0 models shipped with vmxsim."""
    return _FILES.names()


def load_l0(name_or_path: str) -> L0Model:
    """A bundled L0 model by name, or a model file by path (anything with '/' or '.toml')."""
    return _FILES.load(name_or_path)
