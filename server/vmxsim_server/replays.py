"""A replay's run on the server and its checkpoints (the persistence of state.py seen from a
stream): what is counted so far, what the last durable checkpoint holds, how a batch whose
checkpoint could not be written is undone, and how a resumed replay finds its own vCPU.

No gRPC here; service.py drives these from its Replay stream.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from .registry import Registry, VcpuEntry
from .state import ReplayCheckpoint
from .tenancy import Caller
from .vmx.engine import BatchStats
from .vmx.exceptions import NotFound, StateError

__all__ = ["ReplayRun", "bring_back", "checkpoint_bytes", "rolled_back"]

log = logging.getLogger("vmxsim.server")


@dataclass
class ReplayRun:
    """A replay's progress: its totals, counters and last batch, and its resume token ("" =
    not resumable: the server has no state directory)."""

    token: str
    vcpu_id: str
    per_exit: bool
    totals: BatchStats = field(default_factory=BatchStats)
    skipped: int = 0
    unknown: Counter[str] = field(default_factory=Counter)
    last: int | None = None
    resumed_after: int | None = None
    """The checkpoint's batch when resumed: batches up to it may arrive again (duplicates)."""
    durable: bytes = b""
    """The last checkpoint written (or, before the first, the start's): what a batch whose
    checkpoint cannot be written is undone to."""
    base: bytes = b""
    """The vCPU's whole snapshot at the start; checkpoints then carry only what batches change."""

    def duplicate(self, sequence: int) -> bool:
        """Whether a batch was handled before the resume: its acknowledgement was lost, so
        the client sends it again until the first new batch."""
        after = self.resumed_after
        return after is not None and self.last == after and sequence <= after

    @classmethod
    def resumed(cls, checkpoint: ReplayCheckpoint) -> ReplayRun:
        """The run as of a checkpoint's acknowledged batch."""
        return cls(
            checkpoint.token,
            checkpoint.vcpu_id,
            checkpoint.per_exit,
            checkpoint.totals,
            checkpoint.skipped,
            Counter(checkpoint.unknown_reasons),
            checkpoint.acked_sequence,
            checkpoint.acked_sequence,
        )


def checkpoint_bytes(registry: Registry, entry: VcpuEntry, run: ReplayRun) -> bytes:
    """The checkpoint of ``run`` as of its last batch: the vCPU as a batch changes it (its
    current VMCS), on top of the run's base (its whole snapshot at the start)."""
    checkpoint = ReplayCheckpoint(
        token=run.token,
        vcpu_id=run.vcpu_id,
        per_exit=run.per_exit,
        acked_sequence=-1 if run.last is None else run.last,
        skipped=run.skipped,
        unknown_reasons=dict(run.unknown),
        totals=run.totals,
        snapshot=registry.snapshot(entry, current_only=True),
        vcpu_uid="" if entry.temporary else entry.uid,
        vm_id="" if entry.temporary else entry.vm.vm_id,
        owner=entry.owner,
        base=run.base,
    )
    return checkpoint.to_bytes()


def rolled_back(registry: Registry, entry: VcpuEntry, run: ReplayRun) -> None:
    """Undo the batches since the last durable checkpoint: the vCPU and the run."""
    durable = ReplayCheckpoint.from_bytes(run.durable)
    registry.reset(entry, durable.snapshot)
    run.totals, run.skipped = durable.totals, durable.skipped
    run.unknown = Counter(durable.unknown_reasons)
    run.last = None if durable.acked_sequence < 0 else durable.acked_sequence


def bring_back(registry: Registry, checkpoint: ReplayCheckpoint, caller: Caller) -> None:
    """Check that a resumed replay's vCPU is the checkpoint's own (not another that got its
    id), or bring it back from the checkpoint when a crash lost it before it was saved."""
    if not checkpoint.vcpu_id:
        return  # the replay's own temporary vCPU, made anew from the snapshot
    try:
        entry = registry.get(checkpoint.vcpu_id)
    except NotFound:
        vm_known = any(vm.vm_id == checkpoint.vm_id for vm in registry.list_vms())
        registry.restore(
            checkpoint.whole, checkpoint.vm_id if vm_known else "",
            vcpu_id=checkpoint.vcpu_id, new_vm_id="" if vm_known else checkpoint.vm_id,
            owner=checkpoint.owner, uid=checkpoint.vcpu_uid, caller=caller,
        )  # fmt: skip
        log.info("brought %s back from replay %s's checkpoint", checkpoint.vcpu_id,
                 checkpoint.token, extra={"vcpu_id": checkpoint.vcpu_id})  # fmt: skip
        return
    if checkpoint.vcpu_uid and entry.uid != checkpoint.vcpu_uid:
        raise StateError(
            f"{checkpoint.vcpu_id} is not the vCPU replay {checkpoint.token} ran on (that one"
            " is gone); start a new replay"
        )
