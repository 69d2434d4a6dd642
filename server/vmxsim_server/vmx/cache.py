"""The VMCS cache, derived from the field table plus a policy: the Python counterpart of the seed's
X-macro table (intel/haxm PR #130, ``core/include/vmx.h`` ``VMCS_COMPS``: one row
``COMP(cache_r, cache_w, width, name)`` per component, from which the cache struct, the
cached/dirty flags, ``vmcs_read``/``vmcs_write`` and the flush ``vcpu_handle_vmcs_pending`` are
generated).

Per field the policy says:
- ``read``: read-cached. The first read after a VM exit issues a VMREAD (a miss) and fills the
  entry; later reads hit and issue nothing. A write fills the entry too (write-through).
- ``write``: write-back. A write marks the entry dirty and issues nothing; ``flush()`` issues one
  VMWRITE per dirty field. The flush is the last step before VM entry: a cached write after it is
  an error (PR #130 review: "No cached vmcs_write allowed after this point").
- ``write_if_changed``: a VMWRITE is issued only when the value differs from the one in the VMCS
  (what KVM does for HOST_CR3/HOST_CR4 in ``vmx_vcpu_run``).
A VM exit invalidates guest-state and exit-information (read-only) entries and keeps control and
host entries, which only the hypervisor changes.

``VmcsCache`` is the field-at-a-time reference implementation; the engine compiles the same rules
to bitmasks (``engine.py``) and the tests check that both count the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .exceptions import StateError, UnknownField
from .fields import BY_NAME, FIELDS, Field, Kind, kind_mask

__all__ = ["KEEP_ON_EXIT", "CachePolicy", "Counters", "VmcsCache"]

KEEP_ON_EXIT = kind_mask(Kind.CONTROL, Kind.HOST)
"""Cache entries that stay valid across a VM exit: control and host state."""


def _mask(names: frozenset[str], where: str) -> int:
    mask = 0
    for name in names:
        found = BY_NAME.get(name)
        if found is None:
            raise UnknownField(f"{where}: unknown VMCS field {name!r}")
        mask |= 1 << found.bit
    return mask


@dataclass(frozen=True)
class CachePolicy:
    """Which fields are read-cached, write-back, or written only when changed."""

    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    write_if_changed: frozenset[str] = frozenset()
    read_mask: int = field(init=False)
    write_mask: int = field(init=False)
    changed_mask: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_mask", _mask(self.read, "cache.read"))
        object.__setattr__(self, "write_mask", _mask(self.write, "cache.write"))
        object.__setattr__(
            self, "changed_mask", _mask(self.write_if_changed, "cache.write_if_changed")
        )
        both = self.write_mask & self.changed_mask
        if both:
            names = sorted(f.name for f in FIELDS if both >> f.bit & 1)
            raise StateError(f"fields both write-back and write-if-changed: {', '.join(names)}")

    def xmacro_rows(self) -> list[str]:
        """The seed's table rows ``COMP(cache_r, cache_w, width, NAME)`` for this policy."""
        rows = []
        for f in FIELDS:
            cache_r = int(bool(self.read_mask >> f.bit & 1))
            cache_w = int(bool((self.write_mask | self.changed_mask) >> f.bit & 1))
            if cache_r or cache_w:
                rows.append(f"COMP({cache_r}, {cache_w}, {f.width.label}, {f.name})")
        return rows


@dataclass
class Counters:
    """VMX instructions actually executed, and cache hits and misses."""

    vmread: int = 0
    vmwrite: int = 0
    vmptrld: int = 0
    vmclear: int = 0
    vmxon: int = 0
    vmxoff: int = 0
    hits: int = 0
    misses: int = 0

    def add(self, other: Counters) -> None:
        """Accumulate another set of counters into this one."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class VmcsCache:
    """A hypervisor's software cache in front of one VMCS's values (field at a time)."""

    def __init__(self, values: list[int], policy: CachePolicy) -> None:
        self.values = values
        self.policy = policy
        self.cached: dict[int, int] = {}
        self.valid = 0
        self.dirty = 0
        self.flushed = False
        self.counters = Counters()

    def read(self, f: Field) -> int:
        """A hypervisor read of ``f``: a hit, or a VMREAD that may fill the cache."""
        bit = 1 << f.bit
        if self.policy.read_mask & bit:
            if self.valid & bit:
                self.counters.hits += 1
                return self.cached[f.bit]
            self.counters.misses += 1
        self.counters.vmread += 1
        value = self.values[f.bit]
        if self.policy.read_mask & bit:
            self.cached[f.bit] = value
            self.valid |= bit
        return value

    def write(self, f: Field, value: int, changed: bool | None = None) -> None:
        """A hypervisor write of ``f``: deferred, skipped when unchanged, or a VMWRITE.

        ``changed`` overrides the value comparison for write-if-changed fields (the engine's model
        decides it by field kind, see ``engine.py``).
        """
        bit = 1 << f.bit
        value &= f.mask
        if self.policy.write_mask & bit:
            if self.flushed:
                raise StateError(f"cached write of {f.name} after the flush before VM entry")
            self.cached[f.bit] = value
            self.valid |= bit
            self.dirty |= bit
            return
        if changed is None:
            changed = self.values[f.bit] != value
        if self.policy.changed_mask & bit and not changed:
            self.counters.hits += 1
            return
        self.counters.vmwrite += 1
        self.values[f.bit] = value
        if self.policy.read_mask & bit:
            self.cached[f.bit] = value
            self.valid |= bit

    def flush(self) -> int:
        """One VMWRITE per dirty field; the last step before VM entry. Returns the count."""
        written = 0
        dirty = self.dirty
        while dirty:
            low = dirty & -dirty
            bit = low.bit_length() - 1
            self.values[bit] = self.cached[bit]
            written += 1
            dirty ^= low
        self.counters.vmwrite += written
        self.dirty = 0
        self.flushed = True
        return written

    def vm_exit(self) -> None:
        """A VM exit: drop guest-state and exit-information entries, allow cached writes again."""
        self.valid &= KEEP_ON_EXIT
        self.flushed = False
