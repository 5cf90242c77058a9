"""The interrupt path of vmm/irqchip.py on real VMs: lines ORed per GSI, the
diversion hook (decided under the line lock, delivered after it on the
delivery thread), MSI vectors with irqfd, and the lock-order checker."""

from __future__ import annotations

import os
import threading

import pytest

from devices.ioapic import IOREGSEL, IOWIN, attach_ioapic
from kvm_bindings import MsiRoute
from vmm import locks
from vmm.errors import internal_errors, reset_internal_errors
from vmm.irqchip import IrqChipError
from vmm.vm import Vm, VmConfig


class RecordingDiverter:
    """Takes GSI 20 and MSIs with vector 0, like Xen's PIRQ table would."""

    def __init__(self, chip):
        self.chip = chip
        self.taken = {20}
        self.seen: list = []
        self.delivered: list = []
        self.vectors: list = []
        self.lock = locks.ordered_lock("xen.pirq")

    def divert_gsi(self, gsi, level):
        with self.lock:                      # allowed: below irqchip.line
            self.seen.append((gsi, level))
            if gsi not in self.taken:
                return None
            held = threading.current_thread().name

            def deliver():
                # Runs on the delivery thread with no lock held: not where the line was set.
                self.delivered.append((gsi, level, threading.current_thread().name, held))
            return [deliver] if level else []

    def divert_msi(self, address, data):
        if data & 0xFF:
            return None
        return [lambda: self.delivered.append(("msi", address, data))]

    def msi_vector_changed(self, vec):
        self.vectors.append((vec.index, vec.address, vec.masked, vec.removed))

    def msi_route(self, vec, gsi):
        return False if vec.data & 0xFF == 0 else None


@pytest.fixture
def split():
    reset_internal_errors()
    vm = Vm(VmConfig(memory=16 << 20, irqchip="split"))
    ioapic = attach_ioapic(vm)
    driven = []
    real = vm.irqchip._drive
    vm.irqchip._drive = lambda gsi, level: (driven.append((gsi, level)), real(gsi, level))
    yield vm, ioapic, driven
    vm.close()


def test_lines_or_per_gsi_and_range(split):
    vm, _, driven = split
    a, b = vm.irqchip.line(5, "a"), vm.irqchip.line(5, "b")
    a.set(True)
    b.set(True)
    a.set(False)                          # b still asserts: the pin stays high
    assert vm.irqchip.line_level(5)
    b.set(False)
    assert driven == [(5, True), (5, True), (5, False)] and not vm.irqchip.line_level(5)
    with pytest.raises(IrqChipError):
        vm.irqchip.line(24, "x")
    with pytest.raises(IrqChipError):
        vm.irqchip.line(-1, "x")


def test_diverted_gsi_skips_the_pin_and_delivers_on_the_delivery_thread(split):
    vm, _, driven = split
    d = RecordingDiverter(vm.irqchip)
    vm.irqchip.set_diverter(d)
    line = vm.irqchip.line(20, "dev")
    line.set(True)
    assert vm.irqchip.flush_deliveries()
    assert driven == []                               # the I/OAPIC never saw it
    (gsi, level, thread, raiser), = d.delivered
    assert (gsi, level, thread) == (20, True, "irq-deliver") and raiser != "irq-deliver"
    # The callback line is never shown to the diverter; it reaches the pin.
    cb = vm.irqchip.line(20, "xen-callback", divertible=False)
    cb.set(True)
    assert driven == [(20, True)] and (20, True) in d.seen and len(d.seen) == 1
    cb.set(False)
    # Handing the GSI back: redrive drives the pin with the level the device holds.
    d.taken.clear()
    vm.irqchip.redrive(20)
    assert driven[-1] == (20, True)
    line.set(False)
    assert driven[-1] == (20, False)
    assert not internal_errors()


def test_msi_diversion_and_lapic_msi(split):
    vm, _, _ = split
    d = RecordingDiverter(vm.irqchip)
    vm.irqchip.set_diverter(d)
    assert vm.irqchip.send_msi(0xFEE05000, 0x700)      # vector 0: the diverter's
    vm.irqchip.flush_deliveries()
    assert d.delivered == [("msi", 0xFEE05000, 0x700)]
    vm.irqchip.send_msi(0xFEE00000, 0x41)              # a plain MSI goes to the LAPIC
    vm.irqchip.lapic_msi(0xFEE00000, 0x00)             # never diverted
    vm.irqchip.flush_deliveries()
    assert len(d.delivered) == 1


def test_msi_vector_irqfd_routes_follow_the_diverter(split):
    vm, _, _ = split
    d = RecordingDiverter(vm.irqchip)
    vm.irqchip.set_diverter(d)
    vec = vm.irqchip.msi_vector("00:03.0", 2, "msix")
    vec.update(0xFEE00000, 0x45, masked=False)
    assert d.vectors[-1] == (2, 0xFEE00000, False, False)
    if not vm.irqchip.use_irqfd(vec):
        pytest.skip("this host's KVM refuses KVM_IRQFD")
    gsi = vec.irqfd_gsi
    assert gsi >= 24 and vm.irqchip.routes()[gsi] == [MsiRoute(gsi, 0xFEE00000, 0x45)]
    assert vec.fire() is True                          # through the eventfd, no userspace delivery
    vec.update(0xFEE07000, 0x0, masked=False)          # now PIRQ-encoded: userspace only
    assert gsi not in vm.irqchip.routes()
    assert vec.fire() is False
    vm.irqchip.flush_deliveries()
    assert d.delivered[-1] == ("msi", 0xFEE07000, 0)
    vec.remove()
    assert d.vectors[-1][3] is True and vec.irqfd_gsi is None
    assert vm.irqchip.allocate_gsi() == gsi            # the GSI went back to the pool


def test_delivery_thread_reports_errors(split):
    vm, _, _ = split

    def boom():
        raise RuntimeError("delivery bug")
    vm.irqchip.deliveries.submit([boom])
    vm.irqchip.flush_deliveries()
    assert any("irq-deliver" in e and "delivery bug" in e for e in internal_errors())
    reset_internal_errors()


def test_lock_order_checker_reports_an_inversion():
    reset_internal_errors()
    line = locks.CheckedLock("irqchip.line")
    ports = locks.CheckedLock("xen.ports")
    with ports:
        with line:                               # in order: nothing reported
            pass
    assert not internal_errors()
    with line:
        with ports:                              # port lock under the line lock: QEMU's deadlock 1
            pass
    errs = internal_errors()
    assert len(errs) == 1 and "'xen.ports' while holding 'irqchip.line'" in errs[0]
    reset_internal_errors()
    r = locks.CheckedLock("pci.config", reentrant=True)
    with r:
        with r:                                  # re-entrant: fine
            pass
    assert not internal_errors()
    with pytest.raises(ValueError):
        locks.CheckedLock("no.such.lock")


def test_the_suite_runs_with_the_checker_on():
    assert os.environ.get("VMM_LOCK_CHECK") == "1" and locks.CHECKING
