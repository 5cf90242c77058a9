"""CPUID is configured once per vCPU, with the leaves higher layers added (vmm/vm.py
``add_cpuid_leaves``/``configure_cpuid``), and the guest sees the composition."""

from __future__ import annotations

import pytest

from kvm_bindings import consts
from vmm.boot.cpu_state import set_protected_mode_flat
from vmm.vm import Vm, VmConfig, VmSetupError

CODE = 0x100000
CPUID_EBX_TO_PORT = bytes([
    0xB8, 0x00, 0x00, 0x00, 0x40,      # mov $0x40000000, %eax
    0x0F, 0xA2,                        # cpuid
    0x89, 0xD8,                        # mov %ebx, %eax
    0x66, 0xBA, 0x00, 0x06,            # mov $0x600, %dx
    0xEF,                              # out %eax, (%dx)
    0xF4,                              # hlt
])


@pytest.fixture
def vm():
    v = Vm(VmConfig(memory=16 << 20, cpus=2))
    yield v
    v.close()


def guest_ebx(vm) -> int:
    vm.memory.write(CODE, CPUID_EBX_TO_PORT)
    vcpu = vm.boot_vcpu
    set_protected_mode_flat(vcpu, CODE, 0)
    assert vcpu.run_once() == 0 and vcpu.run.exit_reason == consts.KVM_EXIT_IO
    off = vcpu.io.data_offset
    return int.from_bytes(vcpu.run_view[off:off + 4], "little")


def test_added_leaves_replace_kvms_and_are_per_vcpu(vm):
    seen = []

    def leaves(vcpu_id):
        seen.append(vcpu_id)
        return {(0x40000000, 0): (0x40000000, 0x1234 + vcpu_id, 0, 0)}
    vm.add_cpuid_leaves(leaves)
    assert guest_ebx(vm) == 0x1234
    assert seen == [0, 1]              # once per vCPU, when boot state was about to be set
    vm.configure_cpuid()               # once only
    assert seen == [0, 1]


def test_leaves_after_configuration_are_refused(vm):
    vm.configure_cpuid()
    with pytest.raises(VmSetupError):
        vm.add_cpuid_leaves(lambda vcpu_id: {})


def test_without_added_leaves_the_guest_sees_kvms_signature(vm):
    assert guest_ebx(vm).to_bytes(4, "little") == b"KVMK"
