"""The state directory (``--state-dir``): vCPUs and resumable replays that outlive the process.

Layout::

    DIR/vms.state               the VMs (ids, MAXPHYADDR, implicit flag, owner, so empty VMs
                                come back too) and the id counters (ids are never reused)
    DIR/vcpus/vcpu-N.state      one vCPU: its id, uid, owner, its VM's id and its snapshot
                                (vmx/snapshot.py)
    DIR/replays/TOKEN.state     one open replay: the last batch it acknowledged, its totals
                                and counters so far, its vCPU's id and uid, and the vCPU's
                                snapshot at that batch

Every file is written atomically (a temporary file in the same directory, fsync, rename, fsync
of the directory), so a SIGKILL leaves the old version or the new one, never half of one. The
files use the snapshot framing (magic, version, CRC32, zlib JSON): a file that fails any check
is reported in the log and renamed ``*.corrupt``, never fatal.

A replay's file is written after each batch and before its acknowledgement, so an
acknowledged batch is durable: a client that lost the server resumes after it. It is removed
when the replay ends or fails on bad input, and (``expire_replays``) at start and at every
periodic save when it was not written for ``--replay-retention`` seconds (a cancelled or
crashed client that never resumed). Temporary vCPUs (a replay's own) are never saved as vCPUs.
A new vCPU or VM is saved before it is acknowledged (``save_vcpu``); the periodic save writes
only the VMs whose vCPUs changed since the last one.

A write that fails (a full disk: ``OSError``) raises; callers answer UNAVAILABLE with nothing
applied. For tests only, ``VMXSIM_TEST_DISK_FULL_FLAG=PATH`` makes every write fail with
ENOSPC while the file PATH exists (a real full disk cannot be made without privileges here).
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import Registry, VcpuEntry
from .vmx import snapshot as snapshots
from .vmx.engine import BatchStats
from .vmx.exceptions import Busy, InvalidArgument, NotFound, SnapshotError, VmxsimError

__all__ = [
    "DISK_FULL_FLAG_ENV",
    "REPLAY_RETENTION_SECONDS",
    "ReplayCheckpoint",
    "StateDir",
    "write_atomically",
]

log = logging.getLogger("vmxsim.server")

STATE_VERSION = 1
_VMS_MAGIC = b"VMXVMS\0"
_VCPU_MAGIC = b"VMXVCPU"
_REPLAY_MAGIC = b"VMXRPLY"
REPLAY_RETENTION_SECONDS = 3600.0
"""The default ``--replay-retention``: an abandoned replay's file is removed once this old."""
DISK_FULL_FLAG_ENV = "VMXSIM_TEST_DISK_FULL_FLAG"
"""Test-only fault hook (see the module docstring)."""
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_SUFFIX = ".state"


def _fault_injected() -> None:
    flag = os.environ.get(DISK_FULL_FLAG_ENV)
    if flag and os.path.exists(flag):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (test fault {flag})")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    _fault_injected()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _pack(doc: dict[str, Any], magic: bytes) -> bytes:
    return snapshots.pack(doc, magic, STATE_VERSION)


def _unpack(data: bytes, magic: bytes, what: str) -> dict[str, Any]:
    return snapshots.unpack(data, magic, STATE_VERSION, what)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _member(doc: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise SnapshotError(f"{what} is corrupted: {key} is missing or of the wrong type")
    return value


def _optional(doc: dict[str, Any], key: str, what: str) -> str:
    """A string member that files of older servers lack ("" then)."""
    return _member(doc, key, str, what) if key in doc else ""


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SnapshotError(f"{what} is corrupted: its snapshot is not base64") from None


@dataclass
class ReplayCheckpoint:
    """A replay as of its last acknowledged batch."""

    token: str
    vcpu_id: str
    """The vCPU replayed on; empty = the replay's own temporary vCPU."""
    per_exit: bool
    acked_sequence: int
    skipped: int
    unknown_reasons: dict[str, int]
    totals: BatchStats
    snapshot: bytes
    """The vCPU's snapshot (with its engine's totals and cache state) at that batch."""
    vcpu_uid: str = ""
    """The uid of the vCPU replayed on (a resume refuses another vCPU of the same id)."""
    vm_id: str = ""
    owner: str = ""
    base: bytes = b""
    """The vCPU's whole snapshot when the replay started, when ``snapshot`` holds only what a
    batch changes (the current VMCS, not every region of the VM: ``dump(current_only)``)."""

    @property
    def whole(self) -> bytes:
        """The snapshot to make the vCPU anew from (``snapshot`` is then applied on top)."""
        return self.base or self.snapshot

    def to_bytes(self) -> bytes:
        """The checkpoint file's contents."""
        doc = {
            "token": self.token,
            "vcpu_id": self.vcpu_id,
            "per_exit": self.per_exit,
            "acked_sequence": self.acked_sequence,
            "skipped": self.skipped,
            "unknown_reasons": self.unknown_reasons,
            "totals": snapshots.totals_doc(self.totals),
            "snapshot": _b64(self.snapshot),
            "vcpu_uid": self.vcpu_uid,
            "vm_id": self.vm_id,
            "owner": self.owner,
            "base": _b64(self.base),
        }
        return _pack(doc, _REPLAY_MAGIC)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReplayCheckpoint:
        """A checkpoint file's contents; ``SnapshotError`` for a damaged one."""
        what = "replay checkpoint"
        doc = _unpack(data, _REPLAY_MAGIC, what)
        unknown = _member(doc, "unknown_reasons", dict, what)
        if not all(isinstance(k, str) and type(v) is int for k, v in unknown.items()):
            raise SnapshotError(f"{what} is corrupted: unknown_reasons is not names -> counts")
        return cls(
            token=_member(doc, "token", str, what),
            vcpu_id=_member(doc, "vcpu_id", str, what),
            per_exit=_member(doc, "per_exit", bool, what),
            acked_sequence=_member(doc, "acked_sequence", int, what),
            skipped=_member(doc, "skipped", int, what),
            unknown_reasons=unknown,
            totals=snapshots.load_totals(_member(doc, "totals", dict, what)),
            snapshot=_unb64(_member(doc, "snapshot", str, what), what),
            vcpu_uid=_optional(doc, "vcpu_uid", what),
            vm_id=_optional(doc, "vm_id", what),
            owner=_optional(doc, "owner", what),
            base=_unb64(_optional(doc, "base", what), what),
        )


def _set_aside(path: Path, problem: object) -> None:
    corrupt = path.with_name(path.name + ".corrupt")
    log.error("%s: %s; renamed to %s", path, problem, corrupt.name, extra={"path": str(path)})
    os.replace(path, corrupt)


def _vcpu_number(path: Path) -> int:
    number = path.name.removesuffix(_SUFFIX).rpartition("-")[2]
    return int(number) if number.isdigit() else 0


@dataclass
class StateDir:
    """One server's state directory."""

    path: Path
    replay_retention_seconds: float = REPLAY_RETENTION_SECONDS
    _open_replays: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _saved: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    """Per VM, its vCPUs' change counts at their last save (what the periodic save skips)."""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        for directory in (self.path, self.vcpus, self.replays):
            directory.mkdir(parents=True, exist_ok=True)
            for leftover in directory.glob(".*.tmp"):  # a write cut by a crash
                leftover.unlink(missing_ok=True)

    @property
    def vcpus(self) -> Path:
        """Where the vCPU files are."""
        return self.path / "vcpus"

    @property
    def replays(self) -> Path:
        """Where the replay checkpoints are."""
        return self.path / "replays"

    # --- replays -------------------------------------------------------------------------------

    def _replay_file(self, token: str) -> Path:
        if not _TOKEN.fullmatch(token):
            raise InvalidArgument(f"{token[:80]!r} is not a resume token this server issues")
        return self.replays / f"{token}{_SUFFIX}"

    @contextmanager
    def replay_open(self, token: str) -> Iterator[None]:
        """Mark a replay as open on a stream; ``Busy`` when another stream has it open."""
        self._replay_file(token)
        with self._lock:
            if token in self._open_replays:
                raise Busy(f"replay {token} is still open on another stream; retry shortly")
            self._open_replays.add(token)
        try:
            yield
        finally:
            with self._lock:
                self._open_replays.discard(token)

    def save_replay(self, token: str, data: bytes) -> None:
        """Write a replay's checkpoint (``ReplayCheckpoint.to_bytes``; durable on return)."""
        write_atomically(self._replay_file(token), data)

    def load_replay(self, token: str) -> ReplayCheckpoint:
        """A replay's checkpoint; ``NotFound`` when there is none (or it was damaged)."""
        path = self._replay_file(token)
        try:
            return ReplayCheckpoint.from_bytes(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(
                f"no open replay {token} on this server (it ended, or its state was lost)"
            ) from None
        except SnapshotError as exc:
            _set_aside(path, exc)
            raise NotFound(f"replay {token}'s checkpoint was damaged ({exc}); start over") from None

    def drop_replay(self, token: str) -> None:
        """Forget a replay (it ended)."""
        self._replay_file(token).unlink(missing_ok=True)

    def expire_replays(self, max_age: float | None = None) -> int:
        """Remove replay checkpoints not written for ``max_age`` seconds (default: the
        retention) and not open on a stream; returns how many."""
        cutoff = time.time() - (self.replay_retention_seconds if max_age is None else max_age)
        expired = 0
        for path in self.replays.glob(f"*{_SUFFIX}"):
            with self._lock:
                if path.name.removesuffix(_SUFFIX) in self._open_replays:
                    continue
            try:
                old = path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if old:
                path.unlink(missing_ok=True)
                expired += 1
        return expired

    # --- vCPUs ---------------------------------------------------------------------------------

    def _write_vcpu(self, registry: Registry, entry: VcpuEntry) -> None:
        doc = {
            "vcpu_id": entry.vcpu_id,
            "vm_id": entry.vm.vm_id,
            "uid": entry.uid,
            "owner": entry.owner,
            "snapshot": _b64(registry.snapshot(entry)),
        }
        write_atomically(self.vcpus / f"{entry.vcpu_id}{_SUFFIX}", _pack(doc, _VCPU_MAGIC))

    def save_vms(self, registry: Registry) -> None:
        """Write the VM list and the id counters."""
        temporary_vms = {e.vm.vm_id for e in registry.list_vcpus() if e.temporary}
        vms = [
            [vm.vm_id, vm.maxphyaddr, vm.implicit, vm.owner]
            for vm in registry.list_vms()
            if vm.vm_id not in temporary_vms
        ]
        next_vm, next_vcpu = registry.id_counters
        doc = {"vms": vms, "next_vm": next_vm, "next_vcpu": next_vcpu}
        write_atomically(self.path / f"vms{_SUFFIX}", _pack(doc, _VMS_MAGIC))

    def save_vcpu(self, registry: Registry, entry: VcpuEntry | None = None) -> None:
        """Make a new VM (``entry`` None) or vCPU durable before it is acknowledged: the VM
        list with the id counters, and the vCPU's file. Raises ``OSError`` (disk full)."""
        self.save_vms(registry)
        if entry is not None and not entry.temporary:
            self._write_vcpu(registry, entry)

    def forget_vcpus(self, registry: Registry, vcpu_ids: list[str]) -> None:
        """Remove deleted vCPUs' files and write the VM list (logged, never raised: the
        deletion happened, and the next periodic save retries)."""
        for vcpu_id in vcpu_ids:
            (self.vcpus / f"{vcpu_id}{_SUFFIX}").unlink(missing_ok=True)
        try:
            self.save_vms(registry)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path / f"vms{_SUFFIX}", exc)

    def save_vcpus(self, registry: Registry) -> int:
        """Write the VM list and every lasting vCPU of the VMs whose vCPUs changed since their
        last save; remove the files of deleted ones. Returns the number of vCPUs written."""
        entries = [entry for entry in registry.list_vcpus() if not entry.temporary]
        by_vm: dict[str, list[VcpuEntry]] = {}
        for entry in entries:
            by_vm.setdefault(entry.vm.vm_id, []).append(entry)
        written = 0
        for vm_id, members in by_vm.items():
            marks = tuple((e.vcpu_id, e.changes) for e in members)
            if self._saved.get(vm_id) == marks:
                continue
            for entry in members:
                self._write_vcpu(registry, entry)
                written += 1
            self._saved[vm_id] = marks
        self.save_vms(registry)
        kept = {f"{entry.vcpu_id}{_SUFFIX}" for entry in entries}
        for path in self.vcpus.glob(f"*{_SUFFIX}"):
            if path.name not in kept:
                path.unlink(missing_ok=True)
        for vm_id in set(self._saved) - set(by_vm):
            del self._saved[vm_id]
        return written

    def _saved_vms(self) -> tuple[list[tuple[str, int, bool, str]], tuple[int, int]]:
        path = self.path / f"vms{_SUFFIX}"
        try:
            doc = _unpack(path.read_bytes(), _VMS_MAGIC, "VM list")
            rows = _member(doc, "vms", list, "VM list")
            vms = [  # rows of older servers are [id, maxphyaddr]
                (str(row[0]), int(row[1]), len(row) > 2 and row[2] is True,
                 str(row[3]) if len(row) > 3 else "")
                for row in rows
            ]  # fmt: skip
            counters = (int(doc.get("next_vm", 1)), int(doc.get("next_vcpu", 1)))
        except FileNotFoundError:
            return [], (1, 1)
        except (SnapshotError, TypeError, ValueError, IndexError) as exc:
            _set_aside(path, exc)
            return [], (1, 1)
        return vms, counters

    def restore_vcpus(self, registry: Registry) -> int:
        """Bring back the saved VMs and vCPUs with their ids; returns the vCPUs restored."""
        vms, (next_vm, next_vcpu) = self._saved_vms()
        registry.advance_ids(next_vm, next_vcpu)
        for vm_id, maxphyaddr, implicit, owner in vms:
            try:
                registry.restore_vm(vm_id, maxphyaddr, implicit, owner)
            except VmxsimError as exc:
                log.error("cannot restore %s: %s", vm_id, exc, extra={"vm_id": vm_id})
        restored = 0
        for path in sorted(self.vcpus.glob(f"*{_SUFFIX}"), key=_vcpu_number):
            try:
                self._restore_vcpu(registry, path)
            except (VmxsimError, OSError) as exc:
                _set_aside(path, exc)
            else:
                restored += 1
        return restored

    def _restore_vcpu(self, registry: Registry, path: Path) -> None:
        what = "vCPU state"
        doc = _unpack(path.read_bytes(), _VCPU_MAGIC, what)
        vcpu_id = _member(doc, "vcpu_id", str, what)
        vm_id = _member(doc, "vm_id", str, what)
        data = _unb64(_member(doc, "snapshot", str, what), what)
        owner, uid = _optional(doc, "owner", what), _optional(doc, "uid", what)
        known = any(vm.vm_id == vm_id for vm in registry.list_vms())
        registry.restore(
            data, vm_id if known else "", vcpu_id=vcpu_id, new_vm_id="" if known else vm_id,
            owner=owner, uid=uid,
        )  # fmt: skip
