"""MSI and MSI-X capability models that any :class:`devices.pci.PciDevice` can carry.

Sources: PCI Local Bus Specification 3.0, §6.8 (6.8.1 MSI, 6.8.2 MSI-X); register
offsets and bits as in Linux include/uapi/linux/pci_regs.h.

MSI (capability ID 0x05), ``MsiCapability``::

    +0x02  message control  bit 0 enable (RW), 3:1 multiple message capable (RO,
                            log2), 6:4 multiple message enable (RW, clamped to the
                            capable value as QEMU does), 7 64-bit (RO), 8 per-vector
                            masking (RO)
    +0x04  address low      bits 1:0 read-only zero
    +0x08  address high     (64-bit only)
    +0x08/0x0C data         16 bits
    +0x0C/0x10 mask bits    one per vector (per-vector masking only)
    +0x10/0x14 pending bits read-only, set by the device (ditto)

With 2^n messages enabled, vector k sends ``(data & ~(2^n - 1)) | k`` (§6.8.1.5:
the function modifies the low n bits).  A vector is *masked* (``MsiVector.update``)
when its mask bit is set, MSI is disabled or k is beyond the enabled count.
``fire(k)``: a masked vector's message sets its pending bit (§6.8.3.3: "the function
must set the associated Pending bit whenever the function would otherwise send
the message"); with MSI disabled or k beyond the enabled count there is no message
to hold back, so it is dropped.  Unmasking a vector whose pending bit is set sends
the message once and clears the bit.

MSI-X (capability ID 0x11), ``MsixCapability``: message control (bits 10:0 table
size - 1 (RO), 14 function mask, 15 enable), table and PBA offset/BIR (RO).  The
table (16 bytes per entry: address low/high, data, vector control with bit 0 =
mask; entries reset masked, §6.8.2.9) and the PBA (one bit per entry, read-only)
live in a BAR of the device, which calls ``mmio_read``/``mmio_write`` from that
BAR's handler.  Only naturally aligned 4- and 8-byte accesses are defined
(§6.8.2: "DWORD or QWORD"); others read 0 and are ignored.  Reserved bits
(address bits 1:0, vector control bits 31:1) read 0.  ``fire(e)`` with the entry
masked, the function masked or MSI-X disabled sets the entry's PBA bit; clearing
the mask (or enabling) sends each pending message once and clears its bit.

Each vector is a ``vmm.irqchip.MsiVector`` (made when the device is plugged: it
needs the bdf), told of every change with ``update(address, data, masked)`` and
removed (``remove``) on unplug.  Its ``unmask`` callback implements Xen's "binding
an MSI PIRQ unmasks the vector" (``unmask_vector``/``unmask_entry``).

Locks: each capability has its own ``pci.msi`` lock (vmm/locks.py), below device
locks and the bus config lock.  It is held while a message is sent
(``MsiVector.fire``/``update`` take only irqchip locks, which are below it), so a
guest's mask write is ordered against the device's messages; no device callback
runs under it (``on_enable_change`` is called after it is released).
"""

from __future__ import annotations

from typing import Callable

from devices.pci import PciDevice
from devices.trace_events import (
    TP_PCI_MSI_CONFIG as TP_MSI_CONFIG,
    TP_PCI_MSI_FIRE as TP_MSI_FIRE,
    TP_PCI_MSIX_ENTRY as TP_MSIX_ENTRY,
    TP_PCI_MSIX_CTRL as TP_MSIX_CTRL,
    TP_PCI_MSIX_FIRE as TP_MSIX_FIRE,
)
from vmm.locks import ordered_lock

# ---------------------------------------------------------------- linux/pci_regs.h
PCI_CAP_ID_MSI = 0x05
PCI_CAP_ID_MSIX = 0x11

PCI_MSI_FLAGS = 0x02
PCI_MSI_FLAGS_ENABLE = 0x0001
PCI_MSI_FLAGS_QMASK = 0x000E       # multiple message capable (log2)
PCI_MSI_FLAGS_QSIZE = 0x0070       # multiple message enable (log2)
PCI_MSI_FLAGS_64BIT = 0x0080
PCI_MSI_FLAGS_MASKBIT = 0x0100
PCI_MSI_ADDRESS_LO = 0x04
PCI_MSI_ADDRESS_HI = 0x08
PCI_MSI_DATA_32 = 0x08
PCI_MSI_MASK_32 = 0x0C
PCI_MSI_PENDING_32 = 0x10
PCI_MSI_DATA_64 = 0x0C
PCI_MSI_MASK_64 = 0x10
PCI_MSI_PENDING_64 = 0x14

PCI_MSIX_FLAGS = 0x02
PCI_MSIX_FLAGS_QSIZE = 0x07FF      # table size - 1
PCI_MSIX_FLAGS_MASKALL = 0x4000
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_TABLE = 0x04
PCI_MSIX_PBA = 0x08
PCI_MSIX_BIR = 0x7                 # PCI_MSIX_TABLE_BIR / PCI_MSIX_PBA_BIR
PCI_CAP_MSIX_SIZEOF = 12
PCI_MSIX_ENTRY_SIZE = 16
PCI_MSIX_ENTRY_LOWER_ADDR = 0x0
PCI_MSIX_ENTRY_UPPER_ADDR = 0x4
PCI_MSIX_ENTRY_DATA = 0x8
PCI_MSIX_ENTRY_VECTOR_CTRL = 0xC
PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1
MSIX_MAX_ENTRIES = 2048

# What fire() did with a message.
SENT = "sent"
PENDING = "pending"
DROPPED = "dropped"

# Writable bits of one table entry, byte by byte (address bits 1:0 and vector control
# bits 31:1 are reserved: read as zero).
_ENTRY_WMASK = bytes([0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                      0xFF, 0xFF, 0xFF, 0xFF, PCI_MSIX_ENTRY_CTRL_MASKBIT, 0, 0, 0])


class MsiError(ValueError):
    """A device model asked for an impossible capability (VMM-side, never guest-caused)."""


def _aligned(offset: int, size: int, limit: int) -> bool:
    return size in (4, 8) and offset % size == 0 and 0 <= offset and offset + size <= limit


class MsiCapability:
    """The MSI capability of ``dev`` (add it before plugging).

    ``on_enable_change()`` is called (config lock held, no MSI lock) when the guest
    turns MSI on or off: a device stops using INTx while MSI is enabled (§6.8.1.3)."""

    def __init__(self, dev: PciDevice, nr_vectors: int = 1, is_64bit: bool = True, per_vector_mask: bool = True,
                 on_enable_change: Callable[[], None] | None = None):
        if nr_vectors not in (1, 2, 4, 8, 16, 32):
            raise MsiError(f"{dev.name}: MSI vector count {nr_vectors} is not a power of 2 in 1..32")
        self.dev = dev
        self.nr_vectors = nr_vectors
        self.is_64bit = is_64bit
        self.per_vector_mask = per_vector_mask
        self.on_enable_change = on_enable_change
        self._lock = ordered_lock("pci.msi")
        self._log_max = nr_vectors.bit_length() - 1
        data = PCI_MSI_DATA_64 if is_64bit else PCI_MSI_DATA_32
        mask = PCI_MSI_MASK_64 if is_64bit else PCI_MSI_MASK_32
        length = (mask + 8) if per_vector_mask else data + 2
        off = dev.add_capability(PCI_CAP_ID_MSI, length, on_write=self._config_written, on_read=self._config_read,
                                 on_plug=self._plugged, on_unplug=self._unplugged)
        self.offset = off
        self._data_off = off + data
        self._mask_off = off + mask if per_vector_mask else None
        self._pending_off = off + mask + 4 if per_vector_mask else None
        dev.put(off + PCI_MSI_FLAGS, 2, self._log_max << 1 | (PCI_MSI_FLAGS_64BIT if is_64bit else 0)
                | (PCI_MSI_FLAGS_MASKBIT if per_vector_mask else 0))
        dev.set_wmask(off + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE)
        dev.set_wmask(off + PCI_MSI_ADDRESS_LO, 4, 0xFFFFFFFC)
        if is_64bit:
            dev.set_wmask(off + PCI_MSI_ADDRESS_HI, 4, 0xFFFFFFFF)
        dev.set_wmask(self._data_off, 2, 0xFFFF)
        if per_vector_mask:
            dev.set_wmask(self._mask_off, 4, (1 << nr_vectors) - 1)
        # State, all under _lock (the config bytes are its source, pending excepted).
        self.enabled = False
        self.count = 1                   # messages enabled (2^MME)
        self.address = 0
        self.data = 0
        self.mask = 0
        self.pending = 0
        self.vectors: list = []          # MsiVector per vector while plugged
        self._told: list = []            # the (address, data, masked) each vector was last told
        self._traced: tuple = ()
        dev.state_parts.append(self)

    # ------------------------------------------------------------ snapshot (the registers are config space)
    def save(self) -> dict:
        with self._lock:
            return {"pending": self.pending}

    def restore(self, state: dict) -> None:
        with self._lock:
            self.pending = state["pending"]

    def rebuilt(self) -> None:
        """Config lock held: enable, message and masks from the restored config space, told
        to the irqchip (a pending message on an unmasked vector is sent)."""
        self._config_written(0, 0)

    # ------------------------------------------------------------ messages
    def message(self, k: int) -> tuple[int, int]:
        """(address, data) of vector ``k`` with the current programming.  A vector beyond
        the enabled count has no message at all (§6.8.1.5: the function may only send
        the 2^MME enabled ones): (0, 0), so that the irqchip and its diverter never take
        it for a copy of vector 0's (e.g. a Xen PIRQ whose bind must unmask vector 0)."""
        n = self.count
        if k >= n:
            return 0, 0
        return self.address, ((self.data & ~(n - 1)) | k) & 0xFFFF

    def vector_masked(self, k: int) -> bool:
        return not self.enabled or k >= self.count or bool(self.mask >> k & 1)

    def vector(self, k: int):
        """The MsiVector of vector ``k`` (None when unplugged or out of range)."""
        with self._lock:
            return self.vectors[k] if 0 <= k < len(self.vectors) else None

    def fire(self, k: int) -> str:
        """The device's event for vector ``k``: SENT, PENDING (masked) or DROPPED
        (disabled, beyond the enabled count, bad index or unplugged)."""
        with self._lock:
            if not 0 <= k < len(self.vectors) or not self.enabled or k >= self.count:
                result = DROPPED
            elif self.mask >> k & 1:
                self.pending |= 1 << k
                result = PENDING
            else:
                self.vectors[k].fire()
                result = SENT
            if TP_MSI_FIRE.enabled:
                TP_MSI_FIRE.emit(bdf=self.dev.bdf, vector=k, result=result)
        return result

    def unmask_vector(self, k: int) -> None:
        """Clear vector ``k``'s mask bit (Xen: binding the PIRQ unmasks it); a pending
        message is sent.  Call with no lock held."""
        if not 0 <= k < self.nr_vectors or not self.per_vector_mask:
            return
        with self.dev.config_lock():
            with self._lock:
                if self.mask >> k & 1:
                    self.mask &= ~(1 << k)
                    self.dev.put(self._mask_off, 4, self.mask)
                    self._sync_locked()

    # ------------------------------------------------------------ config space hooks (config lock held)
    def _config_written(self, offset: int, size: int) -> None:
        dev, off = self.dev, self.offset
        with self._lock:
            ctrl = dev.get(off + PCI_MSI_FLAGS, 2)
            mme = (ctrl & PCI_MSI_FLAGS_QSIZE) >> 4
            if mme > self._log_max:      # more than capable: undefined; clamp (QEMU msi_write_config)
                mme = self._log_max
                dev.put(off + PCI_MSI_FLAGS, 2, (ctrl & ~PCI_MSI_FLAGS_QSIZE) | mme << 4)
            was = self.enabled
            self.enabled = bool(ctrl & PCI_MSI_FLAGS_ENABLE)
            self.count = 1 << mme
            self.address = dev.get(off + PCI_MSI_ADDRESS_LO, 4)
            if self.is_64bit:
                self.address |= dev.get(off + PCI_MSI_ADDRESS_HI, 4) << 32
            self.data = dev.get(self._data_off, 2)
            self.mask = dev.get(self._mask_off, 4) if self.per_vector_mask else 0
            state = (self.enabled, self.count, self.address, self.data, self.mask)
            if TP_MSI_CONFIG.enabled and state != self._traced:
                TP_MSI_CONFIG.emit(bdf=dev.bdf, enable=int(self.enabled), count=self.count, addr=self.address,
                                   data=self.data, mask=self.mask, pending=self.pending)
            self._traced = state
            self._sync_locked()
        if was != self.enabled and self.on_enable_change is not None:
            self.on_enable_change()

    def _config_read(self, offset: int, size: int) -> None:
        if self._pending_off is not None:
            with self._lock:
                self.dev.put(self._pending_off, 4, self.pending)

    def _sync_locked(self) -> None:
        """Tell the irqchip about every vector whose message or mask changed, and send
        what was pending on a vector that is now unmasked."""
        for k, vec in enumerate(self.vectors):
            masked = self.vector_masked(k)
            told = (*self.message(k), masked)
            if told != self._told[k]:
                self._told[k] = told
                vec.update(*told)
            if not masked and self.pending >> k & 1:
                self.pending &= ~(1 << k)
                vec.fire()
                if TP_MSI_FIRE.enabled:
                    TP_MSI_FIRE.emit(bdf=self.dev.bdf, vector=k, result="sent-on-unmask")

    def _plugged(self) -> None:
        chip = self.dev.bus.vm.irqchip
        with self._lock:
            self.vectors = [chip.msi_vector(self.dev.bdf, k, "msi", unmask=lambda k=k: self.unmask_vector(k))
                            for k in range(self.nr_vectors)]
            self._told = [None] * self.nr_vectors
            self._sync_locked()

    def _unplugged(self) -> None:
        with self._lock:
            vectors, self.vectors, self._told = self.vectors, [], []
            self.pending = 0
            for vec in vectors:
                vec.remove()


class MsixCapability:
    """The MSI-X capability of ``dev``: ``nr_entries`` table entries at ``table_offset``
    in BAR ``table_bar`` and the PBA at ``pba_offset`` in BAR ``pba_bar``.  Add the BARs
    first; their handlers call ``mmio_read(bar, offset, size)`` /
    ``mmio_write(bar, offset, size, value)`` (None / False: not the table or PBA)."""

    def __init__(self, dev: PciDevice, nr_entries: int, table_bar: int, table_offset: int, pba_bar: int,
                 pba_offset: int, on_enable_change: Callable[[], None] | None = None):
        if not 1 <= nr_entries <= MSIX_MAX_ENTRIES:
            raise MsiError(f"{dev.name}: MSI-X table size {nr_entries} is not 1..{MSIX_MAX_ENTRIES}")
        self.table_size = nr_entries * PCI_MSIX_ENTRY_SIZE
        self.pba_size = (nr_entries + 63) // 64 * 8
        for what, bar, at, size in (("table", table_bar, table_offset, self.table_size),
                                    ("PBA", pba_bar, pba_offset, self.pba_size)):
            b = dev.bars[bar] if 0 <= bar <= 5 else None
            if b is None or b.is_io or at % 8 or at + size > b.size:
                raise MsiError(f"{dev.name}: MSI-X {what} at BAR{bar}+{at:#x} does not fit a memory BAR")
        if table_bar == pba_bar and table_offset < pba_offset + self.pba_size and \
                pba_offset < table_offset + self.table_size:
            raise MsiError(f"{dev.name}: MSI-X table and PBA overlap")
        self.dev = dev
        self.nr_entries = nr_entries
        self.table_bar, self.table_offset = table_bar, table_offset
        self.pba_bar, self.pba_offset = pba_bar, pba_offset
        self.on_enable_change = on_enable_change
        self._lock = ordered_lock("pci.msi")
        off = dev.add_capability(PCI_CAP_ID_MSIX, PCI_CAP_MSIX_SIZEOF, on_write=self._config_written,
                                 on_plug=self._plugged, on_unplug=self._unplugged)
        self.offset = off
        dev.put(off + PCI_MSIX_FLAGS, 2, nr_entries - 1)
        dev.set_wmask(off + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL)
        dev.put(off + PCI_MSIX_TABLE, 4, table_offset | table_bar)
        dev.put(off + PCI_MSIX_PBA, 4, pba_offset | pba_bar)
        # State, under _lock.
        self.table = bytearray(self.table_size)
        for e in range(nr_entries):               # §6.8.2.9: entries reset masked
            self.table[e * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL] = PCI_MSIX_ENTRY_CTRL_MASKBIT
        self.pba = 0
        self.enabled = False
        self.function_masked = False
        self.vectors: list = []
        self._told: list = []
        dev.state_parts.append(self)

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Primary: the table (messages, per-entry masks) and the PBA; enable and function
        mask are config space."""
        with self._lock:
            return {"table": bytes(self.table), "pba": self.pba}

    def restore(self, state: dict) -> None:
        table, pba = state["table"], state["pba"]
        # A bytearray slice assignment would resize the table: check what a driver can't change.
        if not isinstance(table, bytes) or len(table) != self.table_size:
            raise ValueError(f"{self.dev.name}: the saved MSI-X table is not {self.table_size} bytes")
        if type(pba) is not int or not 0 <= pba < 1 << self.nr_entries:
            raise ValueError(f"{self.dev.name}: the saved MSI-X PBA {pba!r} has bits beyond its {self.nr_entries} entries")
        with self._lock:
            self.table[:] = table
            self.pba = pba

    def rebuilt(self) -> None:
        """Config lock held: enable/function mask from config space, every entry told to the
        irqchip."""
        self._config_written(0, 0)
        with self._lock:
            self._sync_all_locked()

    # ------------------------------------------------------------ entries
    def entry(self, e: int) -> tuple[int, int, bool]:
        """(address, data, entry mask bit) of entry ``e``."""
        base = e * PCI_MSIX_ENTRY_SIZE
        t = self.table
        address = int.from_bytes(t[base:base + 8], "little")
        data = int.from_bytes(t[base + PCI_MSIX_ENTRY_DATA:base + PCI_MSIX_ENTRY_DATA + 4], "little")
        return address, data, bool(t[base + PCI_MSIX_ENTRY_VECTOR_CTRL] & PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def entry_masked(self, e: int) -> bool:
        return not self.enabled or self.function_masked or self.entry(e)[2]

    def vector(self, e: int):
        with self._lock:
            return self.vectors[e] if 0 <= e < len(self.vectors) else None

    def fire(self, e: int) -> str:
        """The device's event for entry ``e``: SENT, PENDING (PBA bit set: entry or
        function masked, or MSI-X disabled) or DROPPED (bad index, unplugged)."""
        with self._lock:
            if not 0 <= e < len(self.vectors):
                result = DROPPED
            elif self.entry_masked(e):
                self.pba |= 1 << e
                result = PENDING
            else:
                self.vectors[e].fire()
                result = SENT
            if TP_MSIX_FIRE.enabled:
                TP_MSIX_FIRE.emit(bdf=self.dev.bdf, entry=e, result=result)
        return result

    def unmask_entry(self, e: int) -> None:
        """Clear entry ``e``'s mask bit (Xen: binding the PIRQ unmasks it); a pending
        message is sent if the function is enabled and not masked.  No lock held."""
        if not 0 <= e < self.nr_entries:
            return
        with self._lock:
            self.table[e * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL] &= ~PCI_MSIX_ENTRY_CTRL_MASKBIT
            self._entry_changed_locked(e)

    # ------------------------------------------------------------ the table and PBA (MMIO, from the BAR)
    def mmio_read(self, bar: int, offset: int, size: int) -> int | None:
        if bar == self.table_bar and self.table_offset <= offset < self.table_offset + self.table_size:
            o = offset - self.table_offset
            if not _aligned(o, size, self.table_size):
                return 0
            with self._lock:
                return int.from_bytes(self.table[o:o + size], "little")
        if bar == self.pba_bar and self.pba_offset <= offset < self.pba_offset + self.pba_size:
            o = offset - self.pba_offset
            if not _aligned(o, size, self.pba_size):
                return 0
            with self._lock:
                return (self.pba >> (8 * o)) & ((1 << (8 * size)) - 1)
        return None

    def mmio_write(self, bar: int, offset: int, size: int, value: int) -> bool:
        if bar == self.table_bar and self.table_offset <= offset < self.table_offset + self.table_size:
            o = offset - self.table_offset
            if _aligned(o, size, self.table_size):
                self._table_write(o, size, value)
            return True
        # The PBA is read-only (§6.8.2.10: software should never write it): ignored.
        return bar == self.pba_bar and self.pba_offset <= offset < self.pba_offset + self.pba_size

    def _table_write(self, o: int, size: int, value: int) -> None:
        e = o // PCI_MSIX_ENTRY_SIZE             # aligned 4/8-byte accesses stay in one entry
        with self._lock:
            t = self.table
            for i in range(size):
                wm = _ENTRY_WMASK[(o + i) % PCI_MSIX_ENTRY_SIZE]
                t[o + i] = (t[o + i] & ~wm) | ((value >> (8 * i)) & wm)
            # Address/data written while the entry is unmasked: undefined (§6.8.2.9);
            # Linux masks first.  We just send the new message from now on.
            self._entry_changed_locked(e)

    def _entry_changed_locked(self, e: int) -> None:
        address, data, entry_mask = self.entry(e)
        masked = not self.enabled or self.function_masked or entry_mask
        told = (address, data, masked)
        if e < len(self._told) and told != self._told[e]:
            self._told[e] = told
            self.vectors[e].update(address, data, masked)
        if TP_MSIX_ENTRY.enabled:
            TP_MSIX_ENTRY.emit(bdf=self.dev.bdf, entry=e, addr=address, data=data, masked=int(entry_mask))
        self._send_pending_locked(e, masked)

    def _send_pending_locked(self, e: int, masked: bool) -> None:
        if not masked and self.pba >> e & 1 and e < len(self.vectors):
            self.pba &= ~(1 << e)
            self.vectors[e].fire()
            if TP_MSIX_FIRE.enabled:
                TP_MSIX_FIRE.emit(bdf=self.dev.bdf, entry=e, result="sent-on-unmask")

    def _sync_all_locked(self) -> None:
        for e in range(len(self.vectors)):
            address, data, _ = self.entry(e)
            masked = self.entry_masked(e)
            told = (address, data, masked)
            if told != self._told[e]:
                self._told[e] = told
                self.vectors[e].update(*told)
            self._send_pending_locked(e, masked)

    # ------------------------------------------------------------ config space hooks (config lock held)
    def _config_written(self, offset: int, size: int) -> None:
        ctrl = self.dev.get(self.offset + PCI_MSIX_FLAGS, 2)
        with self._lock:
            was = self.enabled
            enabled, fmask = bool(ctrl & PCI_MSIX_FLAGS_ENABLE), bool(ctrl & PCI_MSIX_FLAGS_MASKALL)
            if (enabled, fmask) != (self.enabled, self.function_masked):
                self.enabled, self.function_masked = enabled, fmask
                if TP_MSIX_CTRL.enabled:
                    TP_MSIX_CTRL.emit(bdf=self.dev.bdf, enable=int(enabled), function_mask=int(fmask))
                self._sync_all_locked()
        if was != enabled and self.on_enable_change is not None:
            self.on_enable_change()

    def _plugged(self) -> None:
        chip = self.dev.bus.vm.irqchip
        with self._lock:
            self.vectors = [chip.msi_vector(self.dev.bdf, e, "msix", unmask=lambda e=e: self.unmask_entry(e))
                            for e in range(self.nr_entries)]
            self._told = [None] * self.nr_entries
            self._sync_all_locked()

    def _unplugged(self) -> None:
        with self._lock:
            vectors, self.vectors, self._told = self.vectors, [], []
            self.pba = 0
            for vec in vectors:
                vec.remove()


__all__ = ["MsiCapability", "MsixCapability", "MsiError", "SENT", "PENDING", "DROPPED",
           "PCI_CAP_ID_MSI", "PCI_CAP_ID_MSIX"]
