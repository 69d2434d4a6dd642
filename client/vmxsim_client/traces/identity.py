"""Who made an exit: the thread of a trace line, its vCPU and its VM.

A line header names the task as ``<comm>-<tid>`` (ftrace, trace-cmd), ``<comm>-<tid> (<tgid>)``
(ftrace with the ``record-tgid`` option), ``<comm> <tid>`` or ``<comm> <pid>/<tid>``
(``perf script``, the latter with ``-F pid,tid``). A thread's vCPU is, first found: the exit's own
``vcpu N`` (5.16+ kernels), the thread's last ``kvm_entry: vcpu N``, the QEMU thread name
``CPU N/KVM`` (QEMU ``accel/kvm/kvm-accel-ops.c``, ``kvm_start_vcpu_thread()``: ``"CPU %d/KVM"``),
else 0. Its VM is the process: the tgid where the trace shows one, else ``tid - vcpu``. QEMU starts
a VM's vCPU threads one after the other, so their thread ids are consecutive and all of them
give the id of vCPU 0's thread (HIP24's ``CPU 0/KVM-453724`` and ``CPU 1/KVM-453725`` are one VM,
``qemu-system-x86-483882`` another). That is a heuristic: a thread that starts between two vCPU
threads breaks it (use ``record-tgid`` or ``perf script -F pid,tid`` to be sure).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

__all__ = ["Thread", "named_vcpu", "parse_task"]

_QEMU_VCPU = re.compile(r"CPU (\d+)/KVM")
_IDENTITY = struct.Struct("=QQ")  # vcpu, vm: one exit's identity columns (native order)


@dataclass(eq=False)
class Thread:
    """One traced thread: its task name, ids and what it runs."""

    key: str
    """The thread id as text (the key of the ``kvm_entry`` mapping)."""
    comm: str
    tid: int
    tgid: int | None = None
    """The process id, when the trace prints it."""
    named_vcpu: int | None = None
    """The vCPU index in a QEMU thread name ``CPU N/KVM``."""
    entry_vcpu: int | None = None
    """The vCPU of this thread's last ``kvm_entry`` line."""
    current: bytes = b""
    """The packed identity of an exit that names no vCPU (kept up to date by ``refresh``)."""
    _packed: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``current`` after the thread's vCPU changed."""
        self.current = self.identity(self.vcpu)

    @property
    def vcpu(self) -> int:
        """The vCPU this thread runs (``kvm_entry`` mapping, else its name, else 0)."""
        if self.entry_vcpu is not None:
            return self.entry_vcpu
        return self.named_vcpu if self.named_vcpu is not None else 0

    def vm(self, vcpu: int) -> int:
        """The VM key of this thread running ``vcpu``: the tgid, else ``tid - vcpu``."""
        if self.tgid is not None:
            return self.tgid
        return self.tid - vcpu if 0 <= vcpu <= self.tid else self.tid

    def identity(self, vcpu: int) -> bytes:
        """``(vcpu, vm)`` packed for the identity columns (remembered per vCPU)."""
        packed = self._packed.get(vcpu)
        if packed is None:
            packed = self._packed[vcpu] = _IDENTITY.pack(vcpu, self.vm(vcpu) & ((1 << 64) - 1))
        return packed


def parse_task(prefix: str) -> tuple[str, int | None, int | None]:
    """``(comm, tid, tgid)`` of a header's text before its timestamp (None where absent)."""
    k = prefix.rfind("[")
    before = (prefix[:k] if k >= 0 else prefix).strip()
    tgid: int | None = None
    if before.endswith(")") and "(" in before:  # ftrace record-tgid: comm-tid (tgid)
        j = before.rfind("(")
        text = before[j + 1 : -1].strip()
        tgid = int(text) if text.isdigit() and text.isascii() else None
        before = before[:j].rstrip()
    comm, _, last = before.rpartition(" ")
    pid, slash, tid_text = last.partition("/")
    if slash and _digits(pid) and _digits(tid_text):  # perf script -F pid,tid
        return comm.strip(), int(tid_text), int(pid)
    if _digits(last) and comm:  # perf script: comm tid
        return comm.strip(), int(last), tgid
    comm, dash, tid_text = before.rpartition("-")
    if dash and _digits(tid_text):
        return comm, int(tid_text), tgid
    return before, None, tgid


def named_vcpu(comm: str) -> int | None:
    """The N of a QEMU vCPU thread name ``CPU N/KVM``."""
    found = _QEMU_VCPU.fullmatch(comm.strip())
    return int(found.group(1)) if found else None


def _digits(text: str) -> bool:
    return text.isdigit() and text.isascii() and len(text) < 20
