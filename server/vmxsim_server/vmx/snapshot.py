"""vCPU snapshots: one vCPU, its VM's memory and its engine's run as versioned bytes.

Format (version 1)::

    b"VMXSNAP" | version: uint16 big-endian | CRC32 of the payload: uint32 big-endian | payload

The payload is zlib-compressed JSON. VMCS values and cache masks are stored by field name, not
by bit position, so the meaning of a snapshot does not depend on the order of the field table.
``load`` checks the magic, the version, the CRC, the inflated size (``max_bytes``: a small
payload may inflate to gigabytes) and the type and range of every member, and raises
``SnapshotError`` with a one-line reason for anything it cannot restore, before anything is
built from it:

- every integer against the range its register or counter holds (VMCS values to their field's
  width, 32-bit control capabilities, counters to ``COUNTER_MAX`` so that later runs cannot
  overflow uint64), every flag a JSON boolean, every number finite;
- the vCPU's state as a whole: outside VMX operation it has no VMXON region and no current
  VMCS; in VMX non-root operation it has a current VMCS; pointers are 4 KiB aligned, within
  MAXPHYADDR, and the current VMCS is not the VMXON region.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from .cache import Counters
from .capabilities import Capabilities
from .engine import BatchStats, Engine, ReasonTotals
from .exceptions import SnapshotError, SnapshotTooLarge
from .fields import BY_NAME, FIELDS, Access
from .memory import PhysicalMemory
from .vcpu import INVALID_POINTER, Mode, Vcpu
from .vmcs import LaunchState

__all__ = [
    "COUNTER_MAX",
    "FORMAT_VERSION",
    "MAGIC",
    "Snapshot",
    "dump",
    "load",
    "load_totals",
    "pack",
    "totals_doc",
    "unpack",
]

MAGIC = b"VMXSNAP"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">7sHI")
T = TypeVar("T")
_U64 = (1 << 64) - 1
COUNTER_MAX = (1 << 62) - 1
"""The largest count (exits, instructions, epochs) a snapshot may carry: sums of two and runs
of any length after it stay within uint64."""
_COUNTER_NAMES = tuple(f.name for f in fields(Counters))
_CAPABILITY_NAMES = tuple(f.name for f in fields(Capabilities))
_CAPABILITY_FLAGS = frozenset(f.name for f in fields(Capabilities) if type(f.default) is bool)
_CAPABILITY_HIGH = {
    f.name: 0xFFFF_FFFF if f.name.endswith(("_default1", "_allowed1")) else _U64
    for f in fields(Capabilities)
}
"""The largest value of each integer capability: a control MSR's allowed-0 and allowed-1
settings are 32-bit halves (SDM A.3-A.5); the others are checked by ``Capabilities``."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""The inflated size ``unpack`` allows unless told otherwise (the server passes its limit)."""
_PAGE_MASK = 0xFFF


# --- dump ------------------------------------------------------------------------------------


def _names(mask: int) -> list[str]:
    return [f.name for f in FIELDS if mask >> f.bit & 1]


def _pairs(hist: Counter[Any]) -> list[list[Any]]:
    return [[value, count] for value, count in sorted(hist.items())]


def totals_doc(totals: BatchStats) -> dict[str, Any]:
    """A run's totals as a JSON-ready object (``load_totals`` reads it back exactly)."""
    return {
        "exits": totals.exits,
        "counters": {name: getattr(totals.counters, name) for name in _COUNTER_NAMES},
        "simulated_seconds": totals.simulated_seconds,
        "by_reason": [
            [reason, t.exits, t.vmread, t.vmwrite, t.simulated_seconds]
            for reason, t in sorted(totals.by_reason.items())
        ],
        "vmread_hist": _pairs(totals.vmread_hist),
        "vmwrite_hist": _pairs(totals.vmwrite_hist),
        "latency_hist": _pairs(totals.latency_hist),
        "sequence": totals.sequence,
        "l0": _l0_doc(totals),
    }


def _l0_doc(totals: BatchStats) -> dict[str, Any]:
    """The L0 part of the totals (nested at two levels; optional when loading older files)."""
    return {
        "other": dict(sorted(totals.other.items())),
        "exits": totals.l0_exits,
        "by_cause": dict(sorted(totals.l0_by_cause.items())),
        "hist": _pairs(totals.l0_hist),
        "seconds": totals.l0_seconds,
        "vmcs02_rebuilds": totals.vmcs02_rebuilds,
        "panics": _pairs(totals.panics),
        "by_reason": [[reason, t.l0_exits] for reason, t in sorted(totals.by_reason.items())],
    }


def dump(
    vcpu: Vcpu,
    profile: str,
    mode: str,
    engine: Engine | None = None,
    injected_exits: int = 0,
    current_only: bool = False,
) -> bytes:
    """The snapshot bytes of ``vcpu`` (with its VM's memory), its profile name, latency mode
    and, when given, its engine's totals and cache state. ``current_only``: of the VMCS regions
    only the current one (a batch of exits changes no other), for a replay's checkpoints; the
    restore writes what the snapshot has and leaves the rest of memory alone."""
    memory = vcpu.memory
    regions = memory.regions()
    if current_only:
        regions = {a: r for a, r in regions.items() if a == vcpu.current_pointer}
    doc: dict[str, Any] = {
        "capabilities": {name: getattr(vcpu.capabilities, name) for name in _CAPABILITY_NAMES},
        "profile": profile,
        "mode": mode,
        "vcpu": {
            "mode": vcpu.mode.value,
            "cr0": vcpu.cr0,
            "cr4": vcpu.cr4,
            "msrs": sorted([index, value] for index, value in vcpu.msrs.items()),
            "vmxon_pointer": vcpu.vmxon_pointer,
            "current_pointer": vcpu.current_pointer,
            "vmxon_epoch": vcpu.vmxon_epoch,
            "injected_exits": injected_exits,
        },
        "memory": {
            "words": sorted([address, value] for address, value in memory.words().items()),
            "regions": [
                {
                    "address": address,
                    "launch_state": region.launch_state.value,
                    "launch_epoch": region.launch_epoch,
                    "values": {
                        f.name: region.values[f.bit] for f in FIELDS if region.values[f.bit]
                    },
                }
                for address, region in sorted(regions.items())
            ],
        },
        "engine": None,
        "l0": (engine.latency.l0_name or "") if engine is not None else "",
    }
    if engine is not None:
        valid, asserted, user_exit = engine.cache_state
        doc["engine"] = {
            "totals": totals_doc(engine.totals),
            "cache": {"valid": _names(valid), "asserted": _names(asserted), "user_exit": user_exit},
        }
    return pack(doc)


def pack(doc: dict[str, Any], magic: bytes = MAGIC, version: int = FORMAT_VERSION) -> bytes:
    """A JSON object as versioned bytes: ``magic | version | CRC32 | zlib(JSON)``."""
    payload = zlib.compress(json.dumps(doc, separators=(",", ":")).encode())
    return _HEADER.pack(magic, version, zlib.crc32(payload)) + payload


# --- load ------------------------------------------------------------------------------------


class _Reader:
    """Typed access to the decoded document; every problem names the member's path."""

    def fail(self, path: str, problem: str) -> SnapshotError:
        return SnapshotError(f"snapshot is malformed: {path} {problem}")

    def table(self, doc: Any, path: str) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise self.fail(path, "must be an object")
        return doc

    def items(self, doc: Any, path: str) -> list[Any]:
        if not isinstance(doc, list):
            raise self.fail(path, "must be a list")
        return doc

    def member(self, doc: dict[str, Any], key: str, path: str) -> Any:
        if key not in doc:
            raise self.fail(f"{path}.{key}", "is missing")
        return doc[key]

    def integer(self, value: Any, path: str, low: int = 0, high: int = _U64) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"must be an integer {low}..{high:#x}")
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e300:
            raise self.fail(path, "must be a finite number >= 0")
        return float(value)

    def count(self, value: Any, path: str) -> int:
        return self.integer(value, path, 0, COUNTER_MAX)

    def choice(self, value: Any, path: str, choices: dict[str, T]) -> T:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)}")
        return choices[value]

    def text(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, "must be a non-empty string")
        return value

    def flag(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false")
        return value

    def pairs(
        self, value: Any, path: str, key_high: int = _U64, value_high: int = _U64
    ) -> list[tuple[int, int]]:
        result = []
        for i, pair in enumerate(self.items(value, path)):
            if not isinstance(pair, list) or len(pair) != 2:
                raise self.fail(f"{path}[{i}]", "must be a [key, value] pair")
            result.append(
                (
                    self.integer(pair[0], f"{path}[{i}]", 0, key_high),
                    self.integer(pair[1], f"{path}[{i}]", 0, value_high),
                )
            )
        return result

    def mask(self, value: Any, path: str) -> int:
        mask = 0
        for name in self.items(value, path):
            field = BY_NAME.get(name) if isinstance(name, str) else None
            if field is None or field.access is not Access.FULL:
                raise self.fail(path, f"names an unknown VMCS field {name!r}")
            mask |= 1 << field.bit
        return mask


@dataclass
class _Region:
    address: int
    launch_state: LaunchState
    launch_epoch: int
    values: list[int]


@dataclass
class Snapshot:
    """A validated snapshot: what ``load`` returns and ``restore_*`` rebuilds from."""

    capabilities: Capabilities
    profile: str
    mode: str
    vcpu_state: dict[str, Any]
    words: list[tuple[int, int]]
    regions: list[_Region]
    totals: BatchStats | None
    cache_state: tuple[int, int, bool] | None
    injected_exits: int
    l0: str = ""
    """The L0 model asked for at creation (``--l0``); empty = the profile's default."""

    def restore_memory(self, memory: PhysicalMemory) -> None:
        """Write the snapshot's memory words and VMCS regions into ``memory``."""
        for address, value in self.words:
            memory.write32(address, value)
        for saved in self.regions:
            region = memory.region(saved.address)
            region.values = list(saved.values)
            region.launch_state = saved.launch_state
            region.launch_epoch = saved.launch_epoch

    def restore_vcpu(self, memory: PhysicalMemory) -> Vcpu:
        """A vCPU in the snapshot's state on ``memory`` (whose contents it restores first)."""
        self.restore_memory(memory)
        state = self.vcpu_state
        vcpu = Vcpu(memory, self.capabilities)
        vcpu.mode = state["mode"]
        vcpu.cr0, vcpu.cr4 = state["cr0"], state["cr4"]
        vcpu.msrs = dict(state["msrs"])
        vcpu.vmxon_pointer = state["vmxon_pointer"]
        vcpu.vmxon_epoch = state["vmxon_epoch"]
        vcpu.current_pointer = state["current_pointer"]
        vcpu.current = None
        if vcpu.current_pointer != INVALID_POINTER:
            vcpu.current = memory.region(vcpu.current_pointer)
        return vcpu

    def restore_engine(self, engine: Engine) -> None:
        """Continue the snapshot's run on ``engine`` (its totals and cache state), if it has one."""
        if self.totals is not None and self.cache_state is not None:
            engine.resume_from(self.totals, self.cache_state)


def _header(data: bytes, magic: bytes, version: int, what: str) -> bytes:
    if len(data) < _HEADER.size:
        raise SnapshotError(f"not a vmxsim {what}: {len(data)} bytes is too short")
    found, found_version, crc = _HEADER.unpack_from(data)
    if found != magic:
        raise SnapshotError(f"not a vmxsim {what}: the data does not start with {magic!r}")
    if found_version != version:
        raise SnapshotError(
            f"{what} format version {found_version} is not supported (this server reads version"
            f" {version})"
        )
    payload = data[_HEADER.size :]
    if zlib.crc32(payload) != crc:
        raise SnapshotError(f"{what} is corrupted: its CRC32 does not match its contents")
    return payload


def _inflate(payload: bytes, max_bytes: int, what: str) -> bytes:
    """The zlib ``payload`` inflated, never more than ``max_bytes`` of it held in memory."""
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(payload, max_bytes + 1)
    except zlib.error as exc:
        raise SnapshotError(f"{what} is corrupted: {exc}") from None
    if len(inflated) > max_bytes:
        raise SnapshotTooLarge(f"{what} inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise SnapshotError(f"{what} is corrupted: its compressed data is cut short")
    return inflated


def unpack(
    data: bytes,
    magic: bytes = MAGIC,
    version: int = FORMAT_VERSION,
    what: str = "snapshot",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """The JSON object of ``pack``'s bytes; ``SnapshotError`` for a wrong magic, version or CRC
    or a payload that inflates to more than ``max_bytes`` (``SnapshotTooLarge``); the ``what``
    of the message names the kind of file, e.g. "replay checkpoint"."""
    payload = _header(data, magic, version, what)
    try:
        doc = json.loads(_inflate(payload, max_bytes, what), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise SnapshotError(f"{what} is corrupted: {exc}") from None
    return _Reader().table(doc, what)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_totals(doc: Any, path: str = "totals") -> BatchStats:
    """The ``BatchStats`` of ``totals_doc``'s object; ``SnapshotError`` naming a bad member."""
    return _totals(_Reader(), doc, path)


def _capabilities(r: _Reader, doc: dict[str, Any]) -> Capabilities:
    raw = r.table(r.member(doc, "capabilities", "snapshot"), "capabilities")
    values: dict[str, Any] = {}
    for name in _CAPABILITY_NAMES:
        value = r.member(raw, name, "capabilities")
        if name in _CAPABILITY_FLAGS:
            values[name] = r.flag(value, f"capabilities.{name}")
        else:
            values[name] = r.integer(value, f"capabilities.{name}", 0, _CAPABILITY_HIGH[name])
    try:
        return Capabilities(**values)
    except (TypeError, ValueError) as exc:
        raise r.fail("capabilities", f"are invalid: {exc}") from None


def _vcpu_state(r: _Reader, doc: dict[str, Any], limit: int) -> dict[str, Any]:
    raw = r.table(r.member(doc, "vcpu", "snapshot"), "vcpu")
    mode = r.choice(r.member(raw, "mode", "vcpu"), "vcpu.mode", {m.value: m for m in Mode})
    vmxon = r.member(raw, "vmxon_pointer", "vcpu")
    state = {
        "mode": mode,
        "cr0": r.integer(r.member(raw, "cr0", "vcpu"), "vcpu.cr0"),
        "cr4": r.integer(r.member(raw, "cr4", "vcpu"), "vcpu.cr4"),
        "msrs": r.pairs(r.member(raw, "msrs", "vcpu"), "vcpu.msrs", 0xFFFF_FFFF),
        "vmxon_pointer": None if vmxon is None else r.integer(vmxon, "vcpu.vmxon_pointer"),
        "current_pointer": r.integer(
            r.member(raw, "current_pointer", "vcpu"), "vcpu.current_pointer"
        ),
        "vmxon_epoch": r.count(r.member(raw, "vmxon_epoch", "vcpu"), "vcpu.vmxon_epoch"),
        "injected_exits": r.count(r.member(raw, "injected_exits", "vcpu"), "vcpu.injected_exits"),
    }
    _check_vmx_state(r, state, limit)
    return state


def _check_vmx_state(r: _Reader, state: dict[str, Any], limit: int) -> None:
    """The vCPU's VMX state as a whole: what its mode needs, and pointers a VMXON, VMCLEAR or
    VMPTRLD could have left (SDM 31.3: 4 KiB aligned, within MAXPHYADDR)."""
    mode, vmxon, current = state["mode"], state["vmxon_pointer"], state["current_pointer"]
    if mode is Mode.OFF and (vmxon is not None or current != INVALID_POINTER):
        raise r.fail("vcpu", "is outside VMX operation but has a VMXON region or current VMCS")
    if mode is not Mode.OFF and vmxon is None:
        raise r.fail("vcpu.vmxon_pointer", f"must be set in VMX {mode.value} operation")
    if mode is Mode.NON_ROOT and current == INVALID_POINTER:
        raise r.fail("vcpu.current_pointer", "must name a VMCS in VMX non-root operation")
    for name, pointer in (("vmxon_pointer", vmxon), ("current_pointer", current)):
        if pointer not in (None, INVALID_POINTER) and (pointer & _PAGE_MASK or pointer >= limit):
            raise r.fail(f"vcpu.{name}", f"{pointer:#x} is not a 4 KiB page below {limit:#x}")
    if current == vmxon:
        raise r.fail("vcpu.current_pointer", "is the VMXON region")


def _region(r: _Reader, raw: Any, path: str) -> _Region:
    raw = r.table(raw, path)
    states = {s.value: s for s in LaunchState}
    state = r.choice(r.member(raw, "launch_state", path), f"{path}.launch_state", states)
    values = [0] * len(FIELDS)
    for name, value in r.table(r.member(raw, "values", path), f"{path}.values").items():
        field = BY_NAME.get(name)
        if field is None or field.access is not Access.FULL:
            raise r.fail(f"{path}.values", f"names an unknown VMCS field {name!r}")
        values[field.bit] = r.integer(value, f"{path}.values.{name}", 0, field.mask)
    return _Region(
        address=r.integer(r.member(raw, "address", path), f"{path}.address"),
        launch_state=state,
        launch_epoch=r.integer(
            r.member(raw, "launch_epoch", path), f"{path}.launch_epoch", -1, COUNTER_MAX
        ),
        values=values,
    )


def _totals(r: _Reader, raw: Any, path: str) -> BatchStats:
    raw = r.table(raw, path)
    counters = r.table(r.member(raw, "counters", path), f"{path}.counters")
    totals = BatchStats(
        exits=r.count(r.member(raw, "exits", path), f"{path}.exits"),
        counters=Counters(
            **{
                n: r.count(r.member(counters, n, path), f"{path}.counters.{n}")
                for n in _COUNTER_NAMES
            }
        ),
        simulated_seconds=r.number(r.member(raw, "simulated_seconds", path), path),
        sequence=r.count(r.member(raw, "sequence", path), f"{path}.sequence"),
    )
    for i, row in enumerate(r.items(r.member(raw, "by_reason", path), f"{path}.by_reason")):
        where = f"{path}.by_reason[{i}]"
        if not isinstance(row, list) or len(row) != 5:
            raise r.fail(where, "must be [reason, exits, vmread, vmwrite, seconds]")
        reason = r.integer(row[0], where, 0, 0xFFFF)
        exits, vmread, vmwrite = (r.count(v, where) for v in row[1:4])
        totals.by_reason[reason] = ReasonTotals(exits, vmread, vmwrite, r.number(row[4], where))
    for name in ("vmread_hist", "vmwrite_hist"):
        pairs = r.pairs(r.member(raw, name, path), f"{path}.{name}", COUNTER_MAX, COUNTER_MAX)
        getattr(totals, name).update(dict(pairs))
    for i, pair in enumerate(r.items(r.member(raw, "latency_hist", path), f"{path}.latency_hist")):
        where = f"{path}.latency_hist[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise r.fail(where, "must be a [seconds, count] pair")
        totals.latency_hist[r.number(pair[0], where)] += r.count(pair[1], where)
    if "l0" in raw:
        _load_l0(r, r.table(raw["l0"], f"{path}.l0"), f"{path}.l0", totals)
    return totals


def _counts_by_name(r: _Reader, raw: Any, path: str) -> dict[str, int]:
    found = {}
    for name, count in r.table(raw, path).items():
        found[r.text(name, path)] = r.count(count, f"{path}.{name}")
    return found


def _load_l0(r: _Reader, raw: dict[str, Any], path: str, totals: BatchStats) -> None:
    totals.other.update(_counts_by_name(r, r.member(raw, "other", path), f"{path}.other"))
    totals.l0_exits = r.count(r.member(raw, "exits", path), f"{path}.exits")
    totals.l0_by_cause.update(
        _counts_by_name(r, r.member(raw, "by_cause", path), f"{path}.by_cause")
    )
    hist = r.pairs(r.member(raw, "hist", path), f"{path}.hist", COUNTER_MAX, COUNTER_MAX)
    totals.l0_hist.update(dict(hist))
    totals.l0_seconds = r.number(r.member(raw, "seconds", path), f"{path}.seconds")
    rebuilds = r.member(raw, "vmcs02_rebuilds", path)
    totals.vmcs02_rebuilds = r.count(rebuilds, f"{path}.vmcs02_rebuilds")
    panics = r.pairs(r.member(raw, "panics", path), f"{path}.panics", 0xFFFF, COUNTER_MAX)
    totals.panics.update(dict(panics))
    by_reason = r.pairs(r.member(raw, "by_reason", path), f"{path}.by_reason", 0xFFFF, COUNTER_MAX)
    for reason, l0_exits in by_reason:
        if reason in totals.by_reason:
            totals.by_reason[reason].l0_exits = l0_exits


def _l0_name(r: _Reader, value: Any) -> str:
    if not isinstance(value, str):
        raise r.fail("l0", "must be a string (an L0 model name, or empty)")
    return value


def load(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Snapshot:
    """Validate and decode snapshot bytes (inflating to at most ``max_bytes``); raises
    ``SnapshotError`` with a one-line reason."""
    doc = unpack(data, max_bytes=max_bytes)
    r = _Reader()
    regions = r.table(r.member(doc, "memory", "snapshot"), "memory")
    capabilities = _capabilities(r, doc)
    state = _vcpu_state(r, doc, capabilities.physical_address_limit)
    snapshot = Snapshot(
        capabilities=capabilities,
        profile=r.text(r.member(doc, "profile", "snapshot"), "profile"),
        mode=r.text(r.member(doc, "mode", "snapshot"), "mode"),
        vcpu_state=state,
        words=r.pairs(r.member(regions, "words", "memory"), "memory.words", _U64, 0xFFFF_FFFF),
        regions=[
            _region(r, raw, f"memory.regions[{i}]")
            for i, raw in enumerate(
                r.items(r.member(regions, "regions", "memory"), "memory.regions")
            )
        ],
        totals=None,
        cache_state=None,
        injected_exits=state["injected_exits"],
        l0=_l0_name(r, doc.get("l0", "")),
    )
    engine = r.member(doc, "engine", "snapshot")
    if engine is not None:
        engine = r.table(engine, "engine")
        cache = r.table(r.member(engine, "cache", "engine"), "engine.cache")
        snapshot.totals = _totals(r, r.member(engine, "totals", "engine"), "engine.totals")
        snapshot.cache_state = (
            r.mask(r.member(cache, "valid", "engine.cache"), "engine.cache.valid"),
            r.mask(r.member(cache, "asserted", "engine.cache"), "engine.cache.asserted"),
            r.flag(r.member(cache, "user_exit", "engine.cache"), "engine.cache.user_exit"),
        )
        # injected exits count in the engine's totals on restore (one exit counter)
        if snapshot.totals.exits + snapshot.injected_exits > COUNTER_MAX:
            raise r.fail("vcpu.injected_exits", f"with engine.totals.exits exceeds {COUNTER_MAX}")
    limit = snapshot.capabilities.physical_address_limit
    for address, _ in snapshot.words:
        if address % 4 or address + 4 > limit:
            raise r.fail("memory.words", f"has an address {address:#x} outside memory")
    addresses = [region.address for region in snapshot.regions]
    if len(set(addresses)) != len(addresses):
        raise r.fail("memory.regions", "lists an address twice")
    for address in addresses:
        if address & _PAGE_MASK or address >= limit:
            raise r.fail("memory.regions", f"has an address {address:#x} outside memory")
    return snapshot
