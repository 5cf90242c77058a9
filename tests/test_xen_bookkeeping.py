"""The VMM's own Xen bookkeeping stays bounded whatever a guest asks, on a real
split-irqchip VM (no guest needed: the calls are driven the way the hypercall
handlers make them)."""

from __future__ import annotations

import pytest

from devices.ioapic import attach_ioapic
from vmm.vm import Vm, VmConfig
from xen import abi
from xen.domain import XenConfig, XenDomain
from xen.hypercall import XenError


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


def test_callback_irq_gsi_is_the_whole_56_bit_field():
    """A GSI callback's GSI is val[55:0] (hvm/params.h): a value with bits above 31 set is
    no I/OAPIC pin (it used to be masked to 32 bits and alias GSI 5; Xen itself keeps
    only the low byte, xen/arch/x86/hvm/irq.c hvm_set_callback_via).  PCI_INTX decodes
    slot and pin through the same helpers (slot 3 INTB -> the swizzle's GSI)."""
    vm = Vm(VmConfig(memory=16 << 20, irqchip="split"))
    attach_ioapic(vm)
    xen = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None,
                    pci_intx_gsi=lambda slot, pin: 16 + (slot + pin - 1) % 4)
    try:
        xen.upcall.set_callback_irq(5)
        assert xen.upcall.gsi == 5
        xen.upcall.set_callback_irq(1 << 32 | 5)
        assert xen.upcall.gsi is None
        xen.upcall.set_callback_irq(abi.callback_irq_value(abi.HVM_PARAM_CALLBACK_TYPE_PCI_INTX, 3 << 11 | 1))
        assert xen.upcall.gsi == 16 + (3 + 2 - 1) % 4
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


def test_ports_beyond_the_compat_limit_after_the_layout_switch():
    """Ports bound above 1024 in the 64-bit layout, then the compat layout latched: a
    delivery to them (a send whose peer is there, a VIRQ_TIMER bound there) is all or
    nothing — nothing: no exception, no bit of shared_info moves (event_2l.c treats
    them as masked); sends *from* them still reach a port below 1024."""
    vm = Vm(VmConfig(memory=16 << 20, irqchip="split"))
    attach_ioapic(vm)
    xen = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None)
    try:
        ev, gpa = xen.evtchn, 0x100000
        for _ in range(1027):
            ev.alloc_unbound(abi.DOMID_SELF, abi.DOMID_SELF)
        high = ev.alloc_unbound(abi.DOMID_SELF, abi.DOMID_SELF)
        ev.close(1)
        low = ev.bind_interdomain(abi.DOMID_SELF, high)
        timer = ev.bind_virq(abi.VIRQ_TIMER, 0)
        assert (high, low, timer) == (1028, 1, 1029)
        xen.shared.map_at(gpa)
        xen.shared.latch_width(True)                        # hvm_latch_shinfo_size from 32-bit mode
        vm.memory.write(gpa, bytes(4096))
        ev.send(low)
        assert ev.raise_virq(0, abi.VIRQ_TIMER)
        ev.unmask(high)
        assert vm.memory.read(gpa, 4096) == bytes(4096)
        assert not ev.any_pending([high, timer])
        ev.send(high)                                       # to port 1: delivered
        assert ev.port_abi.is_pending(low)
        with pytest.raises(XenError) as e:                  # 1..1023 taken: max_evtchns is 1024
            ev.alloc_unbound(abi.DOMID_SELF, abi.DOMID_SELF)
        assert e.value.errno == abi.XenErrno.ENOSPC
        ev.close(timer)
        ev.close(high)
    finally:
        xen.stop()
        vm.close()


def test_overlay_refused_by_kvm_is_rolled_back():
    """KVM refuses a memory slot beyond the host's guest-physical width: the overlay's
    memory is taken back (the gpa reads as unbacked again), its slot is free for the
    next overlay, and nothing is left half-placed."""
    from vmm.memory import GuestMemoryError
    vm = Vm(VmConfig(memory=16 << 20))
    try:
        before = list(vm.memory.regions)
        with pytest.raises(GuestMemoryError, match="KVM refused"):
            vm.map_overlay(1 << 60)
        assert list(vm.memory.regions) == before and not vm.is_overlay(1 << 60)
        with pytest.raises(GuestMemoryError):
            vm.memory.read(1 << 60, 1)
        vm.map_overlay(0x80000000)                  # the slot it would have had
        vm.memory.write(0x80000000, b"ok")
        assert vm.memory.read(0x80000000, 2) == b"ok" and vm.is_overlay(0x80000000)
    finally:
        vm.close()


def test_no_xen_page_over_device_mmio():
    """XENMEM_add_to_physmap onto another device's MMIO gets -EINVAL and no memory slot
    (a slot there would hide the device from the guest); the Xen platform device's BAR
    (where Linux HVM puts its grant frames) is the one MMIO a page may cover."""
    from devices.legacy import DebugExit
    vm = Vm(VmConfig(memory=16 << 20, irqchip="split"))
    attach_ioapic(vm)
    xen = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None)
    try:
        vm.mmio_bus.register(0xD0000000, 0x1000, DebugExit(lambda code: None), "some-device.bar0")
        with pytest.raises(XenError) as e:
            xen.gnttab.map_frame(0, 0xD0000000)
        assert e.value.errno == abi.XenErrno.EINVAL
        assert not vm.is_overlay(0xD0000000) and vm.mmio_bus.find(0xD0000000).name == "some-device.bar0"
        assert xen.gnttab.frame_gfn(0) == (1 << 64) - 1          # still unplaced
        vm.mmio_bus.register(0xD0001000, 0x1000, DebugExit(lambda code: None), "xen-platform.bar1")
        xen.gnttab.map_frame(0, 0xD0001000)
        assert vm.is_overlay(0xD0001000) and xen.gnttab.frame_gfn(0) == 0xD0001
    finally:
        xen.stop()
        vm.close()
