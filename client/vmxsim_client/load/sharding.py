"""vCPUs sharded across several vmxsim servers, on the client side (DESIGN.md "Scale").

A vCPU lives in one server process, so a client that spreads vCPUs over several servers must
remember where each one went. ``ShardedClient`` places each new vCPU on the next shard in
round-robin order and names it with a qualified id, ``"<shard>/<vcpu id>"`` (the shard is the
target's index in the list, e.g. ``"1/vcpu-7"``); every later call with that id goes to that
shard. The target list must keep its order between runs: with Kubernetes, the StatefulSet's
stable pod names ``vmxsim-0.vmxsim-headless...``, ``vmxsim-1...`` (docs/scale-out.md).

    with ShardedClient(["127.0.0.1:50051", "127.0.0.1:50052"]) as c:
        v = c.create_vcpu(profile="kvm")          # RemoteVcpu on shard 0
        c.qualified_id(v)                         # "0/vcpu-1"
        c.stats("0/vcpu-1")
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ..client import Client, RemoteVcpu
from ..summaries import RunSummary
from ..wire import VcpuInfo

__all__ = ["SEPARATOR", "ShardedClient", "qualify", "split_qualified"]

SEPARATOR = "/"


def qualify(shard: int, vcpu_id: str) -> str:
    """``(1, "vcpu-7")`` -> ``"1/vcpu-7"`` (VM ids are qualified the same way)."""
    return f"{shard}{SEPARATOR}{vcpu_id}"


def split_qualified(qualified_id: str, shards: int) -> tuple[int, str]:
    """``"1/vcpu-7"`` -> ``(1, "vcpu-7")``; ValueError for an id without a valid shard."""
    shard_text, sep, vcpu_id = qualified_id.partition(SEPARATOR)
    if not sep or not shard_text.isdigit() or not vcpu_id:
        raise ValueError(f"{qualified_id!r} is not a sharded vCPU id (SHARD/VCPU_ID)")
    shard = int(shard_text)
    if shard >= shards:
        raise ValueError(f"{qualified_id!r} names shard {shard}; there are {shards}")
    return shard, vcpu_id


class ShardedClient:
    """One ``Client`` per target; vCPUs placed round robin and addressed by qualified id.

    ``options`` are passed to every ``Client`` (``timeout``, TLS, ``token``).
    """

    def __init__(self, targets: Sequence[str], **options: Any) -> None:
        if not targets:
            raise ValueError("a sharded client needs at least one target")
        self.targets = tuple(targets)
        self.shards: list[Client] = []
        try:
            for target in self.targets:
                self.shards.append(Client(target, **options))
        except BaseException:
            self.close()
            raise
        self._next = itertools.cycle(range(len(self.shards)))

    def close(self) -> None:
        """Close every shard's channel."""
        for client in self.shards:
            client.close()

    def __enter__(self) -> ShardedClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def shard_of(self, vcpu: RemoteVcpu) -> int:
        """The index of the shard a vCPU handle belongs to."""
        return self.shards.index(vcpu.client)

    def qualified_id(self, vcpu: RemoteVcpu) -> str:
        """The vCPU's id qualified by its shard, e.g. ``"0/vcpu-1"``."""
        return qualify(self.shard_of(vcpu), vcpu.id)

    def _locate(self, qualified_id: str) -> tuple[Client, str]:
        shard, local_id = split_qualified(qualified_id, len(self.shards))
        return self.shards[shard], local_id

    def _pick(self, shard: int | None) -> int:
        if shard is None:
            return next(self._next)
        if not 0 <= shard < len(self.shards):
            raise ValueError(f"no shard {shard}; there are {len(self.shards)}")
        return shard

    def create_vm(self, shard: int | None = None) -> str:
        """A new empty VM on ``shard`` (default: the next in round-robin order); its
        qualified id."""
        index = self._pick(shard)
        return qualify(index, self.shards[index].create_vm().vm_id)

    def delete_vm(self, qualified_id: str) -> None:
        """Delete a VM and its vCPUs."""
        client, vm_id = self._locate(qualified_id)
        client.delete_vm(vm_id)

    def create_vcpu(
        self, *args: Any, shard: int | None = None, vm: str | None = None, **options: Any
    ) -> RemoteVcpu:
        """A new vCPU (``Client.create_vcpu``'s arguments) in the VM of qualified id ``vm``,
        else on ``shard``, else on the next shard in round-robin order. The handle's ``client``
        is its shard's ``Client``."""
        if vm is not None:
            client, vm_id = self._locate(vm)
            return client.create_vcpu(*args, vm=vm_id, **options)
        return self.shards[self._pick(shard)].create_vcpu(*args, **options)

    def vcpu(self, qualified_id: str) -> RemoteVcpu:
        """A handle on an existing vCPU by qualified id."""
        client, vcpu_id = self._locate(qualified_id)
        return client.vcpu(vcpu_id)

    def get_vcpu(self, qualified_id: str) -> VcpuInfo:
        """One vCPU's current state."""
        client, vcpu_id = self._locate(qualified_id)
        return client.get_vcpu(vcpu_id)

    def delete_vcpu(self, qualified_id: str) -> None:
        """Delete one vCPU."""
        client, vcpu_id = self._locate(qualified_id)
        client.delete_vcpu(vcpu_id)

    def stats(self, qualified_id: str) -> RunSummary:
        """The run summary of every exit a vCPU has handled (``Client.stats``)."""
        client, vcpu_id = self._locate(qualified_id)
        return client.stats(vcpu_id)

    def list_vcpus(self) -> list[str]:
        """The qualified ids of every vCPU on every shard."""
        return [
            qualify(shard, info.vcpu_id)
            for shard, client in enumerate(self.shards)
            for info in client.list_vcpus()
        ]
