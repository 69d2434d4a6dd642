"""The exit-reason table and its synonyms; the VM-instruction error table."""

from __future__ import annotations

import pytest

from vmxsim_server.vmx import EXIT_REASONS, INSTRUCTION_ERRORS, error_message, lookup_reason


def test_reason_numbers_are_unique_and_cover_the_sdm_range() -> None:
    numbers = [r.number for r in EXIT_REASONS]
    assert len(numbers) == len(set(numbers))
    assert set(range(78)) - set(numbers) == {35, 38, 42, 71}


@pytest.mark.parametrize(
    ("spelling", "number"),
    [
        ("CPUID", 10),
        ("cpuid", 10),
        ("PENDING_INTERRUPT", 7),
        ("INTERRUPT_WINDOW", 7),
        ("VMX_EXIT_INT_WINDOW", 7),
        ("EXIT_REASON_IO_INSTRUCTION", 30),
        ("VMX_EXIT_PORT_IO", 30),
        ("apic_access", 44),
        ("io_instruction", 30),
        ("ext_irq", 1),
        ("halt", 12),
        ("hypercall", 18),
        ("rdmsr", 31),
        ("WRMSR", 32),
        ("VMX_EXIT_XCPT_OR_NMI", 0),
        ("48", 48),
        ("0x30", 48),
        (0x80000021, 33),
    ],
)
def test_synonyms_that_trace_tools_print(spelling: str | int, number: int) -> None:
    reason = lookup_reason(spelling)
    assert reason is not None
    assert reason.number == number


@pytest.mark.parametrize("spelling", ["", "EXIT_NPF", "EXIT_CPUID", "NOT_A_REASON", "35", "0xzz"])
def test_unknown_reasons_are_none(spelling: str) -> None:
    assert lookup_reason(spelling) is None


def test_instruction_errors_1_to_28_without_the_reserved_ones() -> None:
    assert set(INSTRUCTION_ERRORS) == set(range(1, 29)) - {14, 21, 27}
    assert error_message(13) == "VMWRITE to read-only VMCS component"
    assert "undefined" in error_message(99)
