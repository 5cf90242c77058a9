"""The Xen platform PCI device (5853:0001) and the emulated-device unplug protocol.

What a Xen HVM guest finds on its PCI bus (as QEMU's hw/i386/xen/xen_platform.c
builds it): vendor 0x5853 (XenSource) device 0x0001, subsystem 5853:0001,
revision 1, class 0xff80 prog-if 0 ("other"), interrupt pin INTA (the PCI
INTx variant of the event-channel callback, HVM_PARAM_CALLBACK_IRQ type 1,
raises it with ``set_intx``), and two BARs:

* BAR0, I/O, 0x100 bytes, byte-wide registers: +0 platform flags (read/write),
  +4 and +8 the pre-protocol unplug hooks of old SUSE/Novell drivers (write 1
  to +4: unplug disks and NICs; +8: 1 disks, 2 NICs, anything else is a log
  byte); other offsets read 0xff.
* BAR1, 16 MiB prefetchable 32-bit memory: where the guest maps grant-table
  frames and shared_info (XENMEM_add_to_physmap).  Nothing decodes there yet:
  reads return 0, writes are dropped (as QEMU).

The fixed ports 0x10-0x1f belong to the device whatever its BARs
(docs/misc/hvm-emulated-unplug.pandoc in Xen; Linux arch/x86/xen/
platform-pci-unplug.c is the client):

    port  size  read                           write
    0x10  1     platform flags                 platform flags (bit 0: ROM lock)
    0x10  2     magic 0x49d2 (0xd249: driver   unplug mask: 1 IDE+SCSI disks,
                blacklisted)                   2 NICs, 4 aux IDE disks, 8 NVMe
    0x10  4     all-ones                       driver build number
    0x12  1     protocol version (1)           log byte (line ends at '\\n')
    0x12  2     0xffff                         driver product number

The handshake (protocol version 1): read the magic, read the version, write
the product number then the build number, re-read the magic (0xd249 means
this (product, build) is blacklisted), then write the unplug mask.  Unplug
requests are recorded (``unplugged``, ``unplug_requests``, trace
``xen.platform.unplug``) and passed to an optional ``on_unplug(mask)``
callback; nothing is unplugged yet because we emulate no IDE/NIC/NVMe
devices.  Log lines go to ``log_lines`` and the ``xen.platform.log`` trace.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Iterable

from devices.pci import BAR_IO, BAR_MEM32, INTA, FnRegion, PciBus, PciDevice
from vmm.locks import ordered_lock
from xen.trace_events import (
    TP_XEN_PLATFORM_UNPLUG as TP_UNPLUG,
    TP_XEN_PLATFORM_LOG as TP_LOG,
    TP_XEN_PLATFORM_DRIVER as TP_DRIVER,
)

XEN_PLATFORM_VENDOR_ID = 0x5853
XEN_PLATFORM_DEVICE_ID = 0x0001
XEN_PLATFORM_CLASS = 0xFF8000          # class 0xff, subclass 0x80, prog-if 0
XEN_PLATFORM_REVISION = 1
XEN_PLATFORM_IO_SIZE = 0x100
XEN_PLATFORM_MMIO_SIZE = 16 << 20

XEN_IOPORT_BASE = 0x10
XEN_IOPORT_SIZE = 16                   # QEMU claims 0x10-0x1f
XEN_IOPORT_MAGIC_VAL = 0x49D2
XEN_IOPORT_MAGIC_BLACKLISTED = 0xD249
XEN_IOPORT_PROTOCOL_VERSION = 1

UNPLUG_IDE_SCSI_DISKS = 1 << 0
UNPLUG_ALL_NICS = 1 << 1
UNPLUG_AUX_IDE_DISKS = 1 << 2
UNPLUG_NVME_DISKS = 1 << 3
UNPLUG_NAMES = ((UNPLUG_IDE_SCSI_DISKS, "ide-scsi-disks"), (UNPLUG_ALL_NICS, "nics"),
                (UNPLUG_AUX_IDE_DISKS, "aux-ide-disks"), (UNPLUG_NVME_DISKS, "nvme-disks"))

PFFLAG_ROM_LOCK = 1

# xen/include/public/hvm/pvdrivers.h: the registry of PV driver product numbers.
PV_PRODUCTS = {0x0001: "xensource-windows", 0x0002: "gplpv-windows", 0x0003: "linux", 0xFFFF: "experimental"}

LOG_LINE_MAX = 4095                    # QEMU flushes its 4 KiB buffer when full
LOG_KEEP = 256                         # lines kept in ``log_lines``


def unplug_names(mask: int) -> list[str]:
    return [name for bit, name in UNPLUG_NAMES if mask & bit]


class XenPlatformDevice(PciDevice):
    """See the module docstring.

    ``blacklist``: (product number, build number) pairs whose drivers must not
    load — Xen keeps them in xenstore as /mh/driver-blacklist/<product name>/
    <build>; a caller can fill this from there later.
    """

    def __init__(self, blacklist: Iterable[tuple[int, int]] = (), on_unplug: Callable[[int], None] | None = None):
        super().__init__("xen-platform", vendor_id=XEN_PLATFORM_VENDOR_ID, device_id=XEN_PLATFORM_DEVICE_ID,
                         class_code=XEN_PLATFORM_CLASS, revision=XEN_PLATFORM_REVISION,
                         subsystem_vendor_id=XEN_PLATFORM_VENDOR_ID, subsystem_id=XEN_PLATFORM_DEVICE_ID,
                         interrupt_pin=INTA)
        self._lock = ordered_lock("device")
        self.blacklist = set(blacklist)
        self.on_unplug = on_unplug
        self.flags = 0
        self.product = None            # driver product number (port 0x12, word write)
        self.build = None              # driver build number (port 0x10, dword write)
        self.blacklisted = False
        self.unplugged = 0             # OR of every unplug mask the guest wrote
        self.unplug_requests: list[tuple[str, int]] = []   # (via, mask) in order
        self.log_lines: deque[str] = deque(maxlen=LOG_KEEP)
        self._log = bytearray()
        self.io_bar = self.add_bar(0, XEN_PLATFORM_IO_SIZE, (self._bar_io_read, self._bar_io_write), BAR_IO)
        self.mmio_bar = self.add_bar(1, XEN_PLATFORM_MMIO_SIZE, (self._mmio_read, self._mmio_write),
                                     BAR_MEM32, prefetchable=True)

    # ------------------------------------------------------------ snapshot
    def save_device(self) -> dict:
        with self._lock:
            return {"flags": self.flags, "product": self.product, "build": self.build,
                    "blacklisted": self.blacklisted, "unplugged": self.unplugged,
                    "unplug_requests": [list(r) for r in self.unplug_requests]}

    def restore_device(self, state: dict) -> None:
        with self._lock:
            for k in ("flags", "product", "build", "blacklisted", "unplugged"):
                setattr(self, k, state[k])
            self.unplug_requests = [tuple(r) for r in state["unplug_requests"]]

    # ------------------------------------------------------------ fixed ports 0x10-0x1f
    def fixed_read(self, offset: int, size: int) -> int:
        with self._lock:
            if size == 1:
                if offset == 0:
                    return self.flags
                if offset == 2:
                    return XEN_IOPORT_PROTOCOL_VERSION
                return 0xFF
            if size == 2:
                if offset == 0:
                    return XEN_IOPORT_MAGIC_BLACKLISTED if self.blacklisted else XEN_IOPORT_MAGIC_VAL
                return 0xFFFF
            return 0xFFFFFFFF

    def fixed_write(self, offset: int, size: int, value: int) -> None:
        unplug = None
        with self._lock:
            if size == 1:
                if offset == 0:
                    self.flags = value & PFFLAG_ROM_LOCK
                elif offset == 2:
                    self._log_byte(value & 0xFF)
            elif size == 2:
                if offset == 0:
                    unplug = value & 0xFFFF
                elif offset == 2:
                    self.product = value & 0xFFFF
            elif size == 4 and offset == 0:
                self.build = value & 0xFFFFFFFF
                self.blacklisted = (self.product, self.build) in self.blacklist
                if TP_DRIVER.enabled:
                    TP_DRIVER.emit(product=self.product if self.product is not None else 0,
                                   name=PV_PRODUCTS.get(self.product, "unknown"), build=self.build,
                                   blacklisted=int(self.blacklisted))
        if unplug is not None:
            self._unplug(unplug, "port 0x10")

    # ------------------------------------------------------------ BAR0 (I/O)
    def _bar_io_read(self, offset: int, size: int) -> int:
        # byte-wide registers; wider accesses are split as QEMU's memory core does
        value = 0
        for i in range(size):
            b = self.flags if offset + i == 0 else 0xFF
            value |= b << (8 * i)
        return value

    def _bar_io_write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            off, b = offset + i, (value >> (8 * i)) & 0xFF
            if off == 0:
                with self._lock:
                    self.flags = b & PFFLAG_ROM_LOCK
            elif off == 4 and b == 1:          # old SUSE xen-kmp / VMDP < 1.7: everything
                self._unplug(UNPLUG_IDE_SCSI_DISKS | UNPLUG_ALL_NICS, "bar0+4")
            elif off == 8:
                if b == 1:                     # VMDP: disks only
                    self._unplug(UNPLUG_IDE_SCSI_DISKS, "bar0+8")
                elif b == 2:                   # VMDP: NICs only
                    self._unplug(UNPLUG_ALL_NICS, "bar0+8")
                else:
                    with self._lock:
                        self._log_byte(b)

    # ------------------------------------------------------------ BAR1 (memory)
    def _mmio_read(self, offset: int, size: int) -> int:
        return 0

    def _mmio_write(self, offset: int, size: int, value: int) -> None:
        pass

    # ------------------------------------------------------------ unplug and log
    def _unplug(self, mask: int, via: str) -> None:
        with self._lock:
            self.unplugged |= mask
            self.unplug_requests.append((via, mask))
        if TP_UNPLUG.enabled:
            TP_UNPLUG.emit(mask=mask, devices=",".join(unplug_names(mask)) or "none", via=via)
        if self.on_unplug is not None:
            self.on_unplug(mask)

    def _log_byte(self, b: int) -> None:
        """Lock held."""
        if b == 0x0A or len(self._log) >= LOG_LINE_MAX:
            line = self._log.decode("utf-8", "replace")
            self._log.clear()
            self.log_lines.append(line)
            if TP_LOG.enabled:
                TP_LOG.emit(line=line)
            if b == 0x0A:
                return
        self._log.append(b)


def attach_xen_platform(vm, pci_bus: PciBus, slot: int | None = None, **kwargs) -> XenPlatformDevice:
    """Plug the platform device into ``pci_bus`` (first free slot unless given)
    and claim the fixed I/O ports 0x10-0x1f."""
    dev = XenPlatformDevice(**kwargs)
    vm.pio_bus.register(XEN_IOPORT_BASE, XEN_IOPORT_SIZE, FnRegion(dev.fixed_read, dev.fixed_write),
                        "xen-platform-fixed")
    try:
        pci_bus.plug(dev, slot=slot)
    except Exception:
        vm.pio_bus.unregister(XEN_IOPORT_BASE)
        raise
    return dev


__all__ = ["XenPlatformDevice", "attach_xen_platform", "unplug_names", "XEN_IOPORT_BASE",
           "XEN_IOPORT_MAGIC_VAL", "UNPLUG_IDE_SCSI_DISKS", "UNPLUG_ALL_NICS", "UNPLUG_AUX_IDE_DISKS",
           "UNPLUG_NVME_DISKS"]
