"""docs/entry-checks.md is the check table, rendered (scripts/gen_entry_checks_doc)."""

from __future__ import annotations

from pathlib import Path

from vmxsim_server.vmx.entry_checks import CHECKS, markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "entry-checks.md"


def test_the_doc_lists_every_check_of_the_table() -> None:
    text = DOC.read_text()
    assert text == markdown(CHECKS), "run scripts/gen_entry_checks_doc"
    for check in CHECKS:
        assert f"| `{check.id}` | {check.section} | {check.stage.value} |" in text
