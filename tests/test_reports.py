"""``vmxsim report`` and ``vmxsim compare --html`` through a real server: the PNG charts and the
self-contained HTML page; per-exit histograms that agree with the run summaries; the one-line
error without matplotlib."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from vmxsim_client.cli import main
from vmxsim_client.client import Client
from vmxsim_client.reports.charts import CHART_FILES
from vmxsim_client.reports.runs import collect

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_report_writes_every_chart_and_the_html(
    tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir, html = tmp_path / "charts", tmp_path / "report.html"
    status = main(["report", str(FIXTURES / "ftrace_new.txt"), "--out-dir", str(out_dir),
                   "--html", str(html), "--profiles", "haxm-legacy,haxm-cache,kvm",
                   "--modes", "native,nested,nested-shadow", "--server", vmxsim_address,
                   "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    result = json.loads(out)
    assert result["files"] == [*(str(out_dir / name) for name in CHART_FILES), str(html)]
    assert len(result["runs"]) == 9 and {r["exits"] for r in result["runs"]} == {4}
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(CHART_FILES)
    for name in CHART_FILES:
        assert_png((out_dir / name).read_bytes())
    page = html.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(CHART_FILES)
    assert "http" not in page  # no external asset
    assert "<td>kvm</td><td>nested-shadow</td>" in page and "CR_ACCESS" in page


def test_compare_html_reuses_the_report(
    tmp_path: Path, vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "compare.html"
    status = main(["compare", "mix:linux-boot:3000", "--profiles", "kvm,kvm-modern",
                   "--html", str(html), "--server", vmxsim_address])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "vs fastest" in out and "VMREADs/VMWRITEs per exit, by exit reason" in out
    assert html.read_text().count("data:image/png;base64,") == len(CHART_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["compare.html"]


def test_histograms_agree_with_the_summaries(vmxsim_address: str) -> None:
    with Client(vmxsim_address) as client:
        report = collect(client, "mix:linux-boot:5000:1", ["haxm-cache", "kvm"], ["nested"])
    for run in report.runs:
        reads, writes = run.vmread_hist, run.vmwrite_hist
        # per-exit arrays stay aligned with the input: a panicking exit is a row of zeros
        exits = run.summary["exits"] + sum(run.summary["panics"].values())
        assert sum(reads.values()) == sum(writes.values()) == exits == 5000
        assert sum(k * n for k, n in reads.items()) == run.summary["instructions"]["vmread"]
        assert sum(k * n for k, n in writes.items()) == run.summary["instructions"]["vmwrite"]


def test_report_without_matplotlib_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    status = main(["report", "mix:linux-boot:100", "--out-dir", str(tmp_path / "r")])
    _, err = capsys.readouterr()
    assert status == 2
    assert err == "vmxsim: error: vmxsim report needs matplotlib: pip install 'vmxsim[reports]'\n"
    assert not (tmp_path / "r").exists()
