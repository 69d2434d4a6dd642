"""Named exit-reason mixes (``mixes.toml``, each citing the published table it was read from), and
seeded, reproducible synthetic exit sequences of a given mix.

A sequence of N exits holds each reason's share of N by largest-remainder apportionment, drawn
without replacement with ``random.Random(seed)``: the same mix, N and seed give the same exits.
Records carry a deterministic guest RIP and, for exits that skip an instruction, its length.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .exceptions import InvalidArgument, ProfileError
from .exit_reasons import lookup_reason
from .records import ExitRecord

__all__ = ["Mix", "apportion", "available_mixes", "load_mix", "synthesize"]

# Instruction lengths of the exits that skip one instruction (SDM Vol. 2 encodings: CPUID 0F A2,
# RDMSR 0F 32, WRMSR 0F 30, HLT F4, IN/OUT with DX EC..EF, VMCALL 0F 01 C1, XSETBV 0F 01 D1,
# RDTSC 0F 31, RDTSCP 0F 01 F9, PAUSE F3 90, WBINVD 0F 09, INVLPG 0F 01 /7, MOV CR 0F 22/20).
_INSTRUCTION_LEN = {10: 2, 31: 2, 32: 2, 12: 1, 30: 1, 18: 3, 55: 3, 16: 2, 51: 3, 40: 2, 54: 2,
                    14: 3, 28: 3}  # fmt: skip
_EPT = (48, 49)
_EXTERNAL_INTERRUPT_INFO = 0x8000_00EC  # valid, external interrupt, vector 0xec (a timer IPI)


@dataclass(frozen=True)
class Mix:
    """A named exit-reason mix: weights by basic reason number, with its source."""

    name: str
    description: str
    source: str
    weights: dict[int, float]


def _load_all() -> dict[str, Mix]:
    text = resources.files(__package__).joinpath("mixes.toml").read_text()
    return parse_mixes(text, "mixes.toml")


def parse_mixes(text: str, path: str) -> dict[str, Mix]:
    """Validate a mixes document (schema 1)."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(path, "-", f"not valid TOML: {exc}") from None
    if data.get("schema") != 1:
        raise ProfileError(path, "schema", "must be 1")
    mixes = {}
    for name, raw in data.get("mixes", {}).items():
        key = f"mixes.{name}"
        if not isinstance(raw, dict) or set(raw) - {"description", "source", "weights"}:
            raise ProfileError(path, key, "must hold description, source and weights only")
        weights: dict[int, float] = {}
        for reason_name, weight in raw.get("weights", {}).items():
            reason = lookup_reason(reason_name)
            if reason is None:
                raise ProfileError(path, f"{key}.weights.{reason_name}", "unknown exit reason")
            if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
                raise ProfileError(path, f"{key}.weights.{reason_name}", "must be a number >= 0")
            weights[reason.number] = weights.get(reason.number, 0.0) + float(weight)
        if not sum(weights.values()):
            raise ProfileError(path, f"{key}.weights", "must hold at least one positive weight")
        mixes[name] = Mix(
            name, str(raw.get("description", "")), str(raw.get("source", "")), weights
        )
    return mixes


def available_mixes() -> list[str]:
    """Names of the mixes shipped with vmxsim."""
    return sorted(_load_all())


def load_mix(name_or_path: str) -> Mix:
    """A shipped mix by name, or the only/first mix of a mixes file given by path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        try:
            mixes = parse_mixes(path.read_text(), str(path))
        except OSError as exc:
            raise ProfileError(str(path), "-", f"cannot read: {exc.strerror}") from None
        if not mixes:
            raise ProfileError(str(path), "mixes", "holds no mix")
        return next(iter(mixes.values()))
    mixes = _load_all()
    if name_or_path not in mixes:
        raise InvalidArgument(f"unknown mix {name_or_path!r} (known: {', '.join(sorted(mixes))})")
    return mixes[name_or_path]


def apportion(weights: dict[int, float], total: int) -> dict[int, int]:
    """Split ``total`` exits over the weights by largest remainder (exact, deterministic)."""
    if total < 0:
        raise InvalidArgument(f"number of exits {total} is negative")
    weight_sum = sum(weights.values())
    shares = {reason: w * total / weight_sum for reason, w in weights.items()}
    counts = {reason: int(share) for reason, share in shares.items()}
    left = total - sum(counts.values())
    by_remainder = sorted(shares, key=lambda r: (-(shares[r] - counts[r]), r))
    for reason in by_remainder[:left]:
        counts[reason] += 1
    return counts


def synthesize(mix: Mix, exits: int, seed: int = 0) -> Iterator[ExitRecord]:
    """A reproducible stream of ``exits`` exits with the mix's proportions (constant memory).

    Each exit's reason is drawn without replacement from the apportioned counts with
    ``random.Random(seed)``, so every reason occurs exactly its share of times.
    """
    rng = random.Random(seed)
    counts = sorted(apportion(mix.weights, exits).items())
    reasons = [reason for reason, _ in counts]
    remaining = [n for _, n in counts]
    randrange = rng.randrange
    for left in range(exits, 0, -1):
        pick, index = randrange(left), 0
        while pick >= remaining[index]:
            pick -= remaining[index]
            index += 1
        remaining[index] -= 1
        reason = reasons[index]
        ept = reason in _EPT
        yield ExitRecord(
            reason=reason,
            rip=0xFFFF_FFFF_8100_0000 + randrange(1 << 20),
            qualification=randrange(1 << 12) if ept else 0,
            intr_info=_EXTERNAL_INTERRUPT_INFO if reason == 1 else 0,
            guest_physical_address=randrange(1 << 32) & ~0xFFF if ept else 0,
            instruction_len=_INSTRUCTION_LEN.get(reason, 0),
        )
