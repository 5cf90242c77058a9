"""The virtio PCI transport, modern devices only (virtio 1.2 §4.1; Linux include/uapi/linux/virtio_pci.h).

Identity (§4.1.2): vendor 0x1af4, device 0x1040 + the virtio device ID, revision 1,
subsystem 0x1af4:0x1100.  No legacy I/O BAR, no transitional IDs: a driver must
negotiate VIRTIO_F_VERSION_1 (§6), or FEATURES_OK does not stick.

One 32-bit memory BAR (BAR0, 32 KiB, not prefetchable: the ISR is read-to-clear)
holds every structure the vendor capabilities (§4.1.4) point at, and the MSI-X
table and PBA (devices/msi.py)::

    0x0000  common configuration  struct virtio_pci_common_cfg, 60 bytes (§4.1.4.3)
    0x1000  ISR status            1 byte, read-to-clear (§4.1.4.5)
    0x2000  device configuration  the device type's (virtio-blk: struct virtio_blk_config)
    0x3000  notifications         queue q at 0x3000 + 4 * q (notify_off_multiplier 4,
                                  queue_notify_off = q), 16-bit writes (§4.1.4.4)
    0x4000  MSI-X table           one entry per queue + one for configuration changes
    0x5000  MSI-X PBA

plus a VIRTIO_PCI_CAP_PCI_CFG capability (§4.1.4.9: BAR access through config space).

Common configuration: accesses of a field's own width (§4.1.3.1), and the two
32-bit halves of the 64-bit queue addresses (what Linux's vp_iowrite64_twopart
does); any other access reads 0 and is ignored.  ``device_status`` 0 resets the
device (§4.1.4.3.1: done when the write returns).  FEATURES_OK is kept only if the
driver's features are a subset of the device's and include VERSION_1 (§2.2.2).
Queue fields are writable while the queue is disabled; ``queue_enable`` = 1 checks
the queue (devices/virtio/queue.py) and maps its rings.  With VIRTIO_F_RING_RESET a
queue_reset write of 1 resets one queue (§2.6.1).  MSI-X vector numbers beyond the
table read back VIRTIO_MSI_NO_VECTOR (§4.1.5.1.2: the mapping failed).

Notifications.  Each queue has an eventfd, serviced by the device's own
``virtio-<name>-<bdf>`` thread (started at the first DRIVER_OK).  Where KVM allows
it the queue's notify address is a KVM ioeventfd (2-byte writes, no data match:
the address tells the queue), registered while the BAR is mapped: the guest's
write never leaves the kernel.  Otherwise (KVM refused, or an access of another
width) the write exits to the BAR's MMIO handler, which writes the same eventfd.
A device type may give the thread fds of its own to poll (``watched_fds``, asked again
after every wake-up; ``fd_ready`` when one is ready: virtio-net's tap) and take a
queue's notifications itself (``queue_notified``; by default the queue's chains are
served through ``handle_chain``).

Interrupts (§4.1.5.4, §4.1.4.5).  With MSI-X enabled, a queue's vector (or the
configuration vector) fires through ``MsixCapability.fire``; the device thread
gives each vector an irqfd (``IrqChip.use_irqfd``) the first time, so KVM delivers
it with no userspace work where the route allows; a masked vector sets its PBA bit.
Without MSI-X, the ISR bits are set and INTA follows ``ISR != 0``; reading the ISR
clears it and lowers the pin.

A driver that breaks the rules (a bad ring address or size, a descriptor loop, an
avail index jump, nested indirect tables...: queue.py) gets the device marked
broken (§2.1.2): DEVICE_NEEDS_RESET in ``device_status``, every queue stopped, a
configuration change interrupt; only a reset brings it back.  The VMM goes on.

Locks: the device's lock (rank ``device``) guards the transport's state and the
queues; the device thread holds it while it services a batch of one queue (so a
reset from a vCPU waits for the batch to end).  INTx is a level and is driven
under it (``pci.intx`` is below); MSI-X messages are decided under it and fired
after it is released ("decide under the lock, deliver after it").

Snapshots (ARCHITECTURE.md, "Snapshots"): on top of the PCI function's state,
``save_device`` keeps the transport's registers, each queue's (``Virtqueue.save``) and
the device type's (``device_save``), taken while ``hold`` keeps the thread between
requests; ``restore_device`` checks them as a driver's writes are checked;
``rebuilt`` maps the rings again and kicks every queue once; ``start`` gives a
restored device its thread when the machine starts.
"""

from __future__ import annotations

import os
import select
import threading

from devices.msi import DROPPED, PENDING, SENT, MsixCapability
from devices.pci import BAR_MEM32, INTA, PciBar, PciDevice
from devices.trace_events import (
    TP_VIRTIO_BROKEN as TP_BROKEN,
    TP_VIRTIO_FEATURES as TP_FEATURES,
    TP_VIRTIO_IOEVENTFD as TP_IOEVENTFD,
    TP_VIRTIO_IRQ as TP_IRQ,
    TP_VIRTIO_NOTIFY as TP_NOTIFY,
    TP_VIRTIO_QUEUE_ENABLE as TP_QUEUE_ENABLE,
    TP_VIRTIO_RESET as TP_RESET,
    TP_VIRTIO_STATUS as TP_STATUS,
)
from devices.virtio.abi import (
    PCI_CAP_ID_VNDR,
    PCI_VENDOR_ID_REDHAT_QUMRANET,
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_RING_RESET,
    VIRTIO_F_VERSION_1,
    VIRTIO_MSI_NO_VECTOR,
    VIRTIO_PCI_CAP_BAR,
    VIRTIO_PCI_CAP_CFG_TYPE,
    VIRTIO_PCI_CAP_COMMON_CFG,
    VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG,
    VIRTIO_PCI_CAP_LEN,
    VIRTIO_PCI_CAP_LENGTH,
    VIRTIO_PCI_CAP_NOTIFY_CFG,
    VIRTIO_PCI_CAP_OFFSET,
    VIRTIO_PCI_CAP_PCI_CFG,
    VIRTIO_PCI_CAP_SIZE,
    VIRTIO_PCI_CFG_CAP_DATA,
    VIRTIO_PCI_CFG_CAP_SIZE,
    VIRTIO_PCI_COMMON_CFG_SIZE,
    VIRTIO_PCI_COMMON_CFGGENERATION,
    VIRTIO_PCI_COMMON_DF,
    VIRTIO_PCI_COMMON_DFSELECT,
    VIRTIO_PCI_COMMON_GF,
    VIRTIO_PCI_COMMON_GFSELECT,
    VIRTIO_PCI_COMMON_MSIX,
    VIRTIO_PCI_COMMON_NUMQ,
    VIRTIO_PCI_COMMON_Q_AVAILHI,
    VIRTIO_PCI_COMMON_Q_AVAILLO,
    VIRTIO_PCI_COMMON_Q_DESCHI,
    VIRTIO_PCI_COMMON_Q_DESCLO,
    VIRTIO_PCI_COMMON_Q_ENABLE,
    VIRTIO_PCI_COMMON_Q_MSIX,
    VIRTIO_PCI_COMMON_Q_NDATA,
    VIRTIO_PCI_COMMON_Q_NOFF,
    VIRTIO_PCI_COMMON_Q_RESET,
    VIRTIO_PCI_COMMON_Q_SELECT,
    VIRTIO_PCI_COMMON_Q_SIZE,
    VIRTIO_PCI_COMMON_Q_USEDHI,
    VIRTIO_PCI_COMMON_Q_USEDLO,
    VIRTIO_PCI_COMMON_STATUS,
    VIRTIO_PCI_ISR_CONFIG,
    VIRTIO_PCI_ISR_QUEUE,
    VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
    VIRTIO_PCI_MODERN_REVISION,
    VIRTIO_PCI_NOTIFY_CAP_MULT,
    VIRTIO_PCI_NOTIFY_CAP_SIZE,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    bit,
)
from devices.virtio.hold import ServiceHold
from devices.virtio.queue import Chain, Virtqueue, VirtqueueError, check_ints
from kvm_bindings import KvmError
from vmm.errors import internal_error
from vmm.locks import ordered_lock

VIRTIO_PCI_SUBSYSTEM_ID = 0x1100         # QEMU's PCI_SUBDEVICE_ID_QEMU
BAR_INDEX = 0
BAR_SIZE = 0x8000
COMMON_OFFSET = 0x0000
ISR_OFFSET = 0x1000
ISR_LENGTH = 4
DEVICE_CFG_OFFSET = 0x2000
DEVICE_CFG_MAX = 0x1000
NOTIFY_OFFSET = 0x3000
NOTIFY_MULTIPLIER = 4
MSIX_TABLE_OFFSET = 0x4000
MSIX_PBA_OFFSET = 0x5000
NOTIFY_WIDTH = 2                         # the driver writes the 16-bit queue index (§4.1.5.2)

TRANSPORT_FEATURES = (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX)
                      | bit(VIRTIO_F_RING_RESET))

# Common configuration fields: offset -> width (the 64-bit addresses as two 32-bit halves).
_COMMON_FIELDS = {
    VIRTIO_PCI_COMMON_DFSELECT: 4, VIRTIO_PCI_COMMON_DF: 4, VIRTIO_PCI_COMMON_GFSELECT: 4,
    VIRTIO_PCI_COMMON_GF: 4, VIRTIO_PCI_COMMON_MSIX: 2, VIRTIO_PCI_COMMON_NUMQ: 2,
    VIRTIO_PCI_COMMON_STATUS: 1, VIRTIO_PCI_COMMON_CFGGENERATION: 1, VIRTIO_PCI_COMMON_Q_SELECT: 2,
    VIRTIO_PCI_COMMON_Q_SIZE: 2, VIRTIO_PCI_COMMON_Q_MSIX: 2, VIRTIO_PCI_COMMON_Q_ENABLE: 2,
    VIRTIO_PCI_COMMON_Q_NOFF: 2, VIRTIO_PCI_COMMON_Q_DESCLO: 4, VIRTIO_PCI_COMMON_Q_DESCHI: 4,
    VIRTIO_PCI_COMMON_Q_AVAILLO: 4, VIRTIO_PCI_COMMON_Q_AVAILHI: 4, VIRTIO_PCI_COMMON_Q_USEDLO: 4,
    VIRTIO_PCI_COMMON_Q_USEDHI: 4, VIRTIO_PCI_COMMON_Q_NDATA: 2, VIRTIO_PCI_COMMON_Q_RESET: 2,
}
_QUEUE_ADDR = {VIRTIO_PCI_COMMON_Q_DESCLO: ("desc", 0), VIRTIO_PCI_COMMON_Q_DESCHI: ("desc", 32),
               VIRTIO_PCI_COMMON_Q_AVAILLO: ("driver", 0), VIRTIO_PCI_COMMON_Q_AVAILHI: ("driver", 32),
               VIRTIO_PCI_COMMON_Q_USEDLO: ("device", 0), VIRTIO_PCI_COMMON_Q_USEDHI: ("device", 32)}

CONFIG = "config"                        # the configuration change interrupt's cause
# What a snapshot saves of the transport's registers (save_device): each with its largest value.
_SAVED_INTS = {"status": 0xFF, "dfselect": 0xFFFFFFFF, "gfselect": 0xFFFFFFFF, "driver_features": (1 << 64) - 1,
               "config_vector": 0xFFFF, "queue_select": 0xFFFF, "isr": VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG}


class VirtioPciDevice(PciDevice):
    """The transport; a device type subclasses it (devices/virtio/blk.py, rng.py, net.py) and
    gives ``virtio_id``, ``device_features()``, ``device_config()``, ``handle_chain()``
    and, if it keeps state, ``device_reset()``.  A device with a host fd of its own
    (virtio-net's tap) also gives ``watched_fds()``/``fd_ready()``, and may take a queue's
    notifications itself (``queue_notified()``: a receive queue's buffers wait for data)."""

    virtio_id = 0
    class_code = 0xFF0000

    def __init__(self, name: str, memory, num_queues: int = 1, queue_size: int = 256):
        super().__init__(name, vendor_id=PCI_VENDOR_ID_REDHAT_QUMRANET,
                         device_id=VIRTIO_PCI_MODERN_DEVICE_ID_BASE + self.virtio_id,
                         class_code=self.class_code, revision=VIRTIO_PCI_MODERN_REVISION,
                         subsystem_vendor_id=PCI_VENDOR_ID_REDHAT_QUMRANET,
                         subsystem_id=VIRTIO_PCI_SUBSYSTEM_ID, interrupt_pin=INTA)
        self.memory = memory
        self._lock = ordered_lock("device")
        self.queues = [Virtqueue(memory, i, queue_size) for i in range(num_queues)]
        self.offered = TRANSPORT_FEATURES | self.device_features()
        self._state_reset()
        self.bar = self.add_bar(BAR_INDEX, BAR_SIZE, (self._bar_read, self._bar_write), BAR_MEM32)
        self._add_vendor_cap(VIRTIO_PCI_CAP_COMMON_CFG, COMMON_OFFSET, VIRTIO_PCI_COMMON_CFG_SIZE)
        notify = self._add_vendor_cap(VIRTIO_PCI_CAP_NOTIFY_CFG, NOTIFY_OFFSET, NOTIFY_MULTIPLIER * num_queues,
                                      VIRTIO_PCI_NOTIFY_CAP_SIZE)
        self.put(notify + VIRTIO_PCI_NOTIFY_CAP_MULT, 4, NOTIFY_MULTIPLIER)
        self._add_vendor_cap(VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, ISR_LENGTH)
        self.cfg_size = len(self.device_config())
        if self.cfg_size:
            self._add_vendor_cap(VIRTIO_PCI_CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, self.cfg_size)
        self._pci_cfg = self._add_vendor_cap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0, VIRTIO_PCI_CFG_CAP_SIZE,
                                             on_write=self._pci_cfg_written, on_read=self._pci_cfg_read)
        self.set_wmask(self._pci_cfg + VIRTIO_PCI_CAP_BAR, 1, 0xFF)
        self.set_wmask(self._pci_cfg + VIRTIO_PCI_CAP_OFFSET, 4, 0xFFFFFFFF)
        self.set_wmask(self._pci_cfg + VIRTIO_PCI_CAP_LENGTH, 4, 0xFFFFFFFF)
        self.set_wmask(self._pci_cfg + VIRTIO_PCI_CFG_CAP_DATA, 4, 0xFFFFFFFF)
        self.msix = MsixCapability(self, num_queues + 1, BAR_INDEX, MSIX_TABLE_OFFSET, BAR_INDEX, MSIX_PBA_OFFSET,
                                   on_enable_change=self._msix_enable_changed)
        # Notifications: one eventfd per queue, and one that stops the device thread.
        self._efds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in self.queues]
        self._stop_efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._ioeventfds: dict[int, int] = {}      # queue -> the address KVM signals its eventfd for
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._irqfd_tried: set[int] = set()
        self.notifies = {"eventfd": 0, "mmio-exit": 0}   # counters (tests, stats)
        self._hold = ServiceHold()                 # a snapshot holds the thread between requests

    # ------------------------------------------------------------ the device type's part
    def device_features(self) -> int:
        return 0

    def device_config(self) -> bytes:
        return b""

    def handle_chain(self, q: Virtqueue, chain: Chain) -> int:
        """Serve one request (device lock held); return the bytes written into it."""
        raise NotImplementedError

    def device_reset(self) -> None:
        """The driver reset the device (device lock held)."""

    def queue_notified(self, q: Virtqueue) -> None:
        """The driver notified ``q`` (device thread, no lock held): serve its chains."""
        self._service(q)

    def watched_fds(self) -> dict[int, int]:
        """Host fds the device thread polls besides the queues' eventfds: fd -> poll events.
        Asked again after every wake-up, on the device thread (a device stops watching an fd
        by leaving it out)."""
        return {}

    def fd_ready(self, fd: int, events: int) -> None:
        """A watched fd is ready (device thread, no lock held)."""

    def device_save(self) -> dict:
        """The device type's primary state beyond the transport's (device lock held; the
        thread held between requests).  JSON-able; bytes are fine."""
        return {}

    def device_restore(self, state: dict) -> None:
        """Put back ``device_save``'s dict (device lock held); ValueError if it can't be."""

    # ------------------------------------------------------------ capabilities
    def _add_vendor_cap(self, cfg_type: int, offset: int, length: int, size: int = VIRTIO_PCI_CAP_SIZE,
                        **hooks) -> int:
        off = self.add_capability(PCI_CAP_ID_VNDR, size, **hooks)
        self.config[off + VIRTIO_PCI_CAP_LEN] = size
        self.config[off + VIRTIO_PCI_CAP_CFG_TYPE] = cfg_type
        self.config[off + VIRTIO_PCI_CAP_BAR] = BAR_INDEX
        self.put(off + VIRTIO_PCI_CAP_OFFSET, 4, offset)
        self.put(off + VIRTIO_PCI_CAP_LENGTH, 4, length)
        return off

    def _pci_cfg_access(self) -> tuple[int, int] | None:
        """(offset, length) of the BAR access VIRTIO_PCI_CAP_PCI_CFG describes, if valid (§4.1.4.9)."""
        c = self._pci_cfg
        bar, off, length = self.config[c + VIRTIO_PCI_CAP_BAR], self.get(c + VIRTIO_PCI_CAP_OFFSET, 4), \
            self.get(c + VIRTIO_PCI_CAP_LENGTH, 4)
        if bar != BAR_INDEX or length not in (1, 2, 4) or off % length or off + length > BAR_SIZE:
            return None
        return off, length

    def _pci_cfg_written(self, offset: int, size: int) -> None:
        data = self._pci_cfg + VIRTIO_PCI_CFG_CAP_DATA
        if offset < data + 4 and offset + size > data:
            access = self._pci_cfg_access()
            if access is not None:
                off, length = access
                self._bar_write(off, length, self.get(data, length))

    def _pci_cfg_read(self, offset: int, size: int) -> None:
        data = self._pci_cfg + VIRTIO_PCI_CFG_CAP_DATA
        if offset < data + 4 and offset + size > data:
            access = self._pci_cfg_access()
            if access is not None:
                off, length = access
                self.put(data, 4, self._bar_read(off, length))

    # ------------------------------------------------------------ state
    def _state_reset(self) -> None:
        """Device lock held (or not yet shared): everything back to its reset value."""
        self.status = 0
        self.dfselect = self.gfselect = 0
        self.driver_features = 0
        self.config_vector = VIRTIO_MSI_NO_VECTOR
        self.queue_select = 0
        self.isr = 0
        self.broken: str | None = None
        for q in self.queues:
            q.reset()

    def negotiated(self, feature: int) -> bool:
        return bool(self.driver_features & bit(feature)) and bool(self.status & VIRTIO_CONFIG_S_FEATURES_OK)

    def _selected(self) -> Virtqueue | None:
        qs = self.queue_select
        return self.queues[qs] if qs < len(self.queues) else None

    def _reset_locked(self) -> None:
        if TP_RESET.enabled:
            TP_RESET.emit(owner=self.bdf, dev=self.name, what="device")
        self._state_reset()
        self.device_reset()
        self.set_intx(False)

    # ------------------------------------------------------------ the BAR
    def _bar_read(self, offset: int, size: int) -> int:
        if offset + size <= VIRTIO_PCI_COMMON_CFG_SIZE:
            with self._lock:
                return self._common_read(offset, size)
        if ISR_OFFSET <= offset < ISR_OFFSET + ISR_LENGTH:
            with self._lock:
                value, self.isr = self.isr, 0          # read-to-clear (§4.1.4.5)
                self.set_intx(False)
            return value if offset == ISR_OFFSET else 0
        if DEVICE_CFG_OFFSET <= offset < DEVICE_CFG_OFFSET + DEVICE_CFG_MAX:
            o = offset - DEVICE_CFG_OFFSET
            with self._lock:
                cfg = self.device_config()
            return int.from_bytes(cfg[o:o + size].ljust(size, b"\0"), "little")
        value = self.msix.mmio_read(BAR_INDEX, offset, size)
        return 0 if value is None else value

    def _bar_write(self, offset: int, size: int, value: int) -> None:
        if NOTIFY_OFFSET <= offset < NOTIFY_OFFSET + NOTIFY_MULTIPLIER * len(self.queues):
            q = (offset - NOTIFY_OFFSET) // NOTIFY_MULTIPLIER
            self.notifies["mmio-exit"] += 1
            if TP_NOTIFY.enabled:
                TP_NOTIFY.emit(owner=self.bdf, queue=q, via="mmio-exit")
            os.eventfd_write(self._efds[q], 1)
            return
        if offset + size <= VIRTIO_PCI_COMMON_CFG_SIZE:
            with self._lock:
                deliveries = self._common_write(offset, size, value)
            self._deliver(deliveries)
            return
        if DEVICE_CFG_OFFSET <= offset < DEVICE_CFG_OFFSET + DEVICE_CFG_MAX:
            return                                    # nothing writable in our device configs
        self.msix.mmio_write(BAR_INDEX, offset, size, value)

    # ------------------------------------------------------------ common configuration (device lock held)
    def _common_read(self, offset: int, size: int) -> int:
        width = _COMMON_FIELDS.get(offset)
        if width != size:
            return 0
        q = self._selected()
        if offset == VIRTIO_PCI_COMMON_DFSELECT:
            return self.dfselect
        if offset == VIRTIO_PCI_COMMON_DF:
            return (self.offered >> (32 * self.dfselect)) & 0xFFFFFFFF if self.dfselect < 2 else 0
        if offset == VIRTIO_PCI_COMMON_GFSELECT:
            return self.gfselect
        if offset == VIRTIO_PCI_COMMON_GF:
            return (self.driver_features >> (32 * self.gfselect)) & 0xFFFFFFFF if self.gfselect < 2 else 0
        if offset == VIRTIO_PCI_COMMON_MSIX:
            return self.config_vector
        if offset == VIRTIO_PCI_COMMON_NUMQ:
            return len(self.queues)
        if offset == VIRTIO_PCI_COMMON_STATUS:
            return self.status
        if offset == VIRTIO_PCI_COMMON_CFGGENERATION:
            return 0                                  # our device configs never change
        if offset == VIRTIO_PCI_COMMON_Q_SELECT:
            return self.queue_select
        if q is None:                                 # §4.1.4.3.2: a queue that doesn't exist has size 0
            return VIRTIO_MSI_NO_VECTOR if offset == VIRTIO_PCI_COMMON_Q_MSIX else 0
        if offset == VIRTIO_PCI_COMMON_Q_SIZE:
            return q.size
        if offset == VIRTIO_PCI_COMMON_Q_MSIX:
            return q.msix_vector
        if offset == VIRTIO_PCI_COMMON_Q_ENABLE:
            return int(q.enabled)
        if offset == VIRTIO_PCI_COMMON_Q_NOFF:
            return q.index
        if offset in _QUEUE_ADDR:
            field, shift = _QUEUE_ADDR[offset]
            return (getattr(q, field) >> shift) & 0xFFFFFFFF
        if offset == VIRTIO_PCI_COMMON_Q_RESET:
            return int(q.reset_pending)
        return 0                                      # queue_notif_config_data: no NOTIF_CONFIG_DATA

    def _vector(self, value: int) -> int:
        return value if value < self.msix.nr_entries else VIRTIO_MSI_NO_VECTOR

    def _common_write(self, offset: int, size: int, value: int) -> list:
        """Returns the interrupts to deliver once the lock is released."""
        if _COMMON_FIELDS.get(offset) != size:
            return []
        q = self._selected()
        if offset == VIRTIO_PCI_COMMON_DFSELECT:
            self.dfselect = value
        elif offset == VIRTIO_PCI_COMMON_GFSELECT:
            self.gfselect = value
        elif offset == VIRTIO_PCI_COMMON_GF:
            if self.gfselect < 2 and not self.status & VIRTIO_CONFIG_S_FEATURES_OK:
                shift = 32 * self.gfselect
                self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | value << shift
        elif offset == VIRTIO_PCI_COMMON_MSIX:
            self.config_vector = self._vector(value)
        elif offset == VIRTIO_PCI_COMMON_STATUS:
            return self._status_write(value)
        elif offset == VIRTIO_PCI_COMMON_Q_SELECT:
            self.queue_select = value
        elif q is None:
            pass
        elif offset == VIRTIO_PCI_COMMON_Q_MSIX:
            q.msix_vector = self._vector(value)
        elif offset == VIRTIO_PCI_COMMON_Q_RESET:
            if value == 1 and self.negotiated(VIRTIO_F_RING_RESET):
                if TP_RESET.enabled:
                    TP_RESET.emit(owner=self.bdf, dev=self.name, what=f"queue {q.index}")
                vector = q.msix_vector
                q.reset()
                q.msix_vector, q.reset_pending = vector, True
        elif q.enabled:
            pass                                      # §4.1.4.3.2: no changes to an enabled queue
        elif offset == VIRTIO_PCI_COMMON_Q_SIZE:
            q.size = value
        elif offset in _QUEUE_ADDR:
            field, shift = _QUEUE_ADDR[offset]
            setattr(q, field, (getattr(q, field) & ~(0xFFFFFFFF << shift)) | value << shift)
        elif offset == VIRTIO_PCI_COMMON_Q_ENABLE and value == 1 and self.broken is None:
            try:
                q.enable(self.negotiated(VIRTIO_RING_F_INDIRECT_DESC), self.negotiated(VIRTIO_RING_F_EVENT_IDX))
            except VirtqueueError as e:
                return self._break_locked(str(e))
            if TP_QUEUE_ENABLE.enabled:
                TP_QUEUE_ENABLE.emit(owner=self.bdf, queue=q.index, size=q.size, desc=q.desc, driver=q.driver,
                                     device=q.device, vector=q.msix_vector)
            if self.status & VIRTIO_CONFIG_S_DRIVER_OK:
                os.eventfd_write(self._efds[q.index], 1)   # re-enabled after a queue reset: look
        return []

    def _status_write(self, value: int) -> list:
        old = self.status
        value &= 0xFF
        if value == 0:
            self._reset_locked()
            if TP_STATUS.enabled:
                TP_STATUS.emit(owner=self.bdf, dev=self.name, old=old, new=0)
            return []
        if value & VIRTIO_CONFIG_S_FEATURES_OK and not old & VIRTIO_CONFIG_S_FEATURES_OK:
            d = self.driver_features
            ok = not d & ~self.offered and d & bit(VIRTIO_F_VERSION_1)
            if TP_FEATURES.enabled:
                TP_FEATURES.emit(owner=self.bdf, dev=self.name, offered=self.offered, driver=d,
                                 result="accepted" if ok else "refused")
            if not ok:
                value &= ~VIRTIO_CONFIG_S_FEATURES_OK  # §2.2.2: FEATURES_OK doesn't stick
        value &= ~VIRTIO_CONFIG_S_NEEDS_RESET         # the device's bit
        if self.broken is not None:
            value |= VIRTIO_CONFIG_S_NEEDS_RESET
        self.status = value
        if TP_STATUS.enabled and value != old:
            TP_STATUS.emit(owner=self.bdf, dev=self.name, old=old, new=value)
        if value & VIRTIO_CONFIG_S_DRIVER_OK and not old & VIRTIO_CONFIG_S_DRIVER_OK:
            self._start_thread_locked()
            for efd in self._efds:                    # anything made available before DRIVER_OK
                os.eventfd_write(efd, 1)
        return []

    # ------------------------------------------------------------ snapshot (ARCHITECTURE.md "Snapshots")
    # PciDevice saves config space, the INTx output and the MSI-X table and PBA; these hooks add
    # the transport's registers, the queues and the device type's state (config lock held, then
    # the device lock; the thread held between requests by Machine's quiesce).

    def save_device(self) -> dict:
        with self._lock:
            return {"status": self.status, "dfselect": self.dfselect, "gfselect": self.gfselect,
                    "driver_features": self.driver_features, "config_vector": self.config_vector,
                    "queue_select": self.queue_select, "isr": self.isr, "broken": self.broken,
                    "queues": [q.save() for q in self.queues], "device": self.device_save()}

    def restore_device(self, state: dict) -> None:
        """The saved values pass the checks a driver's writes pass (ValueError for what no
        driver could have written: the restore is refused); the rings are checked in
        ``rebuilt``, once memory is loaded."""
        with self._lock:
            check_ints(state, _SAVED_INTS, self.name)
            broken, d, status = state["broken"], state["driver_features"], state["status"]
            if broken is not None and not isinstance(broken, str):
                raise ValueError(f"{self.name}: saved broken reason {broken!r} is not a string")
            if status & VIRTIO_CONFIG_S_FEATURES_OK and (d & ~self.offered or not d & bit(VIRTIO_F_VERSION_1)):
                raise ValueError(f"{self.name}: saved features {d:#x} were accepted, but this device "
                                 f"offers {self.offered:#x}")
            if len(state["queues"]) != len(self.queues):
                raise ValueError(f"{self.name}: {len(state['queues'])} saved queues, the device has {len(self.queues)}")
            for q, qs in zip(self.queues, state["queues"]):
                q.restore(qs)
                if (q.indirect and not d & bit(VIRTIO_RING_F_INDIRECT_DESC)) or \
                        (q.event_idx and not d & bit(VIRTIO_RING_F_EVENT_IDX)):
                    raise ValueError(f"{self.name}: queue {q.index} uses a feature the driver didn't ask for")
                q.msix_vector = self._vector(q.msix_vector)    # as a driver's write is taken
                q.enabled = q.enabled and broken is None        # a broken device's queues are stopped
            self.dfselect, self.gfselect, self.driver_features = state["dfselect"], state["gfselect"], d
            self.config_vector = self._vector(state["config_vector"])
            self.queue_select, self.isr, self.broken = state["queue_select"], state["isr"], broken
            # NEEDS_RESET is the device's bit: set exactly while it is broken (_status_write).
            self.status = status & ~VIRTIO_CONFIG_S_NEEDS_RESET | (VIRTIO_CONFIG_S_NEEDS_RESET if broken else 0)
            self.device_restore(state["device"])

    def rebuilt(self) -> None:
        """Derived: the BAR's mapping and its ioeventfds, the MSI-X vectors and INTx (PciDevice);
        each enabled queue's rings checked and mapped again (a bad one breaks the device, as at
        enable); every queue kicked once, since a notification the guest sent before the
        snapshot may have been taken and not served.  The thread starts with the machine
        (``start``)."""
        super().rebuilt()
        deliveries, kick = [], False
        with self._lock:
            for q in self.queues:
                try:
                    q.remap()
                except VirtqueueError as e:
                    deliveries = self._break_locked(f"restored {e}")
                    break
            kick = self.broken is None and bool(self.status & VIRTIO_CONFIG_S_DRIVER_OK)
        self._deliver(deliveries)
        if kick:
            for efd in self._efds:
                os.eventfd_write(efd, 1)

    # ------------------------------------------------------------ broken (§2.1.2)
    def _break_locked(self, reason: str) -> list:
        if self.broken is not None:
            return []
        self.broken = reason
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET
        for q in self.queues:
            q.disable()
        if TP_BROKEN.enabled:
            TP_BROKEN.emit(owner=self.bdf, dev=self.name, reason=reason)
        return self._interrupt_locked(CONFIG, self.config_vector)

    # ------------------------------------------------------------ interrupts
    def _interrupt_locked(self, cause, vector: int) -> list:
        """Decide (device lock held) how to tell the driver; returns what to fire after."""
        if self.msix.enabled:
            if cause == CONFIG:
                self.isr |= VIRTIO_PCI_ISR_CONFIG     # §4.1.4.5.1: set before any config notification
            if vector == VIRTIO_MSI_NO_VECTOR:
                if TP_IRQ.enabled:
                    TP_IRQ.emit(owner=self.bdf, cause=cause, via="msix", vector=vector, result="no-vector")
                return []
            return [(cause, vector)]
        self.isr |= VIRTIO_PCI_ISR_CONFIG if cause == CONFIG else VIRTIO_PCI_ISR_QUEUE
        self.set_intx(True)
        if TP_IRQ.enabled:
            TP_IRQ.emit(owner=self.bdf, cause=cause, via="intx", vector=VIRTIO_MSI_NO_VECTOR,
                        result=f"isr={self.isr:#x}")
        return []

    def _deliver(self, deliveries: list) -> None:
        """No device lock held: send the MSI-X messages decided under it."""
        for cause, vector in deliveries:
            if vector not in self._irqfd_tried and self.bus is not None and \
                    threading.current_thread() is self._thread:
                self._irqfd_tried.add(vector)
                vec = self.msix.vector(vector)
                if vec is not None:
                    self.bus.vm.irqchip.use_irqfd(vec)    # False: KVM refused; fire() uses KVM_SIGNAL_MSI
            result = self.msix.fire(vector)
            if TP_IRQ.enabled:
                vec = self.msix.vector(vector)
                via = "irqfd" if vec is not None and vec._fast and result == SENT else "msix"
                TP_IRQ.emit(owner=self.bdf, cause=cause, via=via, vector=vector, result=result)

    def _msix_enable_changed(self) -> None:
        with self._lock:
            self.set_intx(bool(self.isr) and not self.msix.enabled)

    # ------------------------------------------------------------ the device thread
    def _start_thread_locked(self) -> None:
        if self._thread is not None or self._stopped or self.bus is None:
            return
        self._thread = threading.Thread(target=self._run, name=f"virtio-{self.name}-{self.bdf}", daemon=True)
        self._thread.start()

    def start(self) -> None:
        """The machine starts (its late phase): a restored device whose driver had set
        DRIVER_OK gets its thread, as the DRIVER_OK write gives a booted one.  No lock held."""
        with self._lock:
            if self.status & VIRTIO_CONFIG_S_DRIVER_OK:
                self._start_thread_locked()

    def stop(self) -> None:
        """Stop the device thread (the VM ended).  No lock held."""
        self._stopped = True
        self._hold.stop()                         # a thread held for a snapshot ends too
        os.eventfd_write(self._stop_efd, 1)
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(5.0)

    def close(self) -> None:
        """After the VM is gone: the eventfds."""
        self.stop()
        for fd in (*self._efds, self._stop_efd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._efds, self._stop_efd = [], -1

    def _run(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._stop_efd, select.POLLIN)
            by_fd = {}
            for i, efd in enumerate(self._efds):
                poller.register(efd, select.POLLIN)
                by_fd[efd] = i
            watched: dict[int, int] = {}
            while True:
                watched = self._watch(poller, watched)
                for fd, events in poller.poll():
                    if fd == self._stop_efd:
                        return
                    if fd not in by_fd:
                        try:
                            self.fd_ready(fd, events)
                        except Exception as e:  # noqa: BLE001 - reported; the device goes on serving
                            internal_error(f"virtio-{self.name} fd {fd}", e)
                        continue
                    try:
                        os.eventfd_read(fd)
                    except BlockingIOError:
                        continue
                    q = by_fd[fd]
                    self.notifies["eventfd"] += 1
                    if TP_NOTIFY.enabled:
                        TP_NOTIFY.emit(owner=self.bdf, queue=q, via="eventfd")
                    try:
                        self.queue_notified(self.queues[q])
                    except Exception as e:  # noqa: BLE001 - reported; the device goes on serving
                        internal_error(f"virtio-{self.name} queue {q}", e)
        except Exception as e:  # noqa: BLE001 - a device thread reports, never dies silently
            internal_error(f"virtio-{self.name} thread", e)

    def _watch(self, poller, watched: dict[int, int]) -> dict[int, int]:
        """Bring the poll set's device fds in line with ``watched_fds()``."""
        want = self.watched_fds()
        if want != watched:
            for fd in watched.keys() - want.keys():
                poller.unregister(fd)
            for fd, events in want.items():
                if watched.get(fd) != events:
                    poller.register(fd, events)     # registers, or modifies a registered fd
        return want

    def _service(self, q: Virtqueue, drain=None) -> None:
        """Serve ``q`` in batches (``drain(q)``, by default ``_drain_locked``: at most a ring's
        worth), the lock released between them."""
        drain = drain or self._drain_locked
        while True:
            if not self._hold.begin():
                return
            try:
                with self._lock:
                    if self.broken is not None or not q.enabled or not self.status & VIRTIO_CONFIG_S_DRIVER_OK:
                        return
                    more, deliveries = False, []
                    try:
                        more, pushed, notify = drain(q)
                        if notify:
                            deliveries = self._interrupt_locked(q.index, q.msix_vector)
                        elif pushed and TP_IRQ.enabled:    # the driver asked not to be told (§2.7.10)
                            TP_IRQ.emit(owner=self.bdf, cause=q.index, via="-", vector=q.msix_vector,
                                        result="suppressed")
                    except VirtqueueError as e:
                        deliveries = self._break_locked(str(e))
                self._deliver(deliveries)
            finally:
                self._hold.end()
            if not more:
                return

    # ------------------------------------------------------------ holding the thread (snapshots)
    def hold(self, timeout: float = 5.0) -> None:
        """Hold the device thread at a request boundary until ``release()`` (devices/virtio/hold.py):
        returns once no service step runs, every request taken pushed and its interrupt sent,
        so the queues' saved indices match guest memory.  A running batch stops before its
        next request; virtio-net reads no frame meanwhile (they wait in the tap).
        TimeoutError if a request doesn't end within ``timeout`` (a stuck backing file)."""
        self._hold.hold(timeout, f"{self.name} {self.bdf}")

    def release(self) -> None:
        self._hold.release()

    def _drain_locked(self, q: Virtqueue) -> tuple[bool, bool, bool]:
        """Serve up to a ring's worth of chains; (more to do, pushed any, notify the driver)."""
        pushed = more = False
        for _ in range(q.size):
            if self._hold.held:                       # a snapshot waits: stop between requests
                more = True
                break
            chain = q.pop()
            if chain is None:
                if q.publish_avail_event():           # more arrived meanwhile: no notify will come
                    continue
                break
            q.push(chain, self.handle_chain(q, chain))
            pushed = True
        else:
            more = True
        return more, pushed, pushed and q.needs_notification()

    # ------------------------------------------------------------ ioeventfds (config lock held)
    def bar_mapped(self, bar: PciBar) -> None:
        if bar.index != BAR_INDEX or self._stopped:
            return
        vm = self.bus.vm
        for i, efd in enumerate(self._efds):
            addr = bar.address + NOTIFY_OFFSET + NOTIFY_MULTIPLIER * i
            try:
                vm.fd.ioeventfd(efd, addr, NOTIFY_WIDTH, pio=False)
                self._ioeventfds[i] = addr
                result = "assigned"
            except KvmError as e:
                result = f"refused: {e}"              # the MMIO exit handler writes the eventfd
            if TP_IOEVENTFD.enabled:
                TP_IOEVENTFD.emit(owner=self.bdf, queue=i, addr=addr, result=result)

    def bar_unmapped(self, bar: PciBar) -> None:
        if bar.index != BAR_INDEX:
            return
        vm = self.bus.vm
        for i, addr in list(self._ioeventfds.items()):
            try:
                vm.fd.ioeventfd(self._efds[i], addr, NOTIFY_WIDTH, pio=False, deassign=True)
            except KvmError:
                pass
            del self._ioeventfds[i]
            if TP_IOEVENTFD.enabled:
                TP_IOEVENTFD.emit(owner=self.bdf, queue=i, addr=addr, result="deassigned")

    def unplugged(self) -> None:
        self._stopped = True
        self._hold.stop()
        os.eventfd_write(self._stop_efd, 1)


def attach_virtio(pci_bus, dev: VirtioPciDevice, slot: int | None = None) -> VirtioPciDevice:
    """Plug ``dev``; its thread stops when the VM ends."""
    pci_bus.plug(dev, slot=slot)
    for q in dev.queues:
        q.owner = dev.bdf
    pci_bus.vm.at_exit(dev.stop)
    return dev


__all__ = ["VirtioPciDevice", "attach_virtio", "TRANSPORT_FEATURES", "BAR_INDEX", "BAR_SIZE", "NOTIFY_OFFSET",
           "NOTIFY_MULTIPLIER", "ISR_OFFSET", "DEVICE_CFG_OFFSET", "COMMON_OFFSET", "DROPPED", "PENDING", "SENT"]
