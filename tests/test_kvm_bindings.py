"""The cffi bindings against the real /dev/kvm: layouts, errors, ioctls."""

from __future__ import annotations

import errno
import os

import pytest

from kvm_bindings import IrqchipRoute, Kvm, KvmError, MsiRoute, consts, ffi


def test_layouts_match_uapi():
    # Sizes fixed by the KVM ABI (include/uapi/linux/kvm.h).
    assert ffi.sizeof("struct kvm_irq_routing_entry") == 48
    assert ffi.sizeof("struct kvm_xen_hvm_attr") == 72
    assert ffi.sizeof("struct kvm_xen_vcpu_attr") == 72
    assert ffi.sizeof("struct kvm_xen_hvm_config") == 56
    assert ffi.sizeof("struct kvm_msi") == 32
    assert ffi.offsetof("struct kvm_irq_routing_entry", "u") == 16
    # kvm_run: exit union at 32, sync regs at 0x130 (kvm_valid_regs at 0x120)
    assert consts.KVM_RUN_OFF_IO == 32 and consts.KVM_RUN_OFF_XEN == 32
    assert ffi.offsetof("struct kvm_run", "kvm_valid_regs") == 0x120
    assert consts.KVM_RUN_OFF_SYNC_REGS == 0x130
    assert consts.KVM_XEN_HVM_SET_ATTR == 0x4048AEC9
    assert consts.KVM_XEN_HVM_EVTCHN_SEND == 0x400CAED0


def test_error_names_ioctl_and_errno():
    kvm = Kvm()
    vm = kvm.create_vm()
    with pytest.raises(KvmError) as ei:
        vm.create_vcpu(0)
        vm.create_vcpu(0)        # duplicate id
    assert ei.value.ioctl == "KVM_CREATE_VCPU"
    assert ei.value.errno == errno.EEXIST
    assert "KVM_CREATE_VCPU failed: EEXIST" in str(ei.value)
    vm.close()
    kvm.close()


def test_open_failure_is_kvm_error(tmp_path):
    with pytest.raises(KvmError, match="open"):
        Kvm(str(tmp_path / "nokvm"))


def test_vcpu_state_round_trip():
    kvm = Kvm()
    vm = kvm.create_vm()
    vm.create_irqchip()
    vcpu = vm.create_vcpu(0)
    regs = vcpu.get_regs()
    regs.rax, regs.r15, regs.rip = 0x1234, 0xDEADBEEF, 0xFFF0
    vcpu.set_regs(regs)
    back = vcpu.get_regs()
    assert (back.rax, back.r15, back.rip) == (0x1234, 0xDEADBEEF, 0xFFF0)
    sregs = vcpu.get_sregs()
    assert sregs.cs.selector == 0xF000  # reset state
    vcpu.set_msrs({0x174: 0x10})          # IA32_SYSENTER_CS
    assert vcpu.get_msrs([0x174])[0x174] == 0x10
    assert vcpu.get_mp_state() == consts.KVM_MP_STATE_RUNNABLE
    lapic = vcpu.get_lapic()
    vcpu.set_lapic(lapic)
    vcpu.get_vcpu_events()
    vcpu.get_fpu()
    vcpu.close()
    vm.close()


def test_supported_cpuid_and_caps():
    kvm = Kvm()
    cpuid = kvm.supported_cpuid()
    fns = {cpuid.entries[i].function for i in range(cpuid.nent)}
    assert 0 in fns and 1 in fns
    assert kvm.check_extension(consts.KVM_CAP_IMMEDIATE_EXIT) == 1
    assert kvm.check_extension(0x7FFFFFFF) == 0
    kvm.close()


def test_gsi_routing_irqfd_and_signal_msi():
    kvm = Kvm()
    vm = kvm.create_vm()
    vm.create_irqchip()
    vm.create_vcpu(0)
    vm.set_gsi_routing([IrqchipRoute(4, consts.KVM_IRQCHIP_IOAPIC, 4),
                        MsiRoute(30, 0xFEE00000, 0x41)])
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    vm.irqfd(efd, 30)
    vm.irqfd(efd, 30, deassign=True)
    os.close(efd)
    vm.irq_line(4, 1)
    vm.irq_line(4, 0)
    assert vm.signal_msi(0xFEE00000, 0x41) >= 0
    vm.close()
    kvm.close()


def test_bad_memory_region_is_rejected():
    kvm = Kvm()
    vm = kvm.create_vm()
    with pytest.raises(KvmError, match="KVM_SET_USER_MEMORY_REGION"):
        vm.set_user_memory_region(0, 0x1000, 0x1001, 0)   # unaligned size
    vm.close()
    kvm.close()
