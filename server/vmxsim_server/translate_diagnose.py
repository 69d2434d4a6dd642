"""Wire <-> core for the Diagnose RPC: the request's dump, values and capability MSRs in, the
core's diagnoses (``vmx.diagnosis``) out as ``DumpDiagnosis`` messages."""

from __future__ import annotations

from vmxsim.v1 import vmxsim_pb2 as pb

from .vmx.capabilities import Capabilities
from .vmx.capability_file import MAXPHYADDR, msr_index
from .vmx.capability_msrs import with_msrs
from .vmx.diagnosis import Diagnosis

__all__ = ["diagnose_capabilities", "diagnose_response"]


def diagnose_capabilities(request: pb.DiagnoseRequest) -> Capabilities | None:
    """The capabilities a request gives (None: the dump's own or the defaults), checked as
    ``CreateVcpu`` checks its ``vmx_msrs`` (``capability_msrs.with_msrs``: values no processor
    can report are refused, naming the MSR)."""
    msrs = {
        msr_index(name, "capability_msrs"): value for name, value in request.capability_msrs.items()
    }
    if request.maxphyaddr:
        msrs[MAXPHYADDR] = request.maxphyaddr
    return with_msrs(Capabilities(), msrs) if msrs else None


def _diagnosis(found: Diagnosis) -> pb.DumpDiagnosis:
    doc = found.to_doc()
    message = pb.DumpDiagnosis(
        format=doc["format"],
        line=doc["line"],
        fields_read=doc["fields_read"],
        sdm=doc["sdm"],
        verdict=doc["verdict"],
        first_outcome=doc["first_outcome"] or "",
        capabilities=doc["capabilities"],
        failures=[
            pb.DiagnosedFailure(
                check=f["check"],
                section=f["section"],
                stage=f["stage"],
                outcome=f["outcome"],
                fields=f["fields"],
                values=f["values"],
                message=f["message"],
                capability_dependent=f["capability_dependent"],
            )
            for f in doc["failures"]
        ],
        not_checked=[
            pb.DiagnosedNotChecked(check=n["check"], missing=n["missing"])
            for n in doc["not_checked"]
        ],
    )
    if doc["reported_exit_reason"] is not None:
        message.reported_exit_reason = doc["reported_exit_reason"]
    return message


def diagnose_response(diagnoses: list[Diagnosis]) -> pb.DiagnoseResponse:
    """The response of Diagnose."""
    return pb.DiagnoseResponse(diagnoses=[_diagnosis(d) for d in diagnoses])
