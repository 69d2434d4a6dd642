"""What a replay checkpoint costs on a VM at the VMCS-region limit (docs/reliability.md).

A VM with ``--max-vmcs-regions`` regions, every field set: the whole snapshot (taken once per
replay, as the checkpoints' base) against the per-batch checkpoint, which carries only the
current VMCS (``dump(current_only=True)``). Usage: ``.venv/bin/python
benchmarks/checkpoint_cost.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import time

from vmxsim_server.limits import BY_NAME
from vmxsim_server.registry import Registry
from vmxsim_server.vmx.fields import FIELDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    registry = Registry()
    entry = registry.create_vcpu()
    memory, vcpu = entry.vm.memory, entry.vcpu
    regions = int(BY_NAME["max_vmcs_regions"].default)
    for i in range(regions - 2):
        memory.region(0x1000 * (i + 16)).values = [f.mask for f in FIELDS]
    for address in (0x1000, 0x2000):
        memory.write32(address, vcpu.capabilities.revision_id)
    vcpu.vmxon(0x1000)
    vcpu.vmptrld(0x2000)
    for name, current_only in (("whole snapshot (base)", False), ("per-batch", True)):
        start = time.perf_counter()
        for _ in range(args.repeat):
            data = registry.snapshot(entry, current_only)
        seconds = (time.perf_counter() - start) / args.repeat
        print(f"{name}: {seconds * 1000:.1f} ms, {len(data):,} bytes ({regions} regions)")


if __name__ == "__main__":
    main()
