"""A vCPU's capabilities from a file of IA32_VMX_* MSR values, for ``vmxsim diagnose``.

Accepted, one MSR per line or as one document:
- ``rdmsr`` sessions: a ``rdmsr 0x480`` command line (with or without a shell prompt) followed
  by the value it printed (hex without 0x, as rdmsr prints it; with ``-a`` the first CPU's);
- ``NAME = VALUE`` / ``NAME: VALUE`` / ``NAME VALUE`` lines, NAME an MSR name
  (``IA32_VMX_BASIC``, also without ``IA32_``) or index (``0x480``); bare values are hex;
- a TOML or JSON table of the same names to numbers (or strings of numbers).
``MAXPHYADDR`` (CPUID.80000008H:EAX[7:0], not an MSR) and ``IA32_FEATURE_CONTROL`` (0x3a) may be
given too. ``parse_capability_file`` returns the MSR values by index;
``capability_msrs.with_msrs`` applies them to a vCPU's Capabilities and checks them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from .capabilities import MSR_NAMES
from .exceptions import InvalidArgument

__all__ = [
    "FEATURE_CONTROL",
    "MAXPHYADDR",
    "CapabilityFileError",
    "msr_index",
    "parse_capability_file",
]

FEATURE_CONTROL = 0x3A
MAXPHYADDR = -1
"""The pseudo-index under which the MAXPHYADDR value travels with the MSRs."""

_BY_NAME: dict[str, int] = {
    **{name: index for index, name in MSR_NAMES.items()},
    **{name.removeprefix("IA32_"): index for index, name in MSR_NAMES.items()},
    "IA32_FEATURE_CONTROL": FEATURE_CONTROL,
    "FEATURE_CONTROL": FEATURE_CONTROL,
    "MAXPHYADDR": MAXPHYADDR,
}
_RDMSR = re.compile(r"^(?:\S*[$#]\s*)?(?:sudo\s+)?rdmsr\b(?:\s+-\S+)*\s+(\S+)\s*$")
_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]+")
_ASSIGNMENT = re.compile(r"^([A-Za-z0-9_]+)\s*[=:\s]\s*(\S+)\s*$")


class CapabilityFileError(InvalidArgument):
    """A capabilities file that does not parse or names values that do not fit."""


def msr_index(key: str, where: str) -> int:
    """The index of an MSR given by name (with or without IA32_) or index (hex)."""
    found = _BY_NAME.get(key.strip().upper())
    if found is not None:
        return found
    try:
        index = int(key, 16 if not key.lower().startswith("0x") else 0)
    except ValueError:
        raise CapabilityFileError(
            f"{where}: {key!r} is not an IA32_VMX_* MSR name or index"
        ) from None
    if index not in MSR_NAMES and index != FEATURE_CONTROL:
        raise CapabilityFileError(f"{where}: MSR {index:#x} is not an IA32_VMX_* capability MSR")
    return index


def _value(raw: Any, where: str, index: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise CapabilityFileError(f"{where}: {raw!r} is not a number")
    if isinstance(raw, int):
        return raw
    text = raw.strip()
    try:
        if index == MAXPHYADDR and not text.lower().startswith("0x"):
            return int(text)
        return int(text, 0) if text.lower().startswith("0x") else int(text, 16)
    except ValueError:
        raise CapabilityFileError(f"{where}: {raw!r} is not a number") from None


def _from_table(doc: Mapping[str, Any], what: str) -> dict[int, int]:
    msrs: dict[int, int] = {}
    for key, raw in doc.items():
        index = msr_index(str(key), f"{what}: {key}")
        msrs[index] = _value(raw, f"{what}: {key}", index)
    return msrs


def parse_capability_file(text: str) -> dict[int, int]:
    """MSR index -> value from a capabilities file (see the module docstring)."""
    if text.lstrip().startswith("{"):
        # here, not at the top: the dumps package is ~20 ms of every server's start-up
        from .dumps.text import json_object

        return _from_table(json_object(text, "capabilities", CapabilityFileError), "capabilities")
    msrs: dict[int, int] = {}
    pending: int | None = None  # the MSR of the last rdmsr command, whose output follows
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"capabilities line {number}"
        command = _RDMSR.match(raw.strip())
        if command:
            pending = msr_index(command[1], where)
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if pending is not None and _HEX.fullmatch(line):
            msrs.setdefault(pending, _value(line, where, pending))  # rdmsr -a: first CPU's
            continue
        pending = None
        assignment = _ASSIGNMENT.match(line.replace('"', ""))
        if assignment is None:
            try:
                return _from_table(tomllib.loads(text), "capabilities")
            except tomllib.TOMLDecodeError:
                raise CapabilityFileError(
                    f"{where}: expected NAME = VALUE or rdmsr output, got {line[:60]!r}"
                ) from None
        index = msr_index(assignment[1], where)
        msrs[index] = _value(assignment[2], where, index)
    if not msrs:
        raise CapabilityFileError("capabilities: the file names no IA32_VMX_* MSR")
    return msrs
