"""The Xen callback line's bookkeeping on a real split-irqchip VM (no guest needed:
HVM_PARAM_CALLBACK_IRQ writes are driven the way hvm_op does)."""

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
