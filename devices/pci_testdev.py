"""A PCI test device for kit guests: INTx, MSI and MSI-X on demand, BARs of every kind.

IDs: 1b36:0005 (Red Hat/QEMU's "pci-testdev" IDs; test-only virtual hardware,
no real driver binds them), subsystem 1b36:0005, class 0xff0000 (unassigned),
revision 1, interrupt pin INTA.  The register layout is ours, not QEMU's.

    BAR0  I/O, 64 bytes, 32-bit registers
          +0x00 INTX     write bit 0: the device's INTA request (1 asserted, 0
                         deasserted); read: the request.  While MSI or MSI-X is
                         enabled the pin stays deasserted (PCI 3.0 §6.8.1.3: the
                         function uses MSI instead); INTx-disable also holds it.
          +0x04 ASSERTS  read: how many times the request went from 0 to 1
          +0x08 MAGIC    read: 0x54494350 ("PCIT")
          +0x0C SCRATCH  read/write
          +0x10 COUNT    read/write: messages per FIRE or TIMER command, 1..4096
                         (other values are ignored); 1 at reset
          +0x14 FIRE     write: send COUNT messages now, from the vCPU's write.
                         Value: bits 7:0 the MSI vector / MSI-X entry, bit 8 set
                         for MSI-X.  A masked target gets its pending bit set.
          +0x18 PERIOD   read/write: the timer's period in µs, 100..1000000
                         (other values ignored); 1000 at reset
          +0x1C TIMER    write: the device thread sends COUNT messages to the
                         target encoded as for FIRE, one every PERIOD µs (replaces
                         a running timer); bit 31 set: stop the timer.
                         read: messages the timer has still to send (0: idle)
          +0x20 SENT_MSI      read: MSI messages sent; write: clear
          +0x24 SENT_MSIX     read: MSI-X messages sent; write: clear
          +0x28 PENDED_MSI    read: MSI messages that set a pending bit; write: clear
          +0x2C PENDED_MSIX   read: MSI-X messages that set a PBA bit; write: clear
          +0x30 DROPPED       read: messages dropped (MSI disabled or vector beyond
                              the enabled count, bad index); write: clear
    BAR1  32-bit memory, 4 KiB          +0 MAGIC, +4 the BAR number (1), +8 SCRATCH
    BAR2  64-bit prefetchable memory, 4 KiB (BAR2-3)    the same, BAR number 2
    BAR4  32-bit memory, 4 KiB: the MSI-X table (8 entries) at +0, the PBA at +0x800

Capabilities: MSI (4 vectors, 64-bit, per-vector masking) and MSI-X (8 entries),
devices/msi.py.  Counters count a message when it is sent or pended (a message
"sent" when the timer is done was sent before TIMER reads 0).

The timer thread gives its vector an irqfd (``IrqChip.use_irqfd``; if KVM refuses,
``fire()`` delivers from userspace), sleeps with no lock held, and stops when told,
when the VM ends or the device is unplugged; an exception in it is an internal
error (vmm/errors.py).

Attached only with ``vmm run --pci-testdev``.
"""

from __future__ import annotations

import threading
import time

from devices.msi import DROPPED, PENDING, SENT, MsiCapability, MsixCapability
from devices.pci import BAR_IO, BAR_MEM32, BAR_MEM64, INTA, PciBus, PciDevice
from devices.trace_events import (
    TP_PCI_TESTDEV_INTX as TP_TESTDEV_INTX,
    TP_PCI_TESTDEV_FIRE as TP_TESTDEV_FIRE,
    TP_PCI_TESTDEV_TIMER as TP_TESTDEV_TIMER,
)
from vmm.errors import internal_error
from vmm.locks import ordered_lock

PCI_TESTDEV_VENDOR_ID = 0x1B36
PCI_TESTDEV_DEVICE_ID = 0x0005
PCI_TESTDEV_CLASS = 0xFF0000
PCI_TESTDEV_MAGIC = 0x54494350

REG_INTX = 0x00
REG_ASSERTS = 0x04
REG_MAGIC = 0x08
REG_SCRATCH = 0x0C
REG_COUNT = 0x10
REG_FIRE = 0x14
REG_PERIOD = 0x18
REG_TIMER = 0x1C
REG_SENT_MSI = 0x20
REG_SENT_MSIX = 0x24
REG_PENDED_MSI = 0x28
REG_PENDED_MSIX = 0x2C
REG_DROPPED = 0x30
IO_SIZE = 0x40
MMIO_SIZE = 0x1000

TARGET_MSIX = 1 << 8
TIMER_STOP = 1 << 31
MAX_COUNT = 4096
MIN_PERIOD_US, MAX_PERIOD_US = 100, 1_000_000

MSI_VECTORS = 4
MSIX_ENTRIES = 8
MSIX_BAR = 4
MSIX_TABLE_OFFSET = 0x000
MSIX_PBA_OFFSET = 0x800

_COUNTERS = {REG_SENT_MSI: ("msi", SENT), REG_SENT_MSIX: ("msix", SENT), REG_PENDED_MSI: ("msi", PENDING),
             REG_PENDED_MSIX: ("msix", PENDING)}


class PciTestDev(PciDevice):
    def __init__(self):
        super().__init__("pci-testdev", vendor_id=PCI_TESTDEV_VENDOR_ID, device_id=PCI_TESTDEV_DEVICE_ID,
                         class_code=PCI_TESTDEV_CLASS, revision=1, subsystem_vendor_id=PCI_TESTDEV_VENDOR_ID,
                         subsystem_id=PCI_TESTDEV_DEVICE_ID, interrupt_pin=INTA)
        self._lock = ordered_lock("device")
        self.level = False               # the INTA request (the pin also needs MSI/MSI-X off)
        self.asserts = 0
        self.scratch = 0
        self.count = 1
        self.period_us = 1000
        self.counters = {key: 0 for key in _COUNTERS.values()}
        self.dropped = 0
        self.timer_remaining = 0
        self._timer_stop: threading.Event | None = None    # the running timer's stop event
        self._timer_thread: threading.Thread | None = None
        self._at_exit_registered = False
        self.add_bar(0, IO_SIZE, (self._io_read, self._io_write), BAR_IO)
        self.add_bar(1, MMIO_SIZE, (lambda o, s: self._mem_read(1, o, s), self._mem_write), BAR_MEM32)
        self.add_bar(2, MMIO_SIZE, (lambda o, s: self._mem_read(2, o, s), self._mem_write), BAR_MEM64,
                     prefetchable=True)
        self.add_bar(MSIX_BAR, MMIO_SIZE, (self._msix_read, self._msix_write), BAR_MEM32)
        self.msi = MsiCapability(self, MSI_VECTORS, is_64bit=True, per_vector_mask=True,
                                 on_enable_change=self._msi_enable_changed)
        self.msix = MsixCapability(self, MSIX_ENTRIES, MSIX_BAR, MSIX_TABLE_OFFSET, MSIX_BAR, MSIX_PBA_OFFSET,
                                   on_enable_change=self._msi_enable_changed)

    # ------------------------------------------------------------ snapshot
    def save_device(self) -> dict:
        """The registers and counters; a running burst timer is not saved (it stops: the
        guest sees a shorter burst)."""
        with self._lock:
            return {"level": self.level, "asserts": self.asserts, "scratch": self.scratch, "count": self.count,
                    "period_us": self.period_us, "counters": dict(self.counters), "dropped": self.dropped}

    def restore_device(self, state: dict) -> None:
        with self._lock:
            for k in ("level", "asserts", "scratch", "count", "period_us", "dropped"):
                setattr(self, k, state[k])
            self.counters.update(state["counters"])

    # ------------------------------------------------------------ INTx
    def _drive_intx_locked(self) -> None:
        """Device lock held: the pin follows the request unless MSI or MSI-X is on."""
        output = self.level and not (self.msi.enabled or self.msix.enabled)
        if TP_TESTDEV_INTX.enabled and output != self.intx_level:
            TP_TESTDEV_INTX.emit(level=int(self.level), output=int(output))
        self.set_intx(output)             # the PCI INTx lock is below the device lock

    def _msi_enable_changed(self) -> None:
        with self._lock:
            self._drive_intx_locked()

    # ------------------------------------------------------------ messages
    def _cap(self, kind: str):
        return self.msix if kind == "msix" else self.msi

    def _account_locked(self, kind: str, result: str) -> None:
        if result == DROPPED:
            self.dropped += 1
        else:
            self.counters[(kind, result)] += 1

    def _fire_now(self, target: int, count: int) -> None:
        """FIRE, in the vCPU thread, with no device lock held (decide, then deliver)."""
        kind, index = ("msix" if target & TARGET_MSIX else "msi"), target & 0xFF
        if TP_TESTDEV_FIRE.enabled:
            TP_TESTDEV_FIRE.emit(kind=kind, index=index, count=count, via="vcpu")
        cap = self._cap(kind)
        for _ in range(count):
            result = cap.fire(index)
            with self._lock:
                self._account_locked(kind, result)

    def _start_timer_locked(self, target: int) -> None:
        kind, index = ("msix" if target & TARGET_MSIX else "msi"), target & 0xFF
        self._stop_timer_locked()
        if self.bus is None:
            return
        vm = self.bus.vm
        if not self._at_exit_registered:
            vm.at_exit(self.stop_timer)
            self._at_exit_registered = True
        stop = threading.Event()
        self._timer_stop = stop
        self.timer_remaining = self.count
        if TP_TESTDEV_TIMER.enabled:
            TP_TESTDEV_TIMER.emit(event="start", kind=kind, index=index, count=self.count, period_us=self.period_us)
        t = threading.Thread(target=self._timer_run, name="pci-testdev-timer", daemon=True,
                             args=(vm, stop, kind, index, self.count, self.period_us / 1e6))
        self._timer_thread = t
        t.start()

    def _stop_timer_locked(self) -> None:
        if self._timer_stop is not None:
            self._timer_stop.set()
            self._timer_stop = None
            self.timer_remaining = 0

    def stop_timer(self, join: bool = True) -> None:
        """Stop the timer thread (the VM ended; tests).  Call with no lock held."""
        with self._lock:
            self._stop_timer_locked()
            t = self._timer_thread
        if join and t is not None and t is not threading.current_thread():
            t.join(2.0)

    def _timer_run(self, vm, stop: threading.Event, kind: str, index: int, count: int, period: float) -> None:
        try:
            cap = self._cap(kind)
            vec = cap.vector(index)
            if vec is not None:
                vm.irqchip.use_irqfd(vec)    # False: KVM refused; fire() then delivers from userspace
            deadline = time.monotonic()
            for _ in range(count):
                deadline += period
                if stop.wait(max(0.0, deadline - time.monotonic())):   # no lock held while asleep
                    return
                if vm.exit_code is not None or self.bus is None or stop.is_set():
                    return
                result = cap.fire(index)
                with self._lock:
                    self._account_locked(kind, result)     # sent, even if stopped meanwhile
                    if self._timer_stop is not stop:
                        return
                    self.timer_remaining -= 1
        except Exception as e:  # noqa: BLE001 - a device thread reports, never dies silently
            internal_error("pci-testdev timer", e)
        finally:
            with self._lock:
                if self._timer_stop is stop:
                    self._timer_stop = None
                    self.timer_remaining = 0
            if TP_TESTDEV_TIMER.enabled:
                TP_TESTDEV_TIMER.emit(event="end", kind=kind, index=index, count=count, period_us=int(period * 1e6))

    def unplugged(self) -> None:
        with self._lock:
            self._stop_timer_locked()    # the thread sees the event; no join under the config lock

    # ------------------------------------------------------------ BARs
    def _io_read(self, offset: int, size: int) -> int:
        with self._lock:
            reg = offset & ~3
            if reg in _COUNTERS:
                value = self.counters[_COUNTERS[reg]]
            else:
                value = {REG_INTX: int(self.level), REG_ASSERTS: self.asserts, REG_MAGIC: PCI_TESTDEV_MAGIC,
                         REG_SCRATCH: self.scratch, REG_COUNT: self.count, REG_FIRE: 0,
                         REG_PERIOD: self.period_us, REG_TIMER: self.timer_remaining,
                         REG_DROPPED: self.dropped}.get(reg, 0xFFFFFFFF)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def _io_write(self, offset: int, size: int, value: int) -> None:
        fire = None
        with self._lock:
            if offset == REG_INTX:
                level = bool(value & 1)
                if level and not self.level:
                    self.asserts += 1
                self.level = level
                self._drive_intx_locked()
            elif size != 4 or offset & 3:
                pass                      # the other registers are dword-only
            elif offset == REG_SCRATCH:
                self.scratch = value & 0xFFFFFFFF
            elif offset == REG_COUNT:
                if 1 <= value <= MAX_COUNT:
                    self.count = value
            elif offset == REG_PERIOD:
                if MIN_PERIOD_US <= value <= MAX_PERIOD_US:
                    self.period_us = value
            elif offset == REG_FIRE:
                fire = (value, self.count)
            elif offset == REG_TIMER:
                if value & TIMER_STOP:
                    if TP_TESTDEV_TIMER.enabled and self._timer_stop is not None:
                        TP_TESTDEV_TIMER.emit(event="stop", kind="-", index=-1, count=self.timer_remaining,
                                              period_us=self.period_us)
                    self._stop_timer_locked()
                else:
                    self._start_timer_locked(value)
            elif offset in _COUNTERS:
                self.counters[_COUNTERS[offset]] = 0
            elif offset == REG_DROPPED:
                self.dropped = 0
        if fire is not None:
            self._fire_now(*fire)

    def _mem_read(self, bar: int, offset: int, size: int) -> int:
        with self._lock:
            reg = offset & ~3
            value = {0: PCI_TESTDEV_MAGIC, 4: bar, 8: self.scratch}.get(reg, 0)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def _mem_write(self, offset: int, size: int, value: int) -> None:
        if offset == 8 and size == 4:
            with self._lock:
                self.scratch = value & 0xFFFFFFFF

    def _msix_read(self, offset: int, size: int) -> int:
        value = self.msix.mmio_read(MSIX_BAR, offset, size)
        return 0 if value is None else value

    def _msix_write(self, offset: int, size: int, value: int) -> None:
        self.msix.mmio_write(MSIX_BAR, offset, size, value)


def attach_pci_testdev(pci_bus: PciBus, slot: int | None = None) -> PciTestDev:
    return pci_bus.plug(PciTestDev(), slot=slot)  # type: ignore[return-value]


__all__ = ["PciTestDev", "attach_pci_testdev", "PCI_TESTDEV_MAGIC", "PCI_TESTDEV_VENDOR_ID",
           "PCI_TESTDEV_DEVICE_ID"]
