"""The VMM's own Xen bookkeeping stays bounded whatever a guest asks, on a real
split-irqchip VM (no guest needed: the calls are driven the way the hypercall
handlers make them)."""

from __future__ import annotations

from devices.ioapic import attach_ioapic
from vmm.vm import Vm, VmConfig
from xen import abi
from xen.domain import XenConfig, XenDomain


def test_callback_irq_rewrites_keep_one_eoi_listener():
    """A guest rewriting HVM_PARAM_CALLBACK_IRQ must not grow the VMM's state: one EOI
    listener, on the current line only."""
    vm = Vm(VmConfig(memory=16 << 20, irqchip="split"))
    attach_ioapic(vm)
    xen = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None)
    try:
        listeners = vm.irqchip._eoi_listeners
        for _ in range(50):
            xen.upcall.set_callback_irq(9)                     # type 0: GSI 9
        assert len(listeners.get(9, [])) == 1
        xen.upcall.set_callback_irq(10)
        assert not listeners.get(9) and len(listeners.get(10, [])) == 1
        xen.upcall.set_callback_irq(abi.HVM_PARAM_CALLBACK_TYPE_VECTOR << 56 | 0xF3)
        assert not listeners.get(10)
    finally:
        xen.stop()
        vm.close()


def test_timer_rearms_keep_the_heap_bounded():
    """Re-arming a far-future singleshot leaves stale heap entries behind (skipped when
    due); a guest doing it forever must not grow the heap forever."""
    vm = Vm(VmConfig(memory=16 << 20, irqchip="split"))
    attach_ioapic(vm)
    xen = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None)
    try:
        timers = xen.timers
        far = xen.clock.now() + 10**15
        for i in range(5000):
            timers.set_singleshot(0, far + i)
        assert len(timers._heap) <= 4 * 1 + 64 + 1
        assert timers.singleshot == {0: far + 4999}
        timers.set_singleshot(0, -1)                # a past s_time_t: fires at once
    finally:
        xen.stop()
        vm.close()
