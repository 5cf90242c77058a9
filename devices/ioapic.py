"""Userspace I/OAPIC (Intel 82093AA) for the split irqchip.

MMIO window at 0xFEC00000: IOREGSEL (+0x00) selects a register, IOWIN
(+0x10) reads/writes it.  Registers: 0x00 ID, 0x01 version (0x11, 24 pins),
0x02 arbitration, 0x10 + 2n / 0x11 + 2n the low/high halves of pin n's
redirection table entry (RTE).

Each pin turns into an MSI built from its RTE (the same translation KVM's
in-kernel I/OAPIC and QEMU's do): address 0xFEE00000 | dest << 12 |
dest_mode << 2, data = vector | delivery_mode << 8 | trigger << 15 |
assert << 14.  Delivery is KVM_SIGNAL_MSI through the IrqChip.

Level-triggered pins set Remote IRR on delivery and are not delivered again
until the guest's EOI clears it.  The kernel only reports EOIs
(KVM_EXIT_IOAPIC_EOI) for vectors it knows to be level-triggered, which it
learns from the GSI routing table: so every pin's RTE, masked or not, is
mirrored into the table as an MSI route (``IrqChip.set_routes``, ``_mirror``).
"""

from __future__ import annotations

import threading

from devices.trace_events import (
    TP_IOAPIC_RTE as TP_RTE,
    TP_IOAPIC_DELIVER as TP_DELIVER,
    TP_IOAPIC_EOI as TP_EOI,
)
from kvm_bindings import MsiRoute
from vmm.irqchip import (MSI_DATA_LEVEL_ASSERT, MSI_DATA_MODE_MASK, MSI_DATA_TRIGGER_LEVEL, NR_IOAPIC_PINS,
                         SplitIrqChip, msi_address)
from vmm.memory import IOAPIC_BASE
from vmm.locks import ordered_lock

IOAPIC_SIZE = 0x1000
IOREGSEL = 0x00
IOWIN = 0x10
REG_ID = 0x00
REG_VER = 0x01
REG_ARB = 0x02
REG_RTE0 = 0x10
VERSION = 0x11

RTE_VECTOR = 0xFF
RTE_DELIVERY_MODE_SHIFT = 8
RTE_DEST_MODE = 1 << 11
RTE_DELIVERY_STATUS = 1 << 12
RTE_POLARITY_LOW = 1 << 13
RTE_REMOTE_IRR = 1 << 14
RTE_TRIGGER_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
RTE_RO_BITS = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR
RTE_DEST_SHIFT = 56



class IoApic:
    def __init__(self, irqchip: SplitIrqChip, nr_pins: int = NR_IOAPIC_PINS, apic_id: int = 0):
        self.irqchip = irqchip
        self.nr_pins = nr_pins
        self.id = apic_id
        self._lock = ordered_lock("ioapic")
        self.ioregsel = 0
        self.rte = [RTE_MASKED] * nr_pins        # reset: all masked
        self.level = [False] * nr_pins           # line levels as seen at the pins

    # ------------------------------------------------------------ GsiSink
    def set_irq(self, gsi: int, level: bool) -> None:
        with self._lock:
            old = self.level[gsi]
            self.level[gsi] = level
            rte = self.rte[gsi]
            if rte & RTE_TRIGGER_LEVEL:
                if level:
                    self._service(gsi)
            elif level and not old:
                self._service(gsi)

    def end_of_interrupt(self, vector: int) -> list[int]:
        cleared = []
        with self._lock:
            for pin, rte in enumerate(self.rte):
                if rte & RTE_VECTOR == vector and rte & RTE_REMOTE_IRR:
                    self.rte[pin] = rte & ~RTE_REMOTE_IRR
                    cleared.append(pin)
                    if self.level[pin]:           # still asserted: deliver again
                        self._service(pin)
        if TP_EOI.enabled:
            TP_EOI.emit(vector=vector, pins=cleared)
        return cleared

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Primary: the id, IOREGSEL, every RTE (Remote IRR included) and the pins' levels."""
        with self._lock:
            return {"id": self.id, "ioregsel": self.ioregsel, "rte": list(self.rte), "level": list(self.level)}

    def restore(self, state: dict) -> None:
        with self._lock:
            self.id, self.ioregsel = state["id"], state["ioregsel"]
            self.rte[:] = state["rte"]
            self.level[:] = state["level"]

    def rebuilt(self) -> None:
        """Derived: KVM's routing table mirrors every RTE (so KVM reports EOIs of level
        vectors); the irqchip's view of the pins is re-driven by their sources."""
        with self._lock:
            rtes = list(enumerate(self.rte))
        for pin, rte in rtes:
            self._mirror(pin, rte)

    def _mirror(self, pin: int, rte: int) -> None:
        """The pin's RTE as its route in KVM's table, masked or not.  KVM learns from these
        which vectors are level-triggered and reports their EOIs (kvm_scan_ioapic_routes);
        its own I/OAPIC's scan ignores the mask too.  A level vector masked while in service
        must still report its EOI: Linux masks a pin to move its IRQ to another CPU
        (ioapic_ack_level -> ioapic_prepare_move) before the LAPIC EOI, and with the route
        gone that EOI never reached us, Remote IRR stayed set and the pin was dead for good
        (seen with Xen's callback on GSI 17, 2 vCPUs).  The routes carry no delivery: pins
        are sent with KVM_SIGNAL_MSI, and no irqfd is bound to a pin's GSI."""
        address, data = self.msi_of(rte)
        self.irqchip.set_routes(pin, [MsiRoute(pin, address, data)])

    # ------------------------------------------------------------ delivery
    @staticmethod
    def msi_of(rte: int) -> tuple[int, int]:
        dest = (rte >> RTE_DEST_SHIFT) & 0xFF
        address = msi_address(dest, logical=bool(rte & RTE_DEST_MODE))
        data = rte & MSI_DATA_MODE_MASK           # vector + delivery mode: the same bits
        if rte & RTE_TRIGGER_LEVEL:
            data |= MSI_DATA_TRIGGER_LEVEL | MSI_DATA_LEVEL_ASSERT
        return address, data

    def _service(self, pin: int) -> None:
        """Deliver pin (lock held).  The irqchip is below us in the lock order."""
        rte = self.rte[pin]
        if rte & RTE_MASKED:
            return
        if rte & RTE_TRIGGER_LEVEL:
            if rte & RTE_REMOTE_IRR:
                return
            self.rte[pin] = rte | RTE_REMOTE_IRR
        address, data = self.msi_of(rte)
        if TP_DELIVER.enabled:
            TP_DELIVER.emit(pin=pin, vector=rte & RTE_VECTOR, dest=(rte >> RTE_DEST_SHIFT) & 0xFF)
        self.irqchip.lapic_msi(address, data)

    # ------------------------------------------------------------ MMIO
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset == IOREGSEL:
                return self.ioregsel
            if offset == IOWIN:
                return self._read_reg(self.ioregsel)
        return 0

    def _read_reg(self, reg: int) -> int:
        if reg == REG_ID or reg == REG_ARB:
            return (self.id & 0xF) << 24
        if reg == REG_VER:
            return ((self.nr_pins - 1) << 16) | VERSION
        index = reg - REG_RTE0
        if 0 <= index < 2 * self.nr_pins:
            rte = self.rte[index >> 1]
            return (rte >> 32) & 0xFFFFFFFF if index & 1 else rte & 0xFFFFFFFF
        return 0xFFFFFFFF

    def write(self, offset: int, size: int, value: int) -> None:
        route = None
        with self._lock:
            if offset == IOREGSEL:
                self.ioregsel = value & 0xFF
                return
            if offset != IOWIN:
                return
            reg = self.ioregsel
            if reg == REG_ID:
                self.id = (value >> 24) & 0xF
                return
            index = reg - REG_RTE0
            if not 0 <= index < 2 * self.nr_pins:
                return
            pin = index >> 1
            old = self.rte[pin]
            if index & 1:
                new = (old & 0xFFFFFFFF) | ((value & 0xFFFFFFFF) << 32)
            else:
                new = (old & ~0xFFFFFFFF) | (value & 0xFFFFFFFF & ~RTE_RO_BITS) | (old & RTE_RO_BITS)
            if not new & RTE_TRIGGER_LEVEL:
                new &= ~RTE_REMOTE_IRR
            self.rte[pin] = new
            route = (pin, new)
            if TP_RTE.enabled:
                TP_RTE.emit(pin=pin, vector=new & RTE_VECTOR, mode=(new >> 8) & 7,
                            dest=(new >> RTE_DEST_SHIFT) & 0xFF, level=int(bool(new & RTE_TRIGGER_LEVEL)),
                            masked=int(bool(new & RTE_MASKED)))
            # A level line that is high when the pin gets unmasked fires now.
            if old & RTE_MASKED and not new & RTE_MASKED and self.level[pin] and new & RTE_TRIGGER_LEVEL:
                self._service(pin)
        pin, rte = route
        self._mirror(pin, rte)       # so KVM reports EOIs of level vectors


def attach_ioapic(vm) -> IoApic:
    """Create the I/OAPIC for a Vm with a split irqchip and map it."""
    ioapic = IoApic(vm.irqchip, vm.irqchip.nr_pins, apic_id=len(vm.vcpus))
    vm.irqchip.attach_gsi_sink(ioapic)
    vm.mmio_bus.register(IOAPIC_BASE, IOAPIC_SIZE, ioapic, "ioapic")
    return ioapic
