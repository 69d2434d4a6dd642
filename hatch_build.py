"""Build hook: compiles the trace reader's C bulk path (client/vmxsim_client/traces/_scan.c).

The extension is optional: without a C compiler, or with ``VMXSIM_NO_NATIVE=1``, the wheel is
pure Python and the reader runs the Python twin (``traces/scan.py``; same output, slower). The
compiler is the one Python was built with (``sysconfig``'s ``CC``), as setuptools would use.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("client/vmxsim_client/traces/_scan.c")


class NativeScanHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("VMXSIM_NO_NATIVE") not in (None, "", "0"):
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        target = root / SOURCE.with_name("_scan" + suffix)
        if not compile_scan(root / SOURCE, target):
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][str(target)] = str(
                Path("vmxsim_client/traces") / target.name
            )


def compile_scan(source: Path, target: Path) -> bool:
    """Compile ``source`` into the extension module ``target``; False (and a warning) if not."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    command = [
        *cc, "-O2", "-shared", "-fPIC", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Werror",
        f"-I{include}", str(source), "-o", str(target),
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(
            f"vmxsim: the C trace scanner was not built ({detail.strip()[:400]}); "
            "the reader uses its Python twin",
            file=sys.stderr,
        )
        return False
    return True
