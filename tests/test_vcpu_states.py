"""The vCPU state machine (vmm/vcpu.py, ARCHITECTURE.md "vCPU states") on a real VM:
transitions, the answers callers get (pause returns once parked, call returns fn's
result), and the timeouts when a vCPU can't answer.

The guests are a few bytes of 32-bit code at 1 MiB entered in flat protected mode.
"""

from __future__ import annotations

import threading
import time

import pytest

from kvm_bindings import consts
from vmm.boot.cpu_state import set_protected_mode_flat
from vmm.errors import internal_errors, reset_internal_errors
from vmm.vcpu import VcpuState, current_vcpu
from vmm.vm import Vm, VmConfig

CODE = 0x100000
COUNTER = 0x200000
COUNT_LOOP = bytes([0xFF, 0x05, 0x00, 0x00, 0x20, 0x00, 0xEB, 0xF8])    # 1: incl (0x200000); jmp 1b
HALT = bytes([0xFA, 0xF4, 0xEB, 0xFC])                                  # cli; 1: hlt; jmp 1b


@pytest.fixture
def vm():
    reset_internal_errors()
    v = Vm(VmConfig(memory=16 << 20))
    yield v
    if v.exit_code is None:
        v.request_exit(0, "test over")
        v.wait(5)
    v.close()
    assert internal_errors() == []     # e.g. a lock-order inversion (VMM_LOCK_CHECK=1)


def boot(vm, code: bytes):
    vm.memory.write(CODE, code)
    set_protected_mode_flat(vm.boot_vcpu, CODE, 0)
    return vm.vcpus[0]


def counting(vm) -> bool:
    a = vm.memory.read_u32(COUNTER)
    time.sleep(0.15)
    return vm.memory.read_u32(COUNTER) != a


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_created_vcpu_is_idle_call_runs_in_the_caller(vm):
    v = boot(vm, COUNT_LOOP)
    assert v.state is VcpuState.CREATED
    me = threading.current_thread()
    assert v.call(lambda v: threading.current_thread()) is me
    v.pause(0.1)                       # not running guest code: answered at once
    assert v.state is VcpuState.CREATED


def test_start_runs_then_pause_parks_and_resume_runs(vm):
    v = boot(vm, COUNT_LOOP)
    vm.start()
    assert wait_for(lambda: v.state is VcpuState.RUNNING)
    assert counting(vm)
    v.pause(5)
    assert v.state is VcpuState.PARKED and v.pause_requested
    assert not counting(vm)
    v.resume()
    assert wait_for(lambda: v.state is VcpuState.RUNNING)
    assert counting(vm)


def test_paused_before_start_parks_first(vm):
    v = boot(vm, COUNT_LOOP)
    v.pause()
    vm.start()
    assert wait_for(lambda: v.state is VcpuState.PARKED)
    assert vm.memory.read_u32(COUNTER) == 0
    v.resume()
    assert wait_for(lambda: vm.memory.read_u32(COUNTER) > 0)


def test_call_on_a_running_vcpu_runs_on_its_thread(vm):
    v = boot(vm, HALT)                 # in HLT inside KVM_RUN: only a kick gets it out
    vm.start()
    assert wait_for(lambda: v.state is VcpuState.RUNNING)
    time.sleep(0.1)
    assert v.call(lambda v: threading.current_thread()) is v.thread
    assert v.call(lambda v: v.fd.get_mp_state()) == consts.KVM_MP_STATE_HALTED
    with pytest.raises(ZeroDivisionError):
        v.call(lambda v: 1 // 0)       # fn's exception is the caller's
    assert v.state is VcpuState.RUNNING


def test_call_on_a_parked_vcpu_borrows_it(vm):
    v = boot(vm, COUNT_LOOP)
    vm.start()
    v.pause(5)
    inside = threading.Event()
    release = threading.Event()

    def slow(v):
        inside.set()
        release.wait(5)
        return threading.current_thread()
    box = []
    t = threading.Thread(target=lambda: box.append(v.call(slow)))
    t.start()
    assert inside.wait(5)
    v.resume()                         # borrowed: it stays parked until the call is over
    time.sleep(0.2)
    assert v.state is VcpuState.PARKED and not counting(vm)
    release.set()
    t.join(5)
    assert box == [t]                  # ran in the caller's thread
    assert wait_for(lambda: v.state is VcpuState.RUNNING)


def test_call_times_out_when_the_vcpu_thread_is_busy(vm):
    v = boot(vm, COUNT_LOOP)
    busy = threading.Event()
    release = threading.Event()

    class Busy:                        # a device whose handler keeps the vCPU thread
        def read(self, offset, size):
            return 0

        def write(self, offset, size, value):
            busy.set()
            release.wait(10)
    vm.pio_bus.register(0x700, 1, Busy(), "busy")
    vm.memory.write(CODE, bytes([0x66, 0xBA, 0x00, 0x07, 0xEE]) + COUNT_LOOP)   # out %al, $0x700; loop
    set_protected_mode_flat(vm.boot_vcpu, CODE, 0)
    vm.start()
    assert busy.wait(5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        v.call(lambda v: None, timeout=0.3)
    assert time.monotonic() - t0 < 2
    with pytest.raises(TimeoutError):
        v.pause(0.3)
    release.set()
    assert wait_for(lambda: v.state is VcpuState.PARKED)     # the pause still stands
    v.resume()
    assert wait_for(lambda: v.state is VcpuState.RUNNING)


def test_offline_is_not_a_pause(vm):
    """Xen's VCPUOP_down: a VMM pause and resume of an offline vCPU leave it offline."""
    v = boot(vm, COUNT_LOOP)
    vm.start()
    v.take_offline()
    assert wait_for(lambda: v.state is VcpuState.PARKED)
    assert v.offline and not v.pause_requested and not counting(vm)
    v.pause(5)
    v.resume()
    time.sleep(0.1)
    assert v.state is VcpuState.PARKED and v.offline and not counting(vm)
    v.pause(5)
    assert v.bring_online()            # online, but still paused by the VMM
    assert not v.bring_online()        # wasn't offline any more
    time.sleep(0.1)
    assert v.state is VcpuState.PARKED and not counting(vm)
    v.resume()
    assert wait_for(lambda: v.state is VcpuState.RUNNING)
    assert counting(vm)


def test_stop_exits_from_every_state(vm):
    v = boot(vm, COUNT_LOOP)
    vm.start()
    v.pause(5)
    vm.request_exit(3, "stopped while parked")
    assert vm.wait(5) == 3
    assert v.state is VcpuState.EXITED and not v.thread.is_alive()
    assert v.call(lambda v: threading.current_thread()) is threading.current_thread()   # idle fd
    v.pause(0.1)                       # exited: no guest code runs, answered at once


def test_stop_of_a_running_vcpu_and_calls_queued_as_it_exits(vm):
    v = boot(vm, HALT)
    vm.start()
    assert wait_for(lambda: v.state is VcpuState.RUNNING)
    vm.request_exit(4, "stopped while running")
    assert vm.wait(5) == 4
    assert v.state is VcpuState.EXITED
    assert v.call(lambda v: 7, timeout=0.5) == 7


def test_two_vcpus_calling_each_other_dont_deadlock():
    """Each vCPU, in an exit handler, calls onto the other at the same moment: a vCPU
    thread waiting in call runs the calls queued for it, so both answer."""
    reset_internal_errors()
    vm = Vm(VmConfig(memory=16 << 20, cpus=2))
    try:
        barrier = threading.Barrier(2, timeout=5)
        answers = {}

        class CallOther:
            def read(self, offset, size):
                return 0

            def write(self, offset, size, value):
                me = current_vcpu()
                if me.id in answers:
                    return
                barrier.wait()
                t0 = time.monotonic()
                answers[me.id] = (vm.vcpus[1 - me.id].call(lambda v: threading.current_thread().name, timeout=3),
                                  time.monotonic() - t0)
        vm.pio_bus.register(0x700, 1, CallOther(), "call-other")
        vm.memory.write(CODE, bytes([0x66, 0xBA, 0x00, 0x07, 0xEE]) + HALT)   # out %al, $0x700; halt
        vm.configure_cpuid()
        for v in vm.vcpus:
            set_protected_mode_flat(v.fd, CODE, 0)
            v.fd.set_mp_state(consts.KVM_MP_STATE_RUNNABLE)                  # the AP too, no SIPI
        vm.start()
        assert wait_for(lambda: len(answers) == 2)
        assert answers[0][0] == "vcpu1" and answers[1][0] == "vcpu0"
        assert max(dt for _, dt in answers.values()) < 2
    finally:
        vm.request_exit(0, "test over")
        vm.wait(5)
        vm.close()
    assert internal_errors() == []


def test_xen_vcpu_is_up_down_and_a_vcpu_that_does_not_answer():
    """XenVcpus.is_up asks through Vcpu.call: an AP waiting for INIT/SIPI is down;
    VCPUOP_down (take_offline) is down whatever the VMM's pause says; a vCPU that doesn't
    answer in time is busy with an exit of its own, so up."""
    from xen.domain import XenConfig, XenDomain
    reset_internal_errors()
    vm = Vm(VmConfig(memory=16 << 20, cpus=3, irqchip="split"))
    xen = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None)
    busy, release = threading.Event(), threading.Event()
    try:
        class Busy:
            def read(self, offset, size):
                return 0

            def write(self, offset, size, value):
                if current_vcpu().id == 2:
                    busy.set()
                    release.wait(10)
        vm.pio_bus.register(0x700, 1, Busy(), "busy")
        vm.memory.write(CODE, bytes([0x66, 0xBA, 0x00, 0x07, 0xEE]) + HALT)   # out %al, $0x700; halt
        set_protected_mode_flat(vm.boot_vcpu, CODE, 0)
        set_protected_mode_flat(vm.vcpus[2].fd, CODE, 0)
        vm.vcpus[2].fd.set_mp_state(consts.KVM_MP_STATE_RUNNABLE)            # vCPU 2 runs; 1 waits for SIPI
        assert not xen.vcpus.is_up(1, caller=0)                              # CREATED: asked in this thread
        vm.start()
        assert busy.wait(5)
        assert not xen.vcpus.is_up(1, caller=0)                              # in KVM_RUN: answers when kicked
        t0 = time.monotonic()
        assert xen.vcpus.is_up(2, caller=0)                                  # busy: no answer, up
        assert time.monotonic() - t0 >= 0.9
        release.set()
        xen.vcpus.down(2)
        assert wait_for(lambda: vm.vcpus[2].state is VcpuState.PARKED)
        assert not xen.vcpus.is_up(2, caller=0)
        vm.vcpus[2].pause(5)
        vm.vcpus[2].resume()
        assert not xen.vcpus.is_up(2, caller=0) and vm.vcpus[2].state is VcpuState.PARKED
        assert xen.vcpus.up(2) and not xen.vcpus.up(2)
        assert wait_for(lambda: vm.vcpus[2].state is VcpuState.RUNNING)
        assert xen.vcpus.is_up(2, caller=0)
    finally:
        release.set()
        vm.request_exit(0, "test over")
        vm.wait(5)
        xen.stop()
        vm.close()
    assert internal_errors() == []
