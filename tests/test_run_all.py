"""``benchmarks/run_all.py --quick`` stays a smoke run (issue 15: under a minute): every
benchmark in the directory has small --quick sizes in QUICK (one without them runs full size,
as bench_reader_contention did: 85 s instead of 17 s), and each of those sizes is an option its
benchmark accepts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_has_quick_sizes() -> None:
    run_all = _run_all()
    on_disk = {path.stem for path in BENCHMARKS.glob("bench_*.py")}
    assert set(run_all.QUICK) == on_disk
    assert run_all.BENCHMARKS[: len(run_all.QUICK)] == list(run_all.QUICK)


def test_every_quick_option_is_one_its_benchmark_takes() -> None:
    for name, arguments in _run_all().QUICK.items():
        usage = subprocess.run(
            [sys.executable, str(BENCHMARKS / f"{name}.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert usage.returncode == 0, (name, usage.stderr)
        for option in (word for word in arguments if word.startswith("--")):
            assert option in usage.stdout, (name, option)
