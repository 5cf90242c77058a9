"""A PCI test device for kit guests: INTx on demand and BARs of every kind.

IDs: 1b36:0005 (Red Hat/QEMU's "pci-testdev" IDs; test-only virtual hardware,
no real driver binds them), subsystem 1b36:0005, class 0xff0000 (unassigned),
revision 1, interrupt pin INTA.  The register layout is ours, not QEMU's.

    BAR0  I/O, 16 bytes, 32-bit registers
          +0x0  INTX     write bit 0: drive INTA (1 asserted, 0 deasserted);
                         read: the current level
          +0x4  ASSERTS  read: how many times INTA went from 0 to 1
          +0x8  MAGIC    read: 0x54494350 ("PCIT")
          +0xC  SCRATCH  read/write
    BAR1  32-bit memory, 4 KiB          +0 MAGIC, +4 the BAR number (1), +8 SCRATCH
    BAR2  64-bit prefetchable memory, 4 KiB (BAR2-3)    the same, BAR number 2

Attached only with ``vmm run --pci-testdev``.
"""

from __future__ import annotations

import threading

from devices.pci import BAR_IO, BAR_MEM32, BAR_MEM64, INTA, PciBus, PciDevice
from vmm.trace import tracepoint

TP_TESTDEV_INTX = tracepoint("pci_testdev.intx", "level={level}")

PCI_TESTDEV_VENDOR_ID = 0x1B36
PCI_TESTDEV_DEVICE_ID = 0x0005
PCI_TESTDEV_CLASS = 0xFF0000
PCI_TESTDEV_MAGIC = 0x54494350

REG_INTX = 0x0
REG_ASSERTS = 0x4
REG_MAGIC = 0x8
REG_SCRATCH = 0xC
IO_SIZE = 0x10
MMIO_SIZE = 0x1000


class PciTestDev(PciDevice):
    def __init__(self):
        super().__init__("pci-testdev", vendor_id=PCI_TESTDEV_VENDOR_ID, device_id=PCI_TESTDEV_DEVICE_ID,
                         class_code=PCI_TESTDEV_CLASS, revision=1, subsystem_vendor_id=PCI_TESTDEV_VENDOR_ID,
                         subsystem_id=PCI_TESTDEV_DEVICE_ID, interrupt_pin=INTA)
        self._lock = threading.Lock()
        self.level = False
        self.asserts = 0
        self.scratch = 0
        self.add_bar(0, IO_SIZE, (self._io_read, self._io_write), BAR_IO)
        self.add_bar(1, MMIO_SIZE, (lambda o, s: self._mem_read(1, o, s), self._mem_write), BAR_MEM32)
        self.add_bar(2, MMIO_SIZE, (lambda o, s: self._mem_read(2, o, s), self._mem_write), BAR_MEM64,
                     prefetchable=True)

    def _io_read(self, offset: int, size: int) -> int:
        with self._lock:
            reg = offset & ~3
            value = {REG_INTX: int(self.level), REG_ASSERTS: self.asserts, REG_MAGIC: PCI_TESTDEV_MAGIC,
                     REG_SCRATCH: self.scratch}.get(reg, 0xFFFFFFFF)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def _io_write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            if offset == REG_INTX:
                level = bool(value & 1)
                if level and not self.level:
                    self.asserts += 1
                self.level = level
                if TP_TESTDEV_INTX.enabled:
                    TP_TESTDEV_INTX.emit(level=int(level))
                self.set_intx(level)      # device lock held: the PCI INTx lock is below it
            elif offset == REG_SCRATCH:
                self.scratch = value & 0xFFFFFFFF

    def _mem_read(self, bar: int, offset: int, size: int) -> int:
        with self._lock:
            reg = offset & ~3
            value = {0: PCI_TESTDEV_MAGIC, 4: bar, 8: self.scratch}.get(reg, 0)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def _mem_write(self, offset: int, size: int, value: int) -> None:
        if offset == 8 and size == 4:
            with self._lock:
                self.scratch = value & 0xFFFFFFFF


def attach_pci_testdev(pci_bus: PciBus, slot: int | None = None) -> PciTestDev:
    return pci_bus.plug(PciTestDev(), slot=slot)  # type: ignore[return-value]


__all__ = ["PciTestDev", "attach_pci_testdev", "PCI_TESTDEV_MAGIC", "PCI_TESTDEV_VENDOR_ID",
           "PCI_TESTDEV_DEVICE_ID"]
