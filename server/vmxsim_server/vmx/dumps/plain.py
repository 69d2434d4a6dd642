"""A plain list of field values: ``FIELD=VALUE`` or ``FIELD: VALUE`` per line, or a JSON object
``{"FIELD": VALUE}``.

FIELD is a field-table name in any case or an encoding (``0x681e``), or one of the entry checks'
pseudo-values (``@launch_state`` ...); VALUE is hex (``0x...``) or decimal, in JSON a number or
such a string. ``#`` starts a comment. A line ``---``, or a field given a second time, begins
the next dump. Any other line is an error naming it: this format has no noise to skip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..fields import lookup
from .dump import Dump, DumpError
from .text import json_object

__all__ = ["parse", "parse_values"]

NAME = "plain"

_LINE = re.compile(r"^\s*(@?[A-Za-z0-9_]+)\s*[=:]\s*([0-9A-Za-z_]+)\s*(?:#.*)?$")
_SEPARATOR = "---"


def _number(text: str, where: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        try:
            return int(text, 16)  # a dump's hex without 0x (e.g. "ffffffff")
        except ValueError:
            raise DumpError(f"{where}: {text!r} is not a number (hex 0x... or decimal)") from None


def _assign(dump: Dump, key: str, value: int, where: str) -> None:
    if key.startswith("@"):
        dump.pseudo[key.lower()] = value
        return
    found = lookup(key)
    if found is None:
        raise DumpError(f"{where}: {key!r} is not a VMCS field name or encoding")
    dump.set(found.full_name, value, where)


def _name_of(key: str) -> str:
    found = None if key.startswith("@") else lookup(key)
    return key.lower() if found is None else found.full_name


def parse_values(values: Mapping[str, Any], where: str = "values") -> Dump:
    """One dump from a mapping of field names (or encodings, or @pseudo names) to numbers."""
    dump = Dump(NAME, 1)
    for key, raw in values.items():
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise DumpError(f"{where}: {key}: {raw!r} is not a number")
        value = raw if isinstance(raw, int) else _number(raw.strip(), f"{where}: {key}")
        _assign(dump, str(key), value, f"{where}: {key}")
    return dump


def parse(text: str) -> list[Dump]:
    """Every dump of a plain list (or one of a JSON object)."""
    if text.lstrip().startswith("{"):
        return [parse_values(json_object(text, "JSON dump", DumpError), "JSON")]
    dumps: list[Dump] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        where = f"line {number}"
        if not line:
            continue
        if line == _SEPARATOR:
            if dumps and (dumps[-1].values or dumps[-1].pseudo):
                dumps.append(Dump(NAME, number + 1))
            continue
        match = _LINE.match(line)
        if match is None:
            raise DumpError(f"{where}: expected FIELD=VALUE, got {line[:60]!r}")
        key, value = match[1], _number(match[2], where)
        name = _name_of(key)
        if not dumps or name in dumps[-1].values or name in dumps[-1].pseudo:
            dumps.append(Dump(NAME, number))
        _assign(dumps[-1], key, value, where)
    return [d for d in dumps if d.values or d.pseudo]
