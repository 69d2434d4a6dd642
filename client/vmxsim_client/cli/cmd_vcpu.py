"""``vmxsim vcpu create|list|show|delete``: manage the vCPUs of a server.

Without ``--server`` the in-process server ends with the command, so ``vcpu create`` then only
shows what a server would create (useful with ``--json``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..wire import VcpuInfo
from .common import (
    add_server_options,
    add_vcpu_options,
    client_from_args,
    create_vcpu_from_args,
    rpc_command,
)
from .output import emit_json, render_rows

__all__ = ["register"]

COLUMNS = ("vcpu_id", "vm_id", "profile", "mode", "vcpu_mode", "current_vmcs", "exits")
INVALID_POINTER = (1 << 64) - 1


def _row(info: VcpuInfo) -> dict[str, Any]:
    pointer = info.current_vmcs_pointer
    return {
        "vcpu_id": info.vcpu_id,
        "vm_id": info.vm_id,
        "profile": info.profile,
        "mode": info.mode,
        "vcpu_mode": info.vcpu_mode,
        "current_vmcs": "none" if pointer == INVALID_POINTER else f"{pointer:#x}",
        "exits": info.exits,
    }


def _print(infos: Sequence[VcpuInfo], as_json: bool, single: bool = False) -> None:
    if as_json:
        docs = [i.to_json() for i in infos]
        emit_json(docs[0] if single else docs, indent=2)
    elif single:
        info = infos[0]
        for key, value in _row(info).items():
            print(f"{key:<14}{value}")
        print("capabilities")
        for key, value in info.capabilities.items():
            if key == "vmx_msrs":
                continue
            shown = f"{value:#x}" if key in ("revision_id", "feature_control") else value
            print(f"  {key:<18}{shown}")
        print("vmx_msrs (as rdmsr reads them; a file of these lines is a --capabilities FILE)")
        for name, value in info.capabilities.get("vmx_msrs", {}).items():
            print(f"  {name:<29}{value:#018x}")
    else:
        render_rows([_row(i) for i in infos], COLUMNS)


@rpc_command
def _create(args: argparse.Namespace) -> int:
    if not args.server:
        print(
            "vmxsim: warning: no --server: the vCPU lives in this command's own in-process server"
            " and dies with it (start one with 'vmxsim serve' and pass --server HOST:PORT)",
            file=sys.stderr,
        )
    with client_from_args(args) as client:
        vcpu = create_vcpu_from_args(client, args)
        _print([vcpu.info], args.json, single=True)
    return 0


@rpc_command
def _list(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        _print(client.list_vcpus(vm=args.vm), args.json)
    return 0


@rpc_command
def _show(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        _print([client.get_vcpu(args.vcpu_id)], args.json, single=True)
    return 0


@rpc_command
def _delete(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        client.delete_vcpu(args.vcpu_id)
    if args.json:
        emit_json({"deleted": args.vcpu_id})
    else:
        print(f"deleted vCPU {args.vcpu_id}")
    return 0


def register(sub: Any) -> None:
    """Add ``vcpu`` and its actions to the CLI."""
    group = sub.add_parser(
        "vcpu", help="create, list, show and delete vCPUs", description=__doc__.splitlines()[0]
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", parser_class=type(group))
    actions.required = True

    p = actions.add_parser("create", help="create a vCPU (prints it)")
    add_vcpu_options(p)
    add_server_options(p)
    p.set_defaults(func=_create)

    p = actions.add_parser("list", help="list vCPUs")
    p.add_argument("--vm", metavar="ID", help="only the vCPUs of this VM")
    add_server_options(p)
    p.set_defaults(func=_list)

    p = actions.add_parser("show", help="show one vCPU")
    p.add_argument("vcpu_id", metavar="ID")
    add_server_options(p)
    p.set_defaults(func=_show)

    p = actions.add_parser("delete", help="delete one vCPU")
    p.add_argument("vcpu_id", metavar="ID")
    add_server_options(p)
    p.set_defaults(func=_delete)
