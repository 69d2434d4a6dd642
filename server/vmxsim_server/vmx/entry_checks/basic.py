"""Basic VM-entry checks (SDM 27.1), run before any VMCS field is checked.

They read vCPU state, not VMCS fields, through the pseudo-values documented in ``table``. Not
modelled because vmxsim's VMX instructions always run in 64-bit mode at CPL 0: the #UD in
real-address, virtual-8086 or compatibility mode and the #GP(0) at CPL > 0 (27.1 items 2-3);
VMX non-root operation (item 1) is a VM exit the vCPU takes before the table is consulted.
"""

from __future__ import annotations

from .bits import rows_for
from .table import Stage

_row = rows_for(Stage.BASIC)

BASIC_CHECKS = (
    _row("basic.current_vmcs", "27.1", (),
         lambda v, c: v("@current_vmcs") == 1,
         "no current VMCS (the current-VMCS pointer is FFFFFFFF_FFFFFFFFH)",
         outcome="VMfailInvalid"),
    _row("basic.shadow_vmcs", "27.1", (),
         lambda v, c: v("@shadow_indicator") == 0,
         "the current VMCS is a shadow VMCS (shadow-VMCS indicator, header bit 31, is 1)",
         outcome="VMfailInvalid"),
    _row("basic.mov_ss_blocking", "27.1", (),
         lambda v, c: v("@mov_ss_blocking") == 0,
         "events are blocked by MOV SS (VMLAUNCH/VMRESUME right after MOV SS or POP SS)",
         outcome="VMfailValid 26"),
    _row("basic.launch_state.clear", "27.1", (),
         lambda v, c: not v("@launch") or v("@launch_state") == 0,
         "VMLAUNCH with a launched VMCS (the launch state is not clear)",
         outcome="VMfailValid 4"),
    _row("basic.launch_state.launched", "27.1", (),
         lambda v, c: bool(v("@launch")) or v("@launch_state") == 1,
         "VMRESUME with a clear VMCS (the launch state is not launched)",
         outcome="VMfailValid 5"),
    # Table 31-1 error 6 "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and
    # VMRESUME)"; 27.1 does not list it, the instruction reference (31.3 VMRESUME) does.
    _row("basic.vmxoff_since_launch", "31.3", (),
         lambda v, c: bool(v("@launch")) or v("@vmxon_epoch_ok") == 1,
         "VMRESUME after VMXOFF and VMXON since this VMCS's VMLAUNCH",
         outcome="VMfailValid 6"),
)  # fmt: skip
