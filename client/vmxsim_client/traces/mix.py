"""``mix:NAME[:EXITS[:SEED]]``: a shipped exit mix as a trace, for every command that reads one.

The exits are ``vmxsim_server.vmx.mixes.synthesize(mix, EXITS, SEED)`` (defaults 100,000 and 0):
a seeded, reproducible sequence with the mix's proportions (mixes.toml cites each mix's source).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from vmxsim_server.vmx.mixes import load_mix, synthesize

from .base import Row, TraceParseError, TraceReader
from .limits import LIMITS

__all__ = ["MIX_PREFIX", "MixReader", "open_mix"]

MIX_PREFIX = "mix:"
DEFAULT_EXITS = 100_000


class MixReader(TraceReader):
    """The synthetic exits of one mix."""

    format_name: ClassVar[str] = "mix"

    def __init__(self, spec: str, **options: Any) -> None:
        super().__init__([], source=spec, **options)
        parts = spec[len(MIX_PREFIX) :].split(":")
        if not parts[0] or len(parts) > 3:
            raise TraceParseError(spec, 0, "expected mix:NAME[:EXITS[:SEED]]")
        try:
            numbers = [int(p.replace("_", ""), 0) for p in parts[1:]]
        except ValueError:
            raise TraceParseError(spec, 0, "EXITS and SEED must be integers") from None
        self.exits_wanted = numbers[0] if numbers else DEFAULT_EXITS
        self.seed = numbers[1] if len(numbers) > 1 else 0
        if self.exits_wanted < 0:
            raise TraceParseError(spec, 0, "EXITS must not be negative")
        if self.exits_wanted > LIMITS.max_samples:
            raise TraceParseError(
                spec, 0, f"EXITS is over the limit of {LIMITS.max_samples:,} (--max-samples)"
            )
        self.mix = load_mix(parts[0])

    @classmethod
    def sniff(cls, line: str) -> bool:
        return False  # never detected from content: named by its spec

    def _rows(self) -> Iterator[Row]:
        for record in synthesize(self.mix, self.exits_wanted, self.seed):
            self.exits += 1
            self.lines += 1
            yield (
                record.reason, record.rip, record.qualification, record.info2, record.intr_info,
                record.error_code, record.guest_physical_address, record.instruction_len, None, 0,
            )  # fmt: skip


def open_mix(spec: str, strict: bool = False) -> MixReader:
    """A reader of the synthetic exits named by ``spec``."""
    return MixReader(spec, strict=strict)
