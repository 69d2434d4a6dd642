"""A priced model parameter: value, status (sourced, derived, assumption) and source.

Shared by ``latency.toml`` and the L0 models (``l0/*.toml``): a number in the model never appears
without where it came from, and reports list every assumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .exceptions import ProfileError

__all__ = ["STATUSES", "Parameter", "parse_parameter"]

STATUSES = ("sourced", "derived", "assumption")


@dataclass(frozen=True)
class Parameter:
    """One model parameter: value, status (sourced, derived, assumption) and source."""

    value: float
    status: str
    source: str


def parse_parameter(path: str, key: str, raw: Any) -> Parameter:
    """A ``{value, status, source}`` table; ``ProfileError`` naming file and key otherwise."""
    if not isinstance(raw, dict):
        raise ProfileError(path, key, "must be a table with value, status and source")
    unknown = set(raw) - {"value", "status", "source"}
    if unknown:
        raise ProfileError(path, key, f"unknown keys {sorted(unknown)}")
    value = raw.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ProfileError(path, f"{key}.value", "must be a non-negative number")
    status = raw.get("status")
    if status not in STATUSES:
        raise ProfileError(path, f"{key}.status", f"must be one of {', '.join(STATUSES)}")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ProfileError(path, f"{key}.source", "must name the source (or why it is assumed)")
    return Parameter(float(value), status, source)
