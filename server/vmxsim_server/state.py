"""The state directory (``--state-dir``): vCPUs and resumable replays that outlive the process.

Layout::

    DIR/vms.state               the VMs: ids and MAXPHYADDR (so empty VMs come back too)
    DIR/vcpus/vcpu-N.state      one vCPU: its id, its VM's id and its snapshot (vmx/snapshot.py)
    DIR/replays/TOKEN.state     one open replay: the last batch it acknowledged, its totals
                                and counters so far, and its vCPU's snapshot at that batch

Every file is written atomically (a temporary file in the same directory, fsync, rename, fsync
of the directory), so a SIGKILL leaves the old version or the new one, never half of one. The
files use the snapshot framing (magic, version, CRC32, zlib JSON): a file that fails any check
is reported in the log and renamed ``*.corrupt``, never fatal.

A replay's file is written after each batch and before its acknowledgement, so an
acknowledged batch is durable: a client that lost the server resumes after it. It is removed
when the replay ends or fails on bad input, and at start when older than
``REPLAY_RETENTION_SECONDS``. Temporary vCPUs (a replay's own) are never saved as vCPUs.
"""

from __future__ import annotations

import base64
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

from .registry import Registry
from .vmx import snapshot as snapshots
from .vmx.engine import BatchStats
from .vmx.exceptions import Busy, InvalidArgument, NotFound, SnapshotError, VmxsimError

__all__ = ["REPLAY_RETENTION_SECONDS", "ReplayCheckpoint", "StateDir", "write_atomically"]

log = logging.getLogger("vmxsim.server")

STATE_VERSION = 1
_VMS_MAGIC = b"VMXVMS\0"
_VCPU_MAGIC = b"VMXVCPU"
_REPLAY_MAGIC = b"VMXRPLY"
REPLAY_RETENTION_SECONDS = 7 * 24 * 3600.0
"""An abandoned replay's file is removed at the first start after it is this old."""
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,64}")
_SUFFIX = ".state"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
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
    _open_replays: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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

    def save_replay(self, checkpoint: ReplayCheckpoint) -> None:
        """Write a replay's checkpoint (durable when this returns)."""
        write_atomically(self._replay_file(checkpoint.token), checkpoint.to_bytes())

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

    def expire_replays(self, max_age: float = REPLAY_RETENTION_SECONDS) -> int:
        """Remove replay checkpoints not written for ``max_age`` seconds; returns how many."""
        cutoff = time.time() - max_age
        expired = 0
        for path in self.replays.glob(f"*{_SUFFIX}"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                expired += 1
        return expired

    # --- vCPUs ---------------------------------------------------------------------------------

    def save_vcpus(self, registry: Registry) -> int:
        """Write every VM and every lasting vCPU; remove the files of deleted ones. Returns the
        number of vCPUs saved."""
        entries = [entry for entry in registry.list_vcpus() if not entry.temporary]
        temporary_vms = {e.vm.vm_id for e in registry.list_vcpus() if e.temporary}
        saved = set()
        for entry in entries:
            doc = {
                "vcpu_id": entry.vcpu_id,
                "vm_id": entry.vm.vm_id,
                "snapshot": _b64(registry.snapshot(entry)),
            }
            path = self.vcpus / f"{entry.vcpu_id}{_SUFFIX}"
            write_atomically(path, _pack(doc, _VCPU_MAGIC))
            saved.add(path.name)
        vms = [[vm.vm_id, vm.maxphyaddr] for vm in registry.list_vms()]
        vms = [row for row in vms if row[0] not in temporary_vms]
        write_atomically(self.path / f"vms{_SUFFIX}", _pack({"vms": vms}, _VMS_MAGIC))
        for path in self.vcpus.glob(f"*{_SUFFIX}"):
            if path.name not in saved:
                path.unlink(missing_ok=True)
        return len(saved)

    def _saved_vms(self) -> list[tuple[str, int]]:
        path = self.path / f"vms{_SUFFIX}"
        try:
            doc = _unpack(path.read_bytes(), _VMS_MAGIC, "VM list")
            rows = _member(doc, "vms", list, "VM list")
            vms = [(str(row[0]), int(row[1])) for row in rows]
        except FileNotFoundError:
            return []
        except (SnapshotError, TypeError, ValueError, IndexError) as exc:
            _set_aside(path, exc)
            return []
        return vms

    def restore_vcpus(self, registry: Registry) -> int:
        """Bring back the saved VMs and vCPUs with their ids; returns the vCPUs restored."""
        for vm_id, maxphyaddr in self._saved_vms():
            try:
                registry.restore_vm(vm_id, maxphyaddr)
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
        known = {vm.vm_id for vm in registry.list_vms()}
        if vm_id in known:
            registry.restore(data, vm_id, vcpu_id=vcpu_id)
        else:
            registry.restore(data, vcpu_id=vcpu_id, new_vm_id=vm_id)
