"""vmxsim's own vCPU snapshot (``vmxsim vcpu snapshot``, the Snapshot RPC): the binary
``VMXSNAP`` file, or its JSON document (``snapshot.unpack``), e.g. after editing it.

A snapshot states everything: every field of the current VMCS (absent = 0), its launch state,
the vCPU state behind the pseudo-values, the capabilities and the VM's memory, so a diagnosis
of a snapshot leaves nothing unchecked that VMLAUNCH would check.
"""

from __future__ import annotations

import json

from .. import snapshot as vcpu_snapshot
from ..exceptions import SnapshotError
from ..fields import FIELDS
from ..memory import PhysicalMemory
from ..vcpu import INVALID_POINTER
from .dump import Dump, DumpError

__all__ = ["PSEUDO", "is_snapshot", "parse"]

NAME = "vmxsim-snapshot"

PSEUDO = ("@current_vmcs", "@shadow_indicator", "@mov_ss_blocking", "@launch_state",
          "@vmxon_epoch_ok")  # fmt: skip
"""The pseudo-values of the entry checks (entry_checks.table) that a vCPU's state answers."""


def is_snapshot(data: bytes) -> bool:
    """Whether ``data`` looks like a snapshot (binary, or its JSON document)."""
    if data.startswith(vcpu_snapshot.MAGIC):
        return True
    head = data[:4096].lstrip()
    return head.startswith(b"{") and b'"capabilities"' in data and b'"memory"' in data


def parse(data: bytes) -> list[Dump]:
    """The one dump of a snapshot: the vCPU's current VMCS."""
    try:
        if not data.startswith(vcpu_snapshot.MAGIC):
            try:
                doc = json.loads(data)
            except ValueError as exc:
                raise DumpError(f"not a vmxsim snapshot document: {exc}") from None
            data = vcpu_snapshot.pack(doc)
        loaded = vcpu_snapshot.load(data)
    except SnapshotError as exc:
        raise DumpError(str(exc)) from None
    memory = PhysicalMemory(loaded.capabilities.maxphyaddr)
    vcpu = loaded.restore_vcpu(memory)
    values = vcpu.entry_values()
    dump = Dump(NAME, 1, capabilities=loaded.capabilities, memory=memory)
    if vcpu.current_pointer != INVALID_POINTER:
        dump.values = {f.name: values(f.name) for f in FIELDS}
    dump.pseudo = {name: values(name) for name in PSEUDO}
    return [dump]
