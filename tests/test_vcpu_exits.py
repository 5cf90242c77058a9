"""vCPU-level KVM features on tiny hand-assembled guests: MSR filter exits, sync_regs.

The guests are a few bytes of 32-bit code at 1 MiB entered in flat protected
mode; each test drives KVM_RUN itself and asserts on the exit KVM reports.
"""

from __future__ import annotations

import pytest

from kvm_bindings import consts
from vmm.boot.cpu_state import set_protected_mode_flat
from vmm.vm import Vm, VmConfig

CODE = 0x100000


@pytest.fixture
def vm():
    v = Vm(VmConfig(memory=16 << 20))
    yield v
    v.close()


def start(vm, code: bytes, **regs):
    vm.memory.write(CODE, code)
    set_protected_mode_flat(vm.boot_vcpu, CODE, 0)
    if regs:
        r = vm.boot_vcpu.get_regs()
        for k, val in regs.items():
            setattr(r, k, val)
        vm.boot_vcpu.set_regs(r)
    return vm.boot_vcpu


def test_msr_filter_sends_wrmsr_and_rdmsr_to_user_space(vm):
    vm.fd.enable_cap(consts.KVM_CAP_X86_USER_SPACE_MSR, consts.KVM_MSR_EXIT_REASON_FILTER)
    # A 0 bit denies the access in the kernel -> exit to us.
    vm.fd.set_msr_filter([(consts.KVM_MSR_FILTER_READ | consts.KVM_MSR_FILTER_WRITE, 0x40000000, 1, b"\x00")])
    code = bytes([
        0xB9, 0x00, 0x00, 0x00, 0x40,      # mov $0x40000000, %ecx
        0xB8, 0x78, 0x56, 0x34, 0x12,      # mov $0x12345678, %eax
        0xBA, 0x01, 0x00, 0x00, 0x00,      # mov $1, %edx
        0x0F, 0x30,                        # wrmsr
        0x0F, 0x32,                        # rdmsr
        0x66, 0xBA, 0x00, 0x06,            # mov $0x600, %dx
        0xEF,                              # out %eax, (%dx)
        0xF4,                              # hlt
    ])
    vcpu = start(vm, code)
    assert vcpu.run_once() == 0
    assert vcpu.run.exit_reason == consts.KVM_EXIT_X86_WRMSR
    assert vcpu.msr.index == 0x40000000 and vcpu.msr.data == 0x1_12345678
    assert vcpu.msr.reason == consts.KVM_MSR_EXIT_REASON_FILTER
    vcpu.msr.error = 0
    assert vcpu.run_once() == 0
    assert vcpu.run.exit_reason == consts.KVM_EXIT_X86_RDMSR and vcpu.msr.index == 0x40000000
    vcpu.msr.data = 0xCAFE0000_0000BEEF
    vcpu.msr.error = 0
    assert vcpu.run_once() == 0
    assert vcpu.run.exit_reason == consts.KVM_EXIT_IO and vcpu.io.port == 0x600
    assert int.from_bytes(vcpu.run_view[vcpu.io.data_offset:vcpu.io.data_offset + 4], "little") == 0xBEEF


def test_sync_regs_read_and_write_without_ioctls(vm):
    code = bytes([
        0x66, 0xBA, 0x00, 0x06,            # mov $0x600, %dx
        0xEE,                              # out %al, (%dx)       exit 1
        0x89, 0xD8,                        # mov %ebx, %eax
        0xEF,                              # out %eax, (%dx)      exit 2: reports %ebx
        0xF4,
    ])
    vcpu = start(vm, code, rbx=0x1111, rsi=0x2222)
    vcpu.run.kvm_valid_regs = consts.KVM_SYNC_X86_REGS
    assert vcpu.run_once() == 0 and vcpu.io.port == 0x600
    regs = vcpu.sync_regs
    assert regs.rbx == 0x1111 and regs.rsi == 0x2222 and regs.rip == CODE + 5
    regs.rbx = 0xABCDEF                    # change it through the shared page
    vcpu.run.kvm_dirty_regs = consts.KVM_SYNC_X86_REGS
    assert vcpu.run_once() == 0 and vcpu.io.port == 0x600
    off = vcpu.io.data_offset
    assert int.from_bytes(vcpu.run_view[off:off + 4], "little") == 0xABCDEF


def test_vcpu_kick_interrupts_a_spinning_guest(vm):
    import threading
    import time
    vm.memory.write(CODE, bytes([0xEB, 0xFE]))         # jmp . (never exits)
    set_protected_mode_flat(vm.boot_vcpu, CODE, 0)
    vm.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    vm.request_exit(7, "test")
    assert vm.wait(5) == 7
    assert time.monotonic() - t0 < 3
    assert not vm.vcpus[0].thread.is_alive()
    assert threading.active_count() >= 1


def test_pause_parks_the_vcpu_and_resume_continues(vm):
    import time
    # 1: incl (0x200000); jmp 1b
    vm.memory.write(CODE, bytes([0xFF, 0x05, 0x00, 0x00, 0x20, 0x00, 0xEB, 0xF8]))
    set_protected_mode_flat(vm.boot_vcpu, CODE, 0)
    vm.start()
    time.sleep(0.2)
    v = vm.vcpus[0]
    v.pause(5)
    a = vm.memory.read_u32(0x200000)
    time.sleep(0.2)
    assert vm.memory.read_u32(0x200000) == a and a > 0
    v.resume()
    time.sleep(0.2)
    assert vm.memory.read_u32(0x200000) > a
    vm.request_exit(0, "done")
    assert vm.wait(5) == 0
