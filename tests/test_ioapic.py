"""The userspace I/OAPIC model on a real split-irqchip VM.

Our PVM host's LAPIC acknowledges interrupts at delivery and never reports
EOIs, so the EOI half of the model is driven here by calling
``IrqChip.ioapic_eoi`` as the vCPU loop does on KVM_EXIT_IOAPIC_EOI; the
guest-level test of it (ioapic_level under --irqchip split) runs in the
nested tier on a real KVM.
"""

from __future__ import annotations

import pytest

from devices.ioapic import IOWIN, IOREGSEL, RTE_MASKED, RTE_REMOTE_IRR, attach_ioapic
from kvm_bindings import MsiRoute
from vmm.vm import Vm, VmConfig


@pytest.fixture
def split():
    vm = Vm(VmConfig(memory=16 << 20, cpus=2, irqchip="split"))
    ioapic = attach_ioapic(vm)
    sent = []
    real = vm.irqchip.lapic_msi

    def recording_lapic_msi(addr, data):
        sent.append((addr, data))
        return real(addr, data)          # the real KVM_SIGNAL_MSI still runs
    vm.irqchip.lapic_msi = recording_lapic_msi
    yield vm, ioapic, sent
    vm.close()


def gsi(vm, n, source="test"):
    """The test's one IrqLine per (GSI, source) of this VM: the pin sees the OR of lines."""
    lines = vm.__dict__.setdefault("_test_lines", {})
    if (n, source) not in lines:
        lines[(n, source)] = vm.irqchip.line(n, source)
    return lines[(n, source)]


def program(ioapic, pin, low, dest=0):
    ioapic.write(IOREGSEL, 4, 0x11 + 2 * pin)
    ioapic.write(IOWIN, 4, dest << 24)
    ioapic.write(IOREGSEL, 4, 0x10 + 2 * pin)
    ioapic.write(IOWIN, 4, low)


def test_registers(split):
    vm, ioapic, _ = split
    ioapic.write(IOREGSEL, 4, 1)
    assert ioapic.read(IOWIN, 4) == (23 << 16) | 0x11
    ioapic.write(IOREGSEL, 4, 0)
    assert ioapic.read(IOWIN, 4) >> 24 == 2            # id = number of vCPUs
    ioapic.write(IOREGSEL, 4, 0x10)
    assert ioapic.read(IOWIN, 4) & RTE_MASKED          # reset: masked
    program(ioapic, 3, 0x41 | RTE_REMOTE_IRR)          # read-only bit ignored
    ioapic.write(IOREGSEL, 4, 0x16)
    assert ioapic.read(IOWIN, 4) == 0x41


def test_edge_pin_delivers_on_rising_edges_only(split):
    vm, ioapic, sent = split
    program(ioapic, 4, 0x34, dest=1)
    gsi(vm, 4, "test").set(True)
    gsi(vm, 4, "test").set(True)          # no edge
    gsi(vm, 4, "test").set(False)
    gsi(vm, 4, "test").set(True)
    assert sent == [(0xFEE01000, 0x34), (0xFEE01000, 0x34)]
    assert vm.irqchip.routes()[4] == [MsiRoute(4, 0xFEE01000, 0x34)]


def test_level_pin_remote_irr_and_eoi(split):
    vm, ioapic, sent = split
    program(ioapic, 10, 0x55 | (1 << 15))
    eois = []
    vm.irqchip.add_eoi_listener(10, lambda: eois.append(10))
    gsi(vm, 10, "test").set(True)
    gsi(vm, 10, "test").set(True)         # Remote IRR holds it back
    assert sent == [(0xFEE00000, 0xC055)]
    assert ioapic.rte[10] & RTE_REMOTE_IRR
    vm.irqchip.ioapic_eoi(0x55)          # EOI while still high: delivered again
    assert len(sent) == 2 and eois == [10]
    gsi(vm, 10, "test").set(False)
    vm.irqchip.ioapic_eoi(0x55)
    assert len(sent) == 2 and not ioapic.rte[10] & RTE_REMOTE_IRR
    vm.irqchip.ioapic_eoi(0x99)          # unrelated vector: nothing
    assert eois == [10, 10]
    # KVM learns the level vector from the routing table
    assert vm.irqchip.routes()[10] == [MsiRoute(10, 0xFEE00000, 0xC055)]


def test_masked_pin_is_held_and_fires_on_unmask_if_level_high(split):
    vm, ioapic, sent = split
    program(ioapic, 9, 0x60 | (1 << 15) | RTE_MASKED)
    gsi(vm, 9, "test").set(True)
    assert sent == []
    # ... but its route stays: a level vector masked while in service (Linux moving an IRQ)
    # must still have its EOI reported, or Remote IRR never clears
    assert vm.irqchip.routes()[9] == [MsiRoute(9, 0xFEE00000, 0xC060)]
    program(ioapic, 9, 0x60 | (1 << 15))
    assert sent == [(0xFEE00000, 0xC060)]


def test_eoi_of_a_level_vector_masked_in_service_clears_remote_irr(split):
    """Linux's ioapic_ack_level moving an IRQ: the pin is masked, the LAPIC EOI'd, the pin
    unmasked.  The EOI must reach the pin (KVM reports it: the route stayed), so a line
    raised again after the unmask is delivered again."""
    vm, ioapic, sent = split
    program(ioapic, 17, 0x21 | (1 << 15))
    line = gsi(vm, 17, "xen-callback")
    line.set(True)
    assert sent == [(0xFEE00000, 0xC021)]
    line.set(False)
    program(ioapic, 17, 0x21 | (1 << 15) | RTE_MASKED)
    assert vm.irqchip.routes()[17] == [MsiRoute(17, 0xFEE00000, 0xC021)]
    vm.irqchip.ioapic_eoi(0x21)
    program(ioapic, 17, 0x21 | (1 << 15))
    line.set(True)
    assert sent == [(0xFEE00000, 0xC021)] * 2


def test_logical_destination_and_delivery_mode(split):
    vm, ioapic, sent = split
    program(ioapic, 5, 0x70 | (1 << 11) | (1 << 8), dest=0x3)   # logical, lowest priority
    gsi(vm, 5, "test").set(True)
    assert sent == [(0xFEE03004, 0x170)]


def test_shared_line_follows_the_or_of_its_sources(split):
    """A PCI INTx line and the Xen callback line on one GSI: lowering one source
    must not drop the pin while the other still asserts (Xen counts asserters
    per GSI: gsi_assert_count in hvm_set_callback_irq_level)."""
    vm, ioapic, sent = split
    program(ioapic, 17, 0x66 | (1 << 15))
    gsi(vm, 17, "pci-intx").set(True)
    gsi(vm, 17, "xen-callback").set(True)
    assert sent == [(0xFEE00000, 0xC066)]
    gsi(vm, 17, "pci-intx").set(False)        # the callback still asserts
    vm.irqchip.ioapic_eoi(0x66)                       # level still high: delivered again
    assert len(sent) == 2
    gsi(vm, 17, "xen-callback").set(False)    # now nobody does
    vm.irqchip.ioapic_eoi(0x66)
    assert len(sent) == 2 and not ioapic.rte[17] & RTE_REMOTE_IRR
