"""Every L1 instruction row and panicking handler of the shipped profiles cites a file and function
that the profile's ``[[sources]]`` list (at its commit); where a local intel/haxm mirror exists,
the cited HAXM function is also found in that file at that commit."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from vmxsim_server.vmx.profiles import Profile, Source, available_profiles, load_profile

_CITATION = re.compile(r"^(?P<path>[\w./-]+\.[ch])(?::[\d-]+)?\s+(?P<function>[A-Za-z_]\w*)")
_HAXM_MIRROR = Path(os.environ.get("VMXSIM_HAXM_MIRROR", "/work/.mirror/intel+haxm/repo"))


def _citations(profile: Profile) -> list[tuple[str, str]]:
    """(where, citation text) of every row and every panicking handler of the profile."""
    found = []
    sections = {
        "after_exit": profile.after_exit,
        "before_entry": profile.before_entry,
        "after_user_exit": profile.after_user_exit,
        "vmcs_load": profile.vmcs_load,
        "vmcs_put": profile.vmcs_put,
        "handlers.default": profile.default,
        **{f"handlers.{n}": h for n, h in profile.handlers.items()},
    }
    for where, section in sections.items():
        found += [(f"{where}[{i}]", row.source) for i, row in enumerate(section.instructions)]
        if getattr(section, "panic", False):
            found.append((where, section.source))
    return found


def _source_for(profile: Profile, path: str) -> Source | None:
    return next((s for s in profile.sources if s.path == path), None)


@pytest.mark.parametrize("name", available_profiles())
def test_every_row_cites_a_listed_file_and_function(name: str) -> None:
    profile = load_profile(name)
    citations = _citations(profile)
    assert citations, f"{name} has no instruction rows"
    for where, text in citations:
        match = _CITATION.match(text)
        assert match, f"{name} {where}: source {text!r} does not start with 'file[:lines] function'"
        source = _source_for(profile, match["path"])
        assert source is not None, f"{name} {where}: {match['path']} is not in [[sources]]"
        assert match["function"] in source.functions, (
            f"{name} {where}: {match['function']} is not listed for {source.path} in [[sources]]"
        )


def test_haxm_panics_are_the_reasons_without_a_handler() -> None:
    for name in ("haxm-legacy", "haxm-cache"):
        profile = load_profile(name)
        assert profile.default.panic  # null_handler
        for reason in (44, 18, 2):  # APIC_ACCESS, VMCALL, TRIPLE_FAULT
            assert profile.handler(reason).panic, (name, reason)
        for reason in (0, 1, 7, 8, 10, 12, 28, 29, 30, 31, 32, 48, 49):  # handler_funcs entries
            assert not profile.handler(reason).panic, (name, reason)


def test_haxm_cache_injects_after_an_interrupt_window_with_two_reads() -> None:
    entry = load_profile("haxm-cache").handler(7).entry
    assert [f.name for f in entry.reads] == ["GUEST_RFLAGS", "GUEST_INTERRUPTIBILITY_INFO"]
    assert not load_profile("haxm-legacy").handler(7).entry.reads  # copies, no VMREAD


def _git_show(commit: str, path: str) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(_HAXM_MIRROR), "show", f"{commit}:{path}"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


@pytest.mark.skipif(not _HAXM_MIRROR.is_dir(), reason="no local intel/haxm mirror")
@pytest.mark.parametrize("name", ["haxm-legacy", "haxm-cache"])
def test_cited_haxm_functions_exist_at_the_profiles_commit(name: str) -> None:
    profile = load_profile(name)
    texts: dict[str, str | None] = {}
    for where, citation in _citations(profile):
        match = _CITATION.match(citation)
        assert match
        source = _source_for(profile, match["path"])
        assert source is not None
        if source.path not in texts:
            texts[source.path] = _git_show(source.commit, source.path)
        text = texts[source.path]
        if text is None:
            pytest.skip(f"{source.commit} not in the local mirror")
        assert re.search(rf"\b{match['function']}\b", text), (name, where, match["function"])
