"""The trace readers' limits: documented constants, overridable per call and by CLI flags.

- :data:`MAX_LINE_BYTES` (1 MiB, ``--max-line-bytes``): a longer line is one malformed line,
  never held in memory;
- :data:`MAX_SAMPLES` (100,000,000, ``--max-samples``): a perf-kvm-stat table or ``mix:`` spec
  that asks for more synthetic exits is an error.

``LIMITS`` holds the process-wide defaults that ``open_trace`` and the readers use when a call
gives none; the CLI's flags (``add_limit_options``) set it for the one command a process runs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from .lines import MAX_LINE_BYTES

__all__ = ["LIMITS", "MAX_LINE_BYTES", "MAX_SAMPLES", "ReaderLimits", "add_limit_options"]

MAX_SAMPLES = 100_000_000
"""The most synthetic exits a perf-kvm-stat table or a ``mix:`` spec may ask for (~100 s of
replay at 1M exits/s); a table that claims more (``1e18`` samples) is refused, not replayed."""


@dataclass
class ReaderLimits:
    """The limits in force when a call gives none."""

    max_line_bytes: int = MAX_LINE_BYTES
    max_samples: int = MAX_SAMPLES


LIMITS = ReaderLimits()

_FLAGS = {
    "max_line_bytes": (
        "--max-line-bytes",
        f"longest trace line accepted (default {MAX_LINE_BYTES:,})",
    ),
    "max_samples": (
        "--max-samples",
        f"most synthetic exits from a perf-kvm-stat table or mix (default {MAX_SAMPLES:,})",
    ),
}


class _SetLimit(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, value: Any, option: Any = None
    ) -> None:
        if value < 1:
            parser.error(f"{option} must be at least 1")
        setattr(namespace, self.dest, value)
        setattr(LIMITS, self.dest, value)


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """``--max-line-bytes`` and ``--max-samples``: they set :data:`LIMITS` for this process."""
    for dest, (flag, text) in _FLAGS.items():
        parser.add_argument(flag, dest=dest, type=int, metavar="N", action=_SetLimit, help=text)
