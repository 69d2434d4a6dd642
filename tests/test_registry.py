"""The registry's bookkeeping: what creating and deleting vCPUs leaves behind."""

from __future__ import annotations

from vmxsim_server.registry import Registry


def test_a_vcpu_created_without_a_vm_takes_its_vm_with_it() -> None:
    registry = Registry()
    for _ in range(3):
        entry = registry.create_vcpu(profile="kvm")
        registry.delete_vcpu(entry.vcpu_id)
    assert registry.list_vms() == []
    assert registry.list_vcpus() == []


def test_a_vm_made_by_create_vm_stays_when_its_last_vcpu_goes() -> None:
    registry = Registry()
    vm = registry.create_vm()
    entry = registry.create_vcpu(vm_id=vm.vm_id, profile="kvm")
    registry.delete_vcpu(entry.vcpu_id)
    assert [v.vm_id for v in registry.list_vms()] == [vm.vm_id]


def test_an_implicit_vm_stays_while_it_has_vcpus() -> None:
    registry = Registry()
    first = registry.create_vcpu(profile="kvm")
    second = registry.create_vcpu(vm_id=first.vm.vm_id, profile="kvm")
    registry.delete_vcpu(first.vcpu_id)
    assert [v.vm_id for v in registry.list_vms()] == [first.vm.vm_id]
    registry.delete_vcpu(second.vcpu_id)
    assert registry.list_vms() == []
