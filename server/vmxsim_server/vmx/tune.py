"""Tuning the cache: from a trace, the cache policy that minimises simulated time for a profile.

The seed (intel/haxm PR #130) notes that "caching unused components is counterproductive" and that
choosing the cached set by hand is too slow. ``tune`` chooses it from data: for every field the
base profile reads or writes on the trace's exits, it tries each option — read-cached or not;
written directly, deferred (write-back), or written only when changed — and keeps the one with the
least simulated time.

The search is exact per field: an access's cost depends only on its own field's cache state, and
the latency model is linear in the instruction counts, so the total is a sum of per-field terms
and choosing each field's best option independently (coordinate descent, in field-table order)
finds the optimum for the given profile, trace and mode. One sweep suffices; a second sweep is
run to confirm that nothing improves. The result is the policy and the X-macro rows
``COMP(cache_r, cache_w, width, NAME)`` that implement it.

The cost is the full one (issue 13.5): in nested modes the L0 model prices every L1 instruction
that exits to it and every vmcs02 rebuild, so a policy that stops per-entry writes of fields L0
does not shadow (HAXM's host state) gets the credit of no longer dirtying vmcs12.
Write-if-changed control and host state is an assumption (``TuneResult.assumptions``): the engine
issues such a write once and skips it afterwards, which holds only while the vCPU stays on one
physical CPU (host GS/TR/GDTR/IDTR bases, for one, differ between physical CPUs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .cache import CachePolicy
from .engine import BatchStats, Engine
from .fields import BY_NAME, FIELDS, Field, Kind
from .latency import LatencyModel
from .profiles import Profile
from .records import ExitBatch
from .vcpu import Vcpu

__all__ = ["TuneResult", "simulate", "simulate_stats", "tune"]

_WRITE_OPTIONS = ("direct", "write-back", "write-if-changed")


@dataclass(frozen=True)
class TuneResult:
    """The best policy found, and simulated seconds for the base, the best and evaluations run."""

    policy: CachePolicy
    base_seconds: float
    best_seconds: float
    evaluations: int
    fields_considered: int

    @property
    def assumptions(self) -> list[str]:
        """What the tuned policy's gain rests on, one sentence per assumption."""
        fields = [f.name for f in FIELDS if f.name in self.policy.write_if_changed]
        host = [name for name in fields if BY_NAME[name].kind is not Kind.GUEST]
        if not host:
            return []
        return [
            f"write-if-changed {', '.join(host)}: written once and skipped while unchanged; "
            "holds only while the vCPU stays on one physical CPU (host state differs per CPU)"
        ]

    @property
    def gain(self) -> float:
        """Fraction of the base's simulated time saved by the tuned policy."""
        return 1 - self.best_seconds / self.base_seconds if self.base_seconds else 0.0


def simulate(
    profile: Profile,
    mode: str,
    reasons: Sequence[int],
    policy: CachePolicy | None = None,
    l0: str | None = None,
) -> float:
    """Simulated seconds of the exits (by reason) through ``profile`` with ``policy``: the full
    cost, nested under the L0 model (``l0`` or the profile's default) with its exits and vmcs02
    rebuilds, so a policy that stops dirtying vmcs12 gets the credit."""
    return simulate_stats(profile, mode, reasons, policy, l0).simulated_seconds


def simulate_stats(
    profile: Profile,
    mode: str,
    reasons: Sequence[int],
    policy: CachePolicy | None = None,
    l0: str | None = None,
) -> BatchStats:
    """The whole stats of ``simulate`` (L0 exits and vmcs02 rebuilds included)."""
    if policy is not None:
        profile = replace(profile, policy=policy)
    engine = Engine(Vcpu(), profile, LatencyModel(mode, l0=l0))
    return engine.run_batch(ExitBatch(list(reasons)))


def _accessed(profile: Profile, reasons: Sequence[int]) -> tuple[set[str], set[str]]:
    read: set[str] = set()
    written: set[str] = set()
    sections = [profile.after_exit, profile.before_entry, profile.after_user_exit]
    sections += [profile.handler(r) for r in set(reasons)]
    for section in sections:
        read.update(f.name for f in section.reads)
        written.update(f.name for f in section.writes)
    return read, written


def _with_option(policy: CachePolicy, f: Field, cached: bool, write: str) -> CachePolicy:
    read = set(policy.read) - {f.name}
    back = set(policy.write) - {f.name}
    changed = set(policy.write_if_changed) - {f.name}
    if cached:
        read.add(f.name)
    if write == "write-back":
        back.add(f.name)
    elif write == "write-if-changed":
        changed.add(f.name)
    return CachePolicy(frozenset(read), frozenset(back), frozenset(changed))


def tune(
    profile: Profile,
    mode: str,
    reasons: Sequence[int],
    progress: Callable[[int, int], None] | None = None,
    l0: str | None = None,
) -> TuneResult:
    """The cache policy minimising simulated time of ``reasons`` through ``profile`` in ``mode``."""
    read, written = _accessed(profile, reasons)
    candidates = [f for f in FIELDS if f.name in read or f.name in written]
    policy = profile.policy
    base = best = simulate(profile, mode, reasons, policy, l0)
    evaluations = 1
    for sweep in range(2):
        improved = False
        for done, f in enumerate(candidates):
            if progress:
                progress(sweep * len(candidates) + done, 2 * len(candidates))
            options = [
                (cached, write)
                for cached in ((False, True) if f.name in read else (False,))
                for write in (_WRITE_OPTIONS if f.name in written else ("direct",))
            ]
            for cached, write in options:
                trial = _with_option(policy, f, cached, write)
                if trial == policy:
                    continue
                seconds = simulate(profile, mode, reasons, trial, l0)
                evaluations += 1
                if seconds < best * (1 - 1e-12):
                    best, policy, improved = seconds, trial, True
        if not improved:
            break
    return TuneResult(policy, base, best, evaluations, len(candidates))
