"""The VMs and vCPUs a server holds, their limits, and who may drive a vCPU.

- Ids are ``vm-N`` and ``vcpu-N``, never reused within a server's life (nor across restarts
  with a state directory, which keeps the counters: ``id_counters``). Each vCPU also has a
  random ``uid``, so a replay's checkpoint can tell its own vCPU from another of the same id.
- Each vCPU owns a core ``Vcpu``, an ``Engine`` (profile + latency mode) and a lock: every core
  call on a vCPU runs under its lock, so calls on one vCPU are serialised and calls on different
  vCPUs run concurrently (the service runs them on worker threads). Memory-touching
  instructions also take their VM's lock, because a VM's memory is shared by its vCPUs.
- At most one stream (Drive or Replay) drives a vCPU at a time (``claim``); a second one gets
  ``StateError``, and so does any other call that would change a claimed vCPU (Execute) or its
  VM's memory (Restore into it). ``stream_slot`` bounds the streams open at once, in total and
  per client.
- Tenancy (tenancy.py): every VM and vCPU records the identity that made it; a ``Caller`` that
  may not see an object gets ``NotFound``, as for an id that does not exist.
- Limits (limits.py) raise ``LimitExceeded`` naming the limit; unknown ids ``NotFound``; every
  change of the VM or vCPU count is reported to the observer.

No gRPC here: the service translates these objects and exceptions to the wire.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .observe import NULL_OBSERVER, Observer
from .quotas import Quotas
from .tenancy import ANYONE, Caller
from .vmx import snapshot as snapshots
from .vmx.capabilities import Capabilities
from .vmx.capability_msrs import with_msrs
from .vmx.engine import BatchStats, Engine
from .vmx.exceptions import (
    InvalidArgument,
    LimitExceeded,
    NotFound,
    StateError,
)
from .vmx.l0 import available_l0_models
from .vmx.latency import LatencyModel
from .vmx.memory import PhysicalMemory
from .vmx.profiles import Profile, available_profiles, load_profile
from .vmx.records import ExitBatch
from .vmx.vcpu import Vcpu

__all__ = ["DEFAULT_PROFILE", "Registry", "VcpuEntry", "VmEntry"]

DEFAULT_PROFILE = "kvm"
T = TypeVar("T")


@dataclass(eq=False)
class VmEntry:
    """A VM: its id, its guest-physical memory and the ids of its vCPUs in creation order.

    ``implicit`` marks a VM made for a vCPU created without a VM id; it goes away with its last
    vCPU, so creating and deleting such vCPUs leaves nothing behind. A VM made by CreateVm stays
    until DeleteVm.
    """

    vm_id: str
    maxphyaddr: int
    memory: PhysicalMemory
    vcpu_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    implicit: bool = False
    owner: str = ""
    """The identity that made it (tenancy.py)."""


@dataclass(eq=False)
class VcpuEntry:
    """A vCPU: the core ``Vcpu`` and ``Engine`` with its profile and mode, and its lock."""

    vcpu_id: str
    vm: VmEntry
    profile: str
    mode: str
    vcpu: Vcpu
    engine: Engine
    lock: threading.Lock = field(default_factory=threading.Lock)
    streaming: bool = False
    temporary: bool = False
    """A replay's own vCPU, deleted with its VM when the replay ends (never saved)."""
    owner: str = ""
    """The identity that made it (tenancy.py)."""
    uid: str = field(default_factory=lambda: secrets.token_hex(8))
    """Random, kept across restarts: tells this vCPU from any other that had its id."""
    changes: int = 0
    """Counts calls that may have changed it, so a periodic save skips unchanged vCPUs."""

    @property
    def exits(self) -> int:
        """Every exit this vCPU handled: driven, replayed and injected (one counter, the engine's
        totals, which GetStats reports too)."""
        return self.engine.totals.exits


def _profile(name: str) -> Profile:
    """A bundled profile by name; a remote caller may not make the server read files."""
    name = name or DEFAULT_PROFILE
    known = available_profiles()
    if name not in known:
        raise InvalidArgument(
            f"unknown profile {name!r} (known: {', '.join(known)})", field="profile"
        )
    return load_profile(name)


class Registry:
    """Every VM and vCPU of one server. Thread-safe."""

    def __init__(
        self,
        max_vcpus: int = 10_000,
        max_streams: int = 64,
        observer: Observer = NULL_OBSERVER,
        **limits: int | float,
    ) -> None:
        """``limits``: any other limit of limits.LIMITS by name (default: its default)."""
        self.quotas = Quotas({**limits, "max_vcpus": max_vcpus, "max_streams": max_streams})
        self.limits = self.quotas.limits
        self.max_vcpus = max_vcpus
        self.max_streams = max_streams
        self.observer = observer
        self._lock = threading.Lock()
        self._vms: dict[str, VmEntry] = {}
        self._vcpus: dict[str, VcpuEntry] = {}
        self._next_vm = 1
        self._next_vcpu = 1
        self._streams = 0
        self._streams_of: Counter[str] = Counter()
        self._vms_of: Counter[str] = Counter()
        self._vcpus_of: Counter[str] = Counter()
        self._latency: dict[str, LatencyModel] = {}

    # --- identity ------------------------------------------------------------------------------

    @property
    def id_counters(self) -> tuple[int, int]:
        """The numbers the next VM and vCPU ids get (a state directory keeps them)."""
        with self._lock:
            return self._next_vm, self._next_vcpu

    def advance_ids(self, next_vm: int, next_vcpu: int) -> None:
        """Never give out ids below these again (a state directory's saved counters)."""
        with self._lock:
            self._next_vm = max(self._next_vm, next_vm)
            self._next_vcpu = max(self._next_vcpu, next_vcpu)

    # --- VMs -----------------------------------------------------------------------------------

    def create_vm(self, maxphyaddr: int = 0, caller: Caller = ANYONE) -> VmEntry:
        """A new empty VM (``maxphyaddr`` 0 = the default capabilities' 46)."""
        maxphyaddr = maxphyaddr or Capabilities().maxphyaddr
        if not 32 <= maxphyaddr <= 52:
            raise InvalidArgument(f"MAXPHYADDR {maxphyaddr} is outside 32..52", field="maxphyaddr")
        with self._lock:
            vm = self._add_vm(maxphyaddr, owner=caller.identity)
        self._counts_changed()
        return vm

    def _add_vm(self, maxphyaddr: int, vm_id: str = "", owner: str = "") -> VmEntry:
        if len(self._vms) >= self.max_vcpus:
            raise LimitExceeded(
                f"this server holds at most {self.max_vcpus} VMs", quota="max_vms",
                limit=self.max_vcpus,
            )  # fmt: skip
        if owner:
            held = self._vms_of[owner] + 1
            self.quotas.check("max_vcpus_per_client", held, f"this client would hold {held} VMs")
        if vm_id:
            self._next_vm = max(self._next_vm, _number(vm_id, "vm") + 1)
        else:
            vm_id, self._next_vm = f"vm-{self._next_vm}", self._next_vm + 1
        vm = VmEntry(vm_id, maxphyaddr, PhysicalMemory(maxphyaddr), owner=owner)
        self._vms[vm.vm_id] = vm
        self._vms_of[owner] += 1
        return vm

    def _drop_vm(self, vm: VmEntry) -> None:
        if self._vms.pop(vm.vm_id, None) is not None:
            self._vms_of[vm.owner] -= 1

    def _drop_vcpu(self, entry: VcpuEntry) -> None:
        del self._vcpus[entry.vcpu_id]
        self._vcpus_of[entry.owner] -= 1

    def list_vms(self, caller: Caller = ANYONE) -> list[VmEntry]:
        """Every VM the caller may see, in creation order."""
        with self._lock:
            return [vm for vm in self._vms.values() if caller.may_see(vm.owner)]

    def get_vm(self, vm_id: str, caller: Caller = ANYONE) -> VmEntry:
        """The VM ``vm_id``; ``NotFound`` when there is none (or the caller may not see it)."""
        with self._lock:
            return self._vm(vm_id, caller)

    def _vm(self, vm_id: str, caller: Caller = ANYONE) -> VmEntry:
        vm = self._vms.get(vm_id)
        if vm is None or not caller.may_see(vm.owner):
            raise NotFound(
                f"no VM {vm_id!r} on this server", resource_type="vm", resource_name=vm_id
            )
        return vm

    def delete_vm(self, vm_id: str, caller: Caller = ANYONE) -> list[str]:
        """Delete a VM and its vCPUs; returns the deleted vCPU ids."""
        with self._lock:
            vm = self._vm(vm_id, caller)
            busy = [i for i in vm.vcpu_ids if self._vcpus[i].streaming]
            if busy:
                raise StateError(f"{vm_id} has vCPUs driven by a stream: {', '.join(busy)}")
            for vcpu_id in vm.vcpu_ids:
                self._drop_vcpu(self._vcpus[vcpu_id])
            self._drop_vm(vm)
        self._counts_changed()
        return list(vm.vcpu_ids)

    # --- vCPUs ---------------------------------------------------------------------------------

    def latency_model(self, mode: str, l0: str = "") -> LatencyModel:
        """The shared (stateless) latency model of a mode and L0 model (empty = each profile's
        default); ``InvalidArgument`` when unknown (a remote caller names bundled models only)."""
        key = f"{mode}/{l0}"
        model = self._latency.get(key)
        if model is None:
            if l0 and l0 not in available_l0_models():
                known = ", ".join(available_l0_models())
                raise InvalidArgument(f"unknown L0 model {l0!r} (known: {known})")
            model = self._latency.setdefault(key, LatencyModel(mode, l0=l0 or None))
        return model

    def create_vcpu(
        self,
        vm_id: str = "",
        profile: str = "",
        mode: str = "native",
        capabilities: dict[str, Any] | None = None,
        l0: str = "",
        caller: Caller = ANYONE,
    ) -> VcpuEntry:
        """A new vCPU outside VMX operation.

        ``vm_id`` empty = a new VM. ``capabilities`` overrides the defaults; MAXPHYADDR defaults
        to the VM's and must equal it.
        """
        loaded = _profile(profile)
        latency = self.latency_model(mode, l0)
        changes = dict(capabilities or {})
        with self._lock:
            vm = self._vm(vm_id, caller) if vm_id else None
            if vm is not None:
                changes.setdefault("maxphyaddr", vm.maxphyaddr)
            caps = _capabilities(changes)
            if vm is not None and caps.maxphyaddr != vm.maxphyaddr:
                raise InvalidArgument(
                    f"MAXPHYADDR {caps.maxphyaddr} differs from {vm.vm_id}'s {vm.maxphyaddr}"
                )
            entry = self._add_vcpu(
                vm, caps, loaded, mode, latency, lambda m: Vcpu(m, caps), owner=caller.identity
            )
        self._counts_changed()
        return entry

    def _add_vcpu(
        self,
        vm: VmEntry | None,
        caps: Capabilities,
        profile: Profile,
        mode: str,
        latency: LatencyModel,
        build: Callable[[PhysicalMemory], Vcpu],
        vcpu_id: str = "",
        owner: str = "",
    ) -> VcpuEntry:
        """Register a vCPU (caller holds ``_lock``); a new VM when ``vm`` is None."""
        if len(self._vcpus) >= self.max_vcpus:
            raise LimitExceeded(
                f"this server holds at most {self.max_vcpus} vCPUs", quota="max_vcpus",
                limit=self.max_vcpus,
            )  # fmt: skip
        if owner:
            held = self._vcpus_of[owner] + 1
            self.quotas.check("max_vcpus_per_client", held, f"this client would hold {held} vCPUs")
        if vcpu_id in self._vcpus:
            raise StateError(f"{vcpu_id} exists already")
        if vm is None:
            vm = self._add_vm(caps.maxphyaddr, owner=owner)
            vm.implicit = True
        with vm.lock:
            vcpu = build(vm.memory)
        if vcpu_id:
            self._next_vcpu = max(self._next_vcpu, _number(vcpu_id, "vcpu") + 1)
        else:
            vcpu_id, self._next_vcpu = f"vcpu-{self._next_vcpu}", self._next_vcpu + 1
        entry = VcpuEntry(
            vcpu_id,
            vm,
            profile.name,
            mode,
            vcpu,
            Engine(vcpu, profile, latency),
            owner=owner,
        )
        self._vcpus[entry.vcpu_id] = entry
        self._vcpus_of[owner] += 1
        vm.vcpu_ids.append(entry.vcpu_id)
        return entry

    def list_vcpus(self, vm_id: str = "", caller: Caller = ANYONE) -> list[VcpuEntry]:
        """Every vCPU the caller may see, or those of one VM, in creation order."""
        with self._lock:
            if vm_id:
                entries = [self._vcpus[i] for i in self._vm(vm_id, caller).vcpu_ids]
            else:
                entries = list(self._vcpus.values())
            return [entry for entry in entries if caller.may_see(entry.owner)]

    def get(self, vcpu_id: str, caller: Caller = ANYONE) -> VcpuEntry:
        """The vCPU ``vcpu_id``; ``NotFound`` when there is none (or the caller may not see
        it)."""
        with self._lock:
            entry = self._vcpus.get(vcpu_id)
        if entry is None or not caller.may_see(entry.owner):
            raise NotFound(
                f"no vCPU {vcpu_id!r} on this server", resource_type="vcpu",
                resource_name=vcpu_id,
            )  # fmt: skip
        return entry

    def delete_vcpu(self, vcpu_id: str, force: bool = False, caller: Caller = ANYONE) -> None:
        """Delete a vCPU; ``StateError`` while a stream drives it. Its VM and memory stay, but
        an implicit VM (made for a vCPU created without a VM id) goes with its last vCPU."""
        with self._lock:
            entry = self._vcpus.get(vcpu_id)
            if entry is None or not caller.may_see(entry.owner):
                raise NotFound(
                    f"no vCPU {vcpu_id!r} on this server", resource_type="vcpu",
                    resource_name=vcpu_id,
                )  # fmt: skip
            if entry.streaming and not force:
                raise StateError(f"{vcpu_id} is driven by a stream; end the stream first")
            self._drop_vcpu(entry)
            entry.vm.vcpu_ids.remove(vcpu_id)
            if entry.vm.implicit and not entry.vm.vcpu_ids:
                self._drop_vm(entry.vm)
        self._counts_changed()

    def _counts_changed(self) -> None:
        with self._lock:
            vms, vcpus = len(self._vms), len(self._vcpus)
        self.observer.on_counts_changed(vms, vcpus)

    # --- streams -------------------------------------------------------------------------------

    @contextmanager
    def stream_slot(self, identity: str = "") -> Iterator[None]:
        """Hold one of ``max_streams`` stream slots, and one of the client's
        ``max_streams_per_client``; ``LimitExceeded`` when none is free."""
        with self._lock:
            if self._streams >= self.max_streams:
                raise LimitExceeded(
                    f"this server serves at most {self.max_streams} streams at once",
                    quota="max_streams", limit=self.max_streams,
                )  # fmt: skip
            held = self._streams_of[identity] + 1
            if identity:
                self.quotas.check(
                    "max_streams_per_client", held, f"this client would have {held} streams open"
                )
            self._streams += 1
            self._streams_of[identity] = held
        try:
            yield
        finally:
            with self._lock:
                self._streams -= 1
                self._streams_of[identity] -= 1

    @contextmanager
    def claim(self, vcpu_id: str, caller: Caller = ANYONE) -> Iterator[VcpuEntry]:
        """Make the calling stream the only one driving ``vcpu_id`` until the block ends."""
        with self._lock:
            entry = self._vcpus.get(vcpu_id)
            if entry is None or not caller.may_see(entry.owner):
                raise NotFound(
                    f"no vCPU {vcpu_id!r} on this server", resource_type="vcpu",
                    resource_name=vcpu_id,
                )  # fmt: skip
            if entry.streaming:
                raise StateError(f"{vcpu_id} is already driven by another stream")
            entry.streaming = True
        try:
            yield entry
        finally:
            with self._lock:
                entry.streaming = False

    # --- core calls ----------------------------------------------------------------------------

    def run_batch(self, entry: VcpuEntry, batch: ExitBatch, per_exit: bool) -> BatchStats:
        """Run a batch of exits on a vCPU (under its lock) and tell the observer."""
        with entry.lock:
            entry.changes += 1
            stats = entry.engine.run_batch(batch, per_exit)
        self.observer.on_batch(entry.profile, entry.mode, stats)
        return stats

    def with_vcpu(self, entry: VcpuEntry, call: Callable[[VcpuEntry], T]) -> T:
        """Run ``call(entry)`` under the vCPU's lock and its VM's memory lock."""
        with entry.lock, entry.vm.lock:
            return call(entry)

    def change_vcpu(self, entry: VcpuEntry, call: Callable[[VcpuEntry], T]) -> T:
        """``with_vcpu`` for a call that may change the vCPU: ``StateError`` while a stream
        drives it (the stream's claim covers every change)."""
        with entry.lock, entry.vm.lock:
            if entry.streaming:
                raise StateError(
                    f"{entry.vcpu_id} is driven by a stream; only that stream may change it"
                )
            entry.changes += 1
            return call(entry)

    def check_memory(
        self,
        entry: VcpuEntry,
        regions: Iterable[int] = (),
        words: Iterable[int] = (),
        msrs: Iterable[int] = (),
    ) -> None:
        """``LimitExceeded`` when adding VMCS regions, memory words (by address) and MSRs (by
        index) would take the vCPU's VM or the vCPU past its limits (caller holds the locks)."""
        msr_change = (entry.vcpu.msrs, msrs, entry.vcpu_id)
        self.quotas.memory(entry.vm.memory, entry.vm.vm_id, regions, words, msr_change)

    def snapshot(self, entry: VcpuEntry, current_only: bool = False) -> bytes:
        """The snapshot bytes of a vCPU (taken between its batches); ``current_only``: of its
        VM's VMCS regions only the current one (``snapshots.dump``)."""
        return self.with_vcpu(
            entry,
            lambda e: snapshots.dump(e.vcpu, e.profile, e.mode, e.engine, 0, current_only),
        )

    def restore(
        self,
        data: bytes,
        vm_id: str = "",
        *,
        vcpu_id: str = "",
        new_vm_id: str = "",
        caller: Caller = ANYONE,
        owner: str | None = None,
        uid: str = "",
    ) -> VcpuEntry:
        """A new vCPU from snapshot bytes, in a new VM or in ``vm_id`` (whose memory receives
        the snapshot's words and VMCS regions). A state directory's restore at start passes the
        saved ``vcpu_id`` and, for a VM not restored yet, ``new_vm_id``; others get new ids.
        Everything is checked before anything is registered: it restores whole or not at all.
        ``owner`` (default: the caller's identity) and ``uid`` are a saved vCPU's own."""
        owner = caller.identity if owner is None else owner
        saved = self.quotas.load(data)
        profile = _profile(saved.profile)
        latency = self.latency_model(saved.mode, saved.l0)
        caps = saved.capabilities
        with self._lock:
            vm = self._vm(vm_id, caller) if vm_id else None
            if vm is not None and vm.maxphyaddr != caps.maxphyaddr:
                raise InvalidArgument(
                    f"the snapshot's MAXPHYADDR {caps.maxphyaddr} differs from {vm.vm_id}'s"
                    f" {vm.maxphyaddr}"
                )
            self.quotas.snapshot(saved)
            if vm is not None:
                self._check_restore_into(vm, saved)
            if vcpu_id in self._vcpus:
                raise StateError(f"{vcpu_id} exists already")
            if vm is None and new_vm_id:
                vm = self._add_vm(caps.maxphyaddr, new_vm_id, owner)
            entry = self._add_vcpu(
                vm, caps, profile, saved.mode, latency, saved.restore_vcpu, vcpu_id, owner
            )
            _restore_totals(saved, entry.engine)
            if uid:
                entry.uid = uid
        self._counts_changed()
        return entry

    def _check_restore_into(self, vm: VmEntry, saved: snapshots.Snapshot) -> None:
        """Restoring into an existing VM: its limits, and no vCPU of it driven by a stream
        (the snapshot's memory is written over the VM's)."""
        busy = [i for i in vm.vcpu_ids if self._vcpus[i].streaming]
        if busy:
            raise StateError(f"{vm.vm_id} has vCPUs driven by a stream: {', '.join(busy)}")
        with vm.lock:
            regions = [region.address for region in saved.regions]
            words = [address for address, _ in saved.words]
            self.quotas.memory(vm.memory, vm.vm_id, regions, words)

    def restore_vm(
        self, vm_id: str, maxphyaddr: int, implicit: bool = False, owner: str = ""
    ) -> VmEntry:
        """An empty VM with a saved id (a state directory's restore at start)."""
        with self._lock:
            vm = self._add_vm(maxphyaddr, vm_id, owner)
            vm.implicit = implicit
        self._counts_changed()
        return vm

    def reset(self, entry: VcpuEntry, data: bytes) -> None:
        """Put an existing vCPU back into a snapshot's state (a resumed replay's checkpoint);
        the snapshot must be of the vCPU's profile and mode."""
        saved = self.quotas.load(data)
        if (saved.profile, saved.mode) != (entry.profile, entry.mode):
            raise StateError(
                f"the checkpoint is of a {saved.profile}/{saved.mode} vCPU; {entry.vcpu_id} is"
                f" {entry.profile}/{entry.mode}"
            )
        profile = _profile(saved.profile)
        with entry.lock, entry.vm.lock:
            entry.changes += 1
            entry.vcpu = saved.restore_vcpu(entry.vm.memory)
            entry.engine = Engine(entry.vcpu, profile, self.latency_model(saved.mode, saved.l0))
            _restore_totals(saved, entry.engine)


def _restore_totals(saved: snapshots.Snapshot, engine: Engine) -> None:
    """The snapshot's totals into ``engine``; older snapshots counted injected exits apart."""
    saved.restore_engine(engine)
    engine.totals.exits += saved.injected_exits


def _number(object_id: str, kind: str) -> int:
    """N of a ``kind-N`` id."""
    prefix, _, number = object_id.partition("-")
    if prefix != kind or not number.isdigit():
        raise InvalidArgument(f"{object_id!r} is not a {kind} id ({kind}-N)")
    return int(number)


def _capabilities(changes: dict[str, Any]) -> Capabilities:
    """The fields of ``changes``, then its ``vmx_msrs`` (index -> value) on top."""
    fields = {name: value for name, value in changes.items() if name != "vmx_msrs"}
    try:
        caps = Capabilities(**fields)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"invalid capabilities: {exc}") from None
    return with_msrs(caps, changes["vmx_msrs"]) if changes.get("vmx_msrs") else caps
