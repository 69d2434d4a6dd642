"""The seed projection of docs/model.md, pinned: the nested model term by term on linux-boot
(20,000 exits, seed 0, L0 kvm-4.17), as printed by `vmxsim model project --mix linux-boot`."""

from __future__ import annotations

import pytest

from vmxsim_server.vmx.mixes import load_mix
from vmxsim_server.vmx.projection import (
    SEED_HAXM_SECONDS,
    TERMS,
    decompose,
    priced_mix,
    project,
)

# docs/model.md, "Projection: HAXM (after), term by term": (term, haxm/kvm, HAXM (after) s)
DOCUMENTED = [
    ("vmx-only", 3.02, 426.2),
    ("+ kvm-l0-base", 2.84, 429.6),
    ("+ user-space handlers", 2.39, 440.1),
    ("+ l1-other-traps", 2.88, 514.1),
    ("+ l0-vmx-work", 2.99, 575.7),
    ("+ vmcs02-rebuilds", 3.04, 575.0),
]


@pytest.fixture(scope="module")
def steps() -> list:
    return decompose(priced_mix(load_mix("linux-boot")).mix, exits=20_000)


def test_each_term_matches_the_documented_table(steps: list) -> None:
    assert [s.name for s, _ in steps] == [t.name for t in TERMS] == [d[0] for d in DOCUMENTED]
    for (step, p), (_, ratio, after) in zip(steps, DOCUMENTED, strict=True):
        assert p.predicted_ratio == pytest.approx(ratio, abs=0.01), step.name
        assert p.after_exits_only == pytest.approx(after, abs=0.15), step.name


def test_the_full_model_makes_haxm_after_slower_than_before(steps: list) -> None:
    vmx_only, full = steps[0][1], steps[-1][1]
    assert vmx_only.after_exits_only < SEED_HAXM_SECONDS < full.after_exits_only
    assert full.after_slower and not vmx_only.after_slower
    assert full.residual_factor > 3  # the per-exit model leaves most of the 11.7x unexplained


def test_windows7_drops_the_apic_accesses_haxm_never_sees() -> None:
    priced = priced_mix(load_mix("windows7"))
    assert priced.dropped[44] == pytest.approx(0.666, abs=0.001)
    assert 44 not in priced.mix.weights


def test_project_fits_guest_work_and_exits_exactly() -> None:
    p = project({"kvm": 1e-5, "haxm-legacy": 3e-5, "haxm-cache": 2e-5}, "nested")
    assert p.fitted_guest_seconds + p.fitted_exits * 1e-5 == pytest.approx(45.4)
    assert p.fitted_guest_seconds + p.fitted_exits * 3e-5 == pytest.approx(532.5)
    assert p.predicted_ratio == pytest.approx(3.0) and not p.after_slower
