"""``vmxsim fields`` and ``vmxsim exit-reasons``: the core's tables, printed."""

from __future__ import annotations

import argparse
from typing import Any

from vmxsim_server.vmx import EXIT_REASONS, decode_encoding
from vmxsim_server.vmx.capabilities import FEATURES
from vmxsim_server.vmx.fields import ALL_FIELDS, BY_ENCODING, Field, Kind, Width

from ..errors import CliError
from .output import FORMATS, emit_json, render_rows

__all__ = ["register"]

FIELD_COLUMNS = ("name", "encoding", "width", "type", "access", "requires")
_WIDTHS = {w.label: w for w in Width}
_KINDS = {k.label: k for k in Kind}


def field_row(field: Field) -> dict[str, Any]:
    """One field as a listing row: ``name,encoding,width,type,access,requires`` (the capability
    that makes the field exist; empty when every VMX processor has it)."""
    names = field.feature.split("|") if field.feature else []
    return {
        "name": field.name,
        "encoding": f"0x{field.encoding:08x}",
        "width": field.width.label,
        "type": field.kind.label,
        "access": field.access.label,
        "requires": " or ".join(FEATURES[name].description for name in names),
    }


def _parse_encoding(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise CliError(f"not an encoding: {text!r} (give a number such as 0x681e)") from None
    if not 0 <= value <= 0xFFFF_FFFF:
        raise CliError(f"encoding {text} does not fit 32 bits")
    return value


def _cmd_fields(args: argparse.Namespace) -> int:
    if args.action == "decode":
        if not args.encoding:
            raise CliError("fields decode needs an encoding, e.g. vmxsim fields decode 0x681e")
        return _decode(args.encoding, args.format)
    if args.action is not None:
        raise CliError(f"unknown fields action {args.action!r} (the only action is 'decode')")
    rows = [
        field_row(f)
        for f in ALL_FIELDS
        if (args.type is None or f.kind is _KINDS[args.type])
        and (args.width is None or f.width is _WIDTHS[args.width])
    ]
    render_rows(rows, FIELD_COLUMNS, args.format)
    return 0


def _decode(text: str, fmt: str) -> int:
    encoding = _parse_encoding(text)
    bits = decode_encoding(encoding)
    field = BY_ENCODING.get(encoding)
    info: dict[str, Any] = {
        "encoding": f"0x{encoding:08x}",
        "access": bits.access.label,
        "index": bits.index,
        "type": bits.kind.label,
        "width": bits.width.label,
        "reserved_bits_set": bits.reserved_bits_set,
        "name": field.name if field else None,
    }
    if fmt == "json":
        emit_json(info, indent=2)
        return 0
    if fmt == "csv":
        render_rows([info], list(info), "csv")
        return 0
    name = field.name if field else "no component (VMREAD/VMWRITE answer VMfailValid(12))"
    print(f"{info['encoding']}: {name}")
    print(f"  bit 0      access  {bits.access.label}")
    print(f"  bits 9:1   index   {bits.index}")
    print(f"  bits 11:10 type    {bits.kind.label}")
    print(f"  bits 14:13 width   {bits.width.label}")
    if bits.reserved_bits_set:
        print("  reserved bits (12, 31:15) are set: not a well-formed encoding")
    return 0


def _cmd_exit_reasons(args: argparse.Namespace) -> int:
    rows = [
        {
            "number": r.number,
            "name": r.name,
            "description": r.description,
            "synonyms": " ".join(r.synonyms),
        }
        for r in EXIT_REASONS
    ]
    render_rows(rows, ("number", "name", "description", "synonyms"), args.format)
    return 0


def register(sub: Any) -> None:
    """Add ``fields`` and ``exit-reasons`` to the CLI."""
    p = sub.add_parser(
        "fields",
        help="list the VMCS field table, or decode an encoding",
        description="List every VMCS component (SDM Appendix B), or 'fields decode ENCODING'.",
    )
    p.add_argument("action", nargs="?", choices=["decode"], help="decode: explain one encoding")
    p.add_argument("encoding", nargs="?", help="the encoding to decode, e.g. 0x681e")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument("--type", choices=sorted(_KINDS), help="only fields of this type")
    p.add_argument("--width", choices=list(_WIDTHS), help="only fields of this width")
    p.set_defaults(func=_cmd_fields)

    p = sub.add_parser(
        "exit-reasons",
        help="list the basic exit reasons (SDM Appendix C)",
        description="List the basic exit reasons with the synonyms trace tools print.",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.set_defaults(func=_cmd_exit_reasons)
