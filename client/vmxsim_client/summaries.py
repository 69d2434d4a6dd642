"""The run summaries the client returns, as typed dicts with the ``--json`` keys of DESIGN.md
"Machine-readable output" (so ``summary["exits"]`` and ``json.dumps(summary)`` work as before,
and mypy knows every key).

    RunSummary        replay(), stats(), each run of compare
    DriveSummary      RemoteVcpu.drive(): a RunSummary plus vcpu_id and batches
    BatchReport       one batch's stats (Drive's on_batch, ReplayProgress.batch)
    ReplayProgress    what replay(on_progress=...) receives per acknowledged batch

More keys may be added; these keep their meaning.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = [
    "BatchReport",
    "CacheCounts",
    "Distribution",
    "DriveSummary",
    "InstructionCounts",
    "L0Summary",
    "PerExit",
    "ReasonStats",
    "ReplayProgress",
    "RunSummary",
]


class Distribution(TypedDict):
    """A per-exit count's mean, median and 99th percentile. A drive without ``per_exit``
    knows only the mean."""

    mean: float
    p50: NotRequired[float]
    p99: NotRequired[float]


class PerExit(TypedDict):
    """VMREADs and VMWRITEs per exit."""

    vmread: Distribution
    vmwrite: Distribution


class InstructionCounts(TypedDict):
    """VMX instructions the hypervisor model executed (vmxsim_server.vmx.summary.INSTRUCTIONS)."""

    vmread: int
    vmwrite: int
    vmptrld: int
    vmclear: int
    vmxon: int
    vmxoff: int
    other: NotRequired[dict[str, int]]
    """Other L1 instructions an L0 may intercept (RDMSR, CPUID, ...), by name; in run
    summaries only (a batch has ``other_instructions``)."""


class CacheCounts(TypedDict):
    """VMCS-cache hits (accesses that needed no VMREAD) and misses."""

    hits: int
    misses: int


class ReasonStats(TypedDict):
    """One exit reason's share of a run."""

    exits: int
    vmread: int
    vmwrite: int
    simulated_seconds: float
    l0_exits: int
    """Exits to L0 this reason's handlers caused (0 in native mode)."""


class L0Summary(TypedDict):
    """What the L0 hypervisor did in a nested run: its exits by cause and their cost."""

    model: str
    exits: int
    per_exit: NotRequired[Distribution]
    """L0 exits per L1 exit (run summaries only)."""
    by_cause: dict[str, int]
    vmcs02_rebuilds: int
    seconds: float


class RunSummary(TypedDict):
    """A run summary: ``replay --json`` and each element of ``compare --json``'s ``"runs"``."""

    profile: str
    mode: str
    exits: int
    skipped: int
    """Malformed trace lines skipped."""
    unknown_reasons: dict[str, int]
    """Exits whose reason name the exit-reason table does not know, by name."""
    instructions: InstructionCounts
    per_exit: PerExit
    cache: CacheCounts
    simulated_seconds: float
    by_reason: dict[str, ReasonStats]
    """By exit-reason name, most exits first."""
    panics: dict[str, int]
    """Exits the hypervisor model answers by stopping the VM (not counted as exits), by name."""
    l0: L0Summary | None
    """None in native mode."""


class DriveSummary(RunSummary):
    """What ``RemoteVcpu.drive`` returns: the totals in run-summary shape and the stream's
    vCPU and batch count."""

    vcpu_id: str
    batches: int


class BatchReport(TypedDict):
    """One batch's stats; the per-exit arrays come only when ``per_exit=True``."""

    sequence: int
    exits: int
    instructions: InstructionCounts
    cache: CacheCounts
    simulated_seconds: float
    by_reason: dict[str, ReasonStats]
    other_instructions: dict[str, int]
    panics: dict[str, int]
    l0: L0Summary | None
    per_exit_vmread: NotRequired[list[int]]
    per_exit_vmwrite: NotRequired[list[int]]
    per_exit_seconds: NotRequired[list[float]]


class ReplayProgress(TypedDict):
    """One acknowledged replay batch. ``resume_token`` continues the replay elsewhere
    (``Client.replay(..., resume_token=...)``); ``duplicate`` marks a batch sent again after a
    resume and not run twice."""

    acked_sequence: int
    exits: int
    """Exits handled in this replay so far."""
    batch: BatchReport
    resume_token: str
    duplicate: bool
