"""The Diagnose RPC's request and response as the client builds and returns them: a request from
dump text or field values and capability MSRs, each ``DumpDiagnosis`` as the JSON document of
``vmxsim diagnose --json`` (the core's ``Diagnosis.to_doc``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vmxsim.v1 import vmxsim_pb2 as pb

__all__ = ["diagnose_request", "diagnosis_doc"]

Capabilities = Mapping[int, int] | str
"""IA32_VMX_* MSR values by index, or the text of a capabilities file (rdmsr output, TOML,
JSON; ``vmx.capability_file``)."""


def diagnose_request(
    text: str | bytes | None,
    values: Mapping[str, int] | None,
    format: str | None,
    capabilities: Capabilities | None,
) -> pb.DiagnoseRequest:
    """A DiagnoseRequest; a capabilities file's text is parsed here (ValueError-free: a bad file
    raises the core's ``CapabilityFileError``)."""
    # imported here: the file parser loads the dump readers and the core (calls.wire_msrs)
    from vmxsim_server.vmx.capability_file import MAXPHYADDR, parse_capability_file

    msrs = parse_capability_file(capabilities) if isinstance(capabilities, str) else capabilities
    msrs = dict(msrs or {})
    maxphyaddr = msrs.pop(MAXPHYADDR, 0)
    dump = text.encode("utf-8", errors="replace") if isinstance(text, str) else text or b""
    return pb.DiagnoseRequest(
        dump=dump,
        values=dict(values or {}),
        format=format or "",
        capability_msrs={f"{index:#x}": value for index, value in msrs.items()},
        maxphyaddr=maxphyaddr,
    )


def diagnosis_doc(message: pb.DumpDiagnosis) -> dict[str, Any]:
    """One diagnosis as its JSON document."""
    return {
        "format": message.format,
        "line": message.line,
        "fields_read": message.fields_read,
        "sdm": message.sdm,
        "verdict": message.verdict,
        "first_outcome": message.first_outcome or None,
        "reported_exit_reason": (
            message.reported_exit_reason if message.HasField("reported_exit_reason") else None
        ),
        "capabilities": message.capabilities,
        "failures": [
            {
                "check": f.check,
                "section": f.section,
                "stage": f.stage,
                "outcome": f.outcome,
                "fields": list(f.fields),
                "values": {name: f.values[name] for name in f.fields if name in f.values},
                "message": f.message,
                "capability_dependent": f.capability_dependent,
            }
            for f in message.failures
        ],
        "not_checked": [
            {"check": n.check, "missing": list(n.missing)} for n in message.not_checked
        ],
    }
