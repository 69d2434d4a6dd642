"""Hypervisor profiles: data files saying which VMCS fields a hypervisor reads and writes per exit.

A profile (TOML, schema 1; shipped ones live in ``profiles/``, each citing the commits, files and
functions it was read from) holds:
- ``run.reload_vmcs``: VMXON+VMPTRLD before every entry and VMCLEAR+VMXOFF right after every exit
  (HAXM's ``load_vmcs``/``put_vmcs`` in ``cpu_vmx_execute``);
- ``run.handler_vmcs_loaded``: when false, each VMREAD/VMWRITE a handler actually executes is
  wrapped in its own VMXON+VMPTRLD ... VMCLEAR+VMXOFF (HAXM's ``vmread``/``vmwrite`` helpers);
- ``cache``: the cache policy (``read``, ``write``, ``write_if_changed`` field lists);
- ``default_l0``: the L0 model (``l0/<name>.toml``) that mode ``nested`` runs this profile under
  when no ``--l0`` is given (the L0 its sources were measured on); ``kvm-4.17`` when absent;
- ``after_exit``, ``before_entry``, ``after_user_exit``: reads then writes on every exit, before
  every entry, and before the first entry after a handler returned to user space (per return to
  user space);
- ``handlers.<REASON>`` (and ``handlers.default``): the handler's reads, writes, ``user_exit``,
  ``wrap`` ("each" or "once": how a handler running with the VMCS put away reloads it) and
  ``panic`` (the hypervisor has no handler: it dumps the VMCS and stops the VM, see below),
  ``entry_read``/``entry_write`` (this reason's accesses made on the way to the next entry with
  the VMCS loaded, never wrapped: run right before ``before_entry``, e.g. HAXM's injection after
  an interrupt window) and an optional ``source`` (a citation for the handler as a whole);
- ``vmcs_load`` / ``vmcs_put``: ``instructions`` executed by every VMCS load (before its VMXON +
  VMPTRLD) and every put (after its VMCLEAR + VMXOFF): each ``run.reload_vmcs`` reload and each
  handler wrap (HAXM's ``cpu_vmxroot_enter``/``cpu_vmxroot_leave``).
Every access section and handler may list ``instructions = [{op, operand, count, source}, ...]``:
non-VMX instructions an L0 may intercept (ops and MSR names: ``l1_instructions.py``), executed
after the section's reads and writes, ``count`` times each (default 1). ``source`` is required on
every row (file and function, at the profile's commit). VMX instructions are never rows: they
follow from the field lists and ``run``.
A list may name a field several times: without a cache each occurrence is one instruction.

A panicking handler (``panic = true``) is not an exit the model can price: the hypervisor stops
the VM (HAXM's ``null_handler`` / missing handler -> ``dump_vmcs`` and a VM panic). The engine
counts such exits apart, under ``panics`` by reason, and runs nothing for them: they add no
instructions, no simulated time, no exits to ``exits``/``by_reason``, and leave cache and L0 state
as they were (a replay of a trace recorded on another hypervisor shows how often this one would
have died instead of hiding it in an average).

``load_profile`` accepts a bundled name or a path and reports every problem as a ``ProfileError``
naming the file, the key and the problem.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundled import BundledFiles
from .cache import CachePolicy
from .exceptions import ProfileError, UnknownField
from .exit_reasons import lookup_reason
from .fields import BY_NAME, Field, Kind
from .l1_instructions import OPS, VMX_OPS, operand_of

__all__ = [
    "DEFAULT_L0",
    "Handler",
    "Instruction",
    "Profile",
    "Section",
    "Source",
    "available_profiles",
    "load_profile",
    "parse_profile",
]

_TOP_KEYS = {
    "schema", "name", "title", "description", "sources", "run", "cache", "default_l0",
    "after_exit", "before_entry", "after_user_exit", "handlers", "vmcs_load", "vmcs_put",
}  # fmt: skip
_SOURCE_KEYS = {"repo", "commit", "path", "functions", "note"}
_INSTRUCTION_KEYS = {"op", "operand", "count", "source"}
DEFAULT_L0 = "kvm-4.17"
"""The L0 model of a profile that names none (the seed's host: Ubuntu 18.04, Linux 4.17)."""


@dataclass(frozen=True)
class Source:
    """Where a profile's facts were read: repository, commit, file and functions."""

    repo: str
    commit: str
    path: str
    functions: tuple[str, ...]


@dataclass(frozen=True)
class Instruction:
    """A non-VMX L1 instruction an L0 may intercept: op, normalised operand, count, source."""

    op: str
    operand: str | None
    count: int
    source: str

    @property
    def cause(self) -> str:
        """The L0 exit cause this instruction is counted under (``l1_instructions.OPS``)."""
        return OPS[self.op].cause


@dataclass(frozen=True)
class Section:
    """Reads then writes, as fields (a field may repeat), then other instructions."""

    reads: tuple[Field, ...] = ()
    writes: tuple[Field, ...] = ()
    instructions: tuple[Instruction, ...] = ()


@dataclass(frozen=True)
class Handler(Section):
    """A per-reason handler; ``user_exit`` when it returns to user space before re-entry;
    ``wrap_once`` when, with the VMCS put away, the handler loads it once around all its accesses
    (HAXM's ``exit_cr_access``) instead of once per access (HAXM's ``vmread``/``vmwrite``)."""

    user_exit: bool = False
    wrap_once: bool = False
    panic: bool = False
    entry: Section = Section()
    source: str = ""


@dataclass(frozen=True)
class Profile:
    """A hypervisor's VMCS access model."""

    name: str
    title: str
    description: str
    sources: tuple[Source, ...]
    reload_vmcs: bool
    handler_vmcs_loaded: bool
    policy: CachePolicy
    after_exit: Section
    before_entry: Section
    after_user_exit: Section
    handlers: dict[int, Handler]
    default: Handler
    path: str
    vmcs_load: Section = Section()
    vmcs_put: Section = Section()
    default_l0: str = DEFAULT_L0

    def handler(self, reason: int) -> Handler:
        """The handler for a basic exit reason (``default`` when it has none of its own)."""
        return self.handlers.get(reason, self.default)


class _Reader:
    """Typed access to a parsed TOML document that reports problems with file and key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ProfileError:
        return ProfileError(self.path, key, problem)

    def table(self, data: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(key.rsplit(".", 1)[-1], {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        unknown = set(value) - allowed
        if unknown:
            raise self.fail(key, f"unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
        return value

    def string(self, data: dict[str, Any], key: str, required: bool = True) -> str:
        value = data.get(key.rsplit(".", 1)[-1], "" if not required else None)
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(key, "must be a non-empty string")
        return value

    def boolean(self, data: dict[str, Any], key: str, default: bool) -> bool:
        value = data.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def fields(self, data: dict[str, Any], key: str, writes: bool = False) -> tuple[Field, ...]:
        value = data.get(key.rsplit(".", 1)[-1], [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of VMCS field names")
        found = []
        for i, name in enumerate(value):
            field = BY_NAME.get(name) if isinstance(name, str) else None
            if field is None:
                raise self.fail(f"{key}[{i}]", f"unknown VMCS field {name!r}")
            if writes and field.kind is Kind.READ_ONLY:
                raise self.fail(f"{key}[{i}]", f"{name} is read-only data and cannot be written")
            found.append(field)
        return tuple(found)

    def instructions(self, data: dict[str, Any], key: str) -> tuple[Instruction, ...]:
        value = data.get(key.rsplit(".", 1)[-1], [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of {op, operand, count, source} tables")
        found = []
        for i, row in enumerate(value):
            where = f"{key}[{i}]"
            if not isinstance(row, dict):
                raise self.fail(where, "must be a table {op = ..., source = ...}")
            unknown = set(row) - _INSTRUCTION_KEYS
            if unknown:
                raise self.fail(where, f"unknown keys {sorted(unknown)}")
            name = row.get("op")
            op = OPS.get(name) if isinstance(name, str) else None
            if op is None or op.name in VMX_OPS:
                known = ", ".join(name for name in OPS if name not in VMX_OPS)
                raise self.fail(f"{where}.op", f"unknown op {name!r} (one of {known})")
            try:
                operand = operand_of(op, row.get("operand"))
            except ValueError as exc:
                raise self.fail(f"{where}.operand", str(exc)) from None
            count = row.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise self.fail(f"{where}.count", "must be a positive integer")
            source = self.string(row, f"{where}.source")
            found.append(Instruction(op.name, operand, count, source))
        return tuple(found)

    def section(self, data: dict[str, Any], key: str, fields: bool = True) -> Section:
        allowed = {"read", "write", "instructions"} if fields else {"instructions"}
        table = self.table(data, key, allowed)
        return Section(
            self.fields(table, f"{key}.read"),
            self.fields(table, f"{key}.write", True),
            self.instructions(table, f"{key}.instructions"),
        )

    def handler(self, data: dict[str, Any], key: str) -> Handler:
        allowed = {
            "read", "write", "instructions", "user_exit", "wrap", "panic", "entry_read",
            "entry_write", "source",
        }  # fmt: skip
        table = self.table(data, key, allowed)
        wrap = table.get("wrap", "each")
        if wrap not in ("each", "once"):
            raise self.fail(f"{key}.wrap", 'must be "each" or "once"')
        panic = self.boolean(table, f"{key}.panic", False)
        section = Section(
            self.fields(table, f"{key}.read"),
            self.fields(table, f"{key}.write", True),
            self.instructions(table, f"{key}.instructions"),
        )
        entry = Section(
            self.fields(table, f"{key}.entry_read"), self.fields(table, f"{key}.entry_write", True)
        )
        if panic and (section.reads or section.writes or section.instructions or entry.reads):
            raise self.fail(key, "a panicking handler (panic = true) runs nothing: no accesses")
        return Handler(
            section.reads,
            section.writes,
            section.instructions,
            self.boolean(table, f"{key}.user_exit", False),
            wrap == "once",
            panic,
            entry,
            self.string(table, f"{key}.source", required=False),
        )


def parse_profile(text: str, path: str) -> Profile:
    """Validate a profile document and compile it."""
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
    name = r.string(data, "name")
    stem = Path(path).stem
    if path.endswith(".toml") and stem != name:
        raise r.fail("name", f"{name!r} does not match the file name {stem!r}")
    sources = data.get("sources", [])
    if not isinstance(sources, list):
        raise r.fail("sources", "must be an array of tables ([[sources]])")
    parsed_sources = []
    for i, raw in enumerate(sources):
        key = f"sources[{i}]"
        if not isinstance(raw, dict):
            raise r.fail(key, "must be a table")
        unknown = set(raw) - _SOURCE_KEYS
        if unknown:
            raise r.fail(key, f"unknown keys {sorted(unknown)}")
        functions = raw.get("functions", [])
        if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
            raise r.fail(f"{key}.functions", "must be a list of strings")
        parsed_sources.append(
            Source(
                r.string(raw, f"{key}.repo"),
                r.string(raw, f"{key}.commit"),
                r.string(raw, f"{key}.path"),
                tuple(functions),
            )
        )
    run = r.table(data, "run", {"reload_vmcs", "handler_vmcs_loaded"})
    cache = r.table(data, "cache", {"read", "write", "write_if_changed"})
    try:
        policy = CachePolicy(
            frozenset(f.name for f in r.fields(cache, "cache.read")),
            frozenset(f.name for f in r.fields(cache, "cache.write", True)),
            frozenset(f.name for f in r.fields(cache, "cache.write_if_changed", True)),
        )
    except UnknownField as exc:  # pragma: no cover - fields() already checked the names
        raise r.fail("cache", str(exc)) from None
    if policy.write_mask & policy.changed_mask:
        raise r.fail("cache", "a field cannot be both write-back and write_if_changed")
    handlers_raw = data.get("handlers", {})
    if not isinstance(handlers_raw, dict):
        raise r.fail("handlers", "must be a table of handler tables")
    handlers: dict[int, Handler] = {}
    default = Handler()
    for reason_name in handlers_raw:
        key = f"handlers.{reason_name}"
        handler = r.handler(handlers_raw, key)
        if reason_name == "default":
            default = handler
            continue
        reason = lookup_reason(reason_name)
        if reason is None:
            raise r.fail(key, f"unknown exit reason {reason_name!r}")
        if reason.number in handlers:
            raise r.fail(key, f"a second handler for {reason.name}")
        handlers[reason.number] = handler
    return Profile(
        name=name,
        title=r.string(data, "title", required=False) or name,
        description=r.string(data, "description", required=False),
        sources=tuple(parsed_sources),
        reload_vmcs=r.boolean(run, "run.reload_vmcs", False),
        handler_vmcs_loaded=r.boolean(run, "run.handler_vmcs_loaded", True),
        policy=policy,
        after_exit=r.section(data, "after_exit"),
        before_entry=r.section(data, "before_entry"),
        after_user_exit=r.section(data, "after_user_exit"),
        handlers=handlers,
        default=default,
        path=path,
        vmcs_load=r.section(data, "vmcs_load", fields=False),
        vmcs_put=r.section(data, "vmcs_put", fields=False),
        default_l0=r.string(data, "default_l0", required=False) or DEFAULT_L0,
    )


_FILES = BundledFiles("profiles", "profile", parse_profile)


def available_profiles() -> list[str]:
    """Names of the profiles shipped with vmxsim."""
    return _FILES.names()


def load_profile(name_or_path: str) -> Profile:
    """A bundled profile by name, or a profile file by path (anything with '/' or '.toml')."""
    return _FILES.load(name_or_path)
