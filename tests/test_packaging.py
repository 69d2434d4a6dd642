"""The built wheel installs exactly vmxsim, vmxsim_server and vmxsim_client, and one script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("vmxsim-*.whl")
    return built


def test_wheel_has_only_the_three_import_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"vmxsim", "vmxsim_server", "vmxsim_client"}
    assert not any(n.split("/")[0] in ("server", "client", "protos") for n in names)
    assert "vmxsim_server/vmx/fields.py" in names
    assert all(f"{p}/py.typed" in names for p in top)


def test_wheel_declares_one_console_script(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
    text = archive.read(entry_points).decode()
    scripts = text.split("[console_scripts]")[1].strip().splitlines()
    assert [s.split("=")[0].strip() for s in scripts if s.strip()] == ["vmxsim"]


def test_no_bare_server_or_client_module_is_importable() -> None:
    for name in ("server", "client", "protos"):
        result = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, cwd="/", timeout=60
        )
        assert result.returncode != 0, name


def test_the_core_imports_neither_grpc_nor_prometheus() -> None:
    code = (
        "import sys, vmxsim_server.vmx, vmxsim_server.vmx.vcpu;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'prometheus_client',"
        " 'google')]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout
