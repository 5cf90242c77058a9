"""PCI: one conventional bus (bus 0) behind configuration mechanism #1.

Config access (PCI Local Bus spec 3.0, §3.2.2.3.2; PCI-to-PCI arch. §3.2.2):

    0xCF8-0xCFB  CONFIG_ADDRESS (32-bit; only dword writes latch, as on PIIX):
                 bit 31 enable, 23:16 bus, 15:11 device, 10:8 function, 7:2 reg
    0xCFC-0xCFF  CONFIG_DATA: 1/2/4-byte accesses at any offset within the
                 dword reach register (reg & 0xFC) + (port - 0xCFC)

Only bus 0 exists; a disabled address, another bus, or an empty slot/function
reads all-ones and ignores writes (master abort).  00:00.0 is an i440FX-like
host bridge (8086:1237, class 0x0600) so that Linux's type-1 sanity check and
probing are happy.

Data model (what MSI/MSI-X, virtio and passthrough-like devices extend):

* :class:`PciDevice` — a 256-byte type-0 header plus two masks in the style of
  QEMU's ``PCIDevice``: ``wmask`` (bits the guest may write) and ``w1cmask``
  (write-one-to-clear bits).  The generic ``write_config`` applies them, then
  reacts to the command register (decode enables, INTx disable), the BARs
  (remap) and registered capabilities (``add_capability(..., on_write=)``).
  Status bit 3 (interrupt status) is computed on read from the INTx state.
* BARs (:class:`PciBar`): I/O, 32-bit or 64-bit memory, prefetchable flag.
  Sizing works through ``wmask``: writing all-ones reads back ``~(size-1)``
  plus the read-only type bits.  A BAR is on ``vm.pio_bus``/``vm.mmio_bus``
  exactly while its decode bit (command.IO / command.MEMORY) is set and its
  address is usable (QEMU's ``pci_bar_address`` rules: 0 and ranges reaching
  the top of the 32/64-bit space are "unmapped", which keeps sizing from
  mapping anything for 32-bit BARs).  A BAR whose range is taken — another
  device, another BAR, guest RAM, the LAPIC/I/OAPIC or KVM's private pages —
  is left unmapped and traced (``pci.bar.map result=refused: ...``); the VMM
  never fails because of a guest's BAR choice.  It is retried on the
  device's next BAR or command register write.
* Devices are keyed by devfn (slot << 3 | function); plugging a function > 0
  sets the multi-function bit of function 0's header type.

Firmware duties done at plug time (we have no BIOS): BARs get naturally
aligned addresses — I/O from 0xC000 up, memory (32- and 64-bit BARs alike)
from ``PCI_MMIO_BASE`` (0xC0000000) up to the I/O APIC at 0xFEC00000 — and
decode is enabled for the kinds of BARs present; the INTx GSI is written into
the interrupt-line register.

INTx routing.  An I/O-APIC-only machine with the classic PCI swizzle: pin P
(1 = INTA .. 4 = INTD) of slot S drives

    GSI = 16 + ((S + P - 1) mod 4)         (``PciBus.intx_gsi``)

i.e. I/O APIC pins 16-19, which no ISA device uses.  That is the APIC
interrupt model, the reset state.  The same swizzle names the PCI interrupt
link (0 = LNKA .. 3 = LNKD, ``PciBus.intx_link``): in the PIC model (ACPI
``\\_PIC(0)``, written to ``PciIrqRouter``'s port 0x610 by the DSDT) link n
drives the ISA IRQ its route register holds (PIIX PIRQRC: 0x611 + n, bit 7
disabled, bits 3:0 the IRQ; the DSDT's LNKx._SRS writes it), which reaches
the 8259s (and the I/O APIC's pin < 16), and nothing while disabled.  A model
switch or a reprogrammed link moves an asserted pin to its new target at once;
the interrupt-line registers follow (what firmware writes).  Sharing is
wired-OR: the bus keeps the set of asserted (device, pin) per link and drives
each target GSI high while any link routed to it has a non-empty set.  Levels given to ``IrqChip.set_gsi`` mean
"asserted": PCI INTx# is electrically active-low and level-triggered, and a
guest (or ACPI _PRT / MP table) programs the I/O APIC pin level-triggered
active-low, but neither KVM's in-kernel I/O APIC (arch/x86/kvm/ioapic.c
ignores the polarity bit) nor devices/ioapic.py inverts on polarity, so the
logical level is what we pass.

Locks (ARCHITECTURE.md, "Lock order"): ``PciBus._config_lock`` serialises
config cycles and BAR (re)mapping; it is taken before device locks, because a
config write may call a device's hooks.  ``PciBus._intx_lock`` sits below the
device locks (a device raises INTx with its own lock held) and above the
IrqChip.  Config writes are the one device path that edits the buses' maps
(``register``/``unregister``); they never dispatch through a bus.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Callable

from devices.ioapic import IOAPIC_SIZE
from devices.trace_events import (
    TP_PCI_CONFIG_READ as TP_CFG_READ,
    TP_PCI_CONFIG_WRITE as TP_CFG_WRITE,
    TP_PCI_BAR_MAP as TP_BAR_MAP,
    TP_PCI_BAR_UNMAP as TP_BAR_UNMAP,
    TP_PCI_INTX as TP_INTX,
    TP_PCI_ROUTE as TP_ROUTE,
)
from vmm.bus import BusError, Device
from vmm.boot.acpi import PCI_IRQ_ROUTER_BASE, PCI_IRQ_ROUTER_SIZE
from vmm.memory import IOAPIC_BASE, LAPIC_BASE, PCI_MMIO_BASE
from vmm.vm import IDENTITY_MAP_ADDR, Vm
from vmm.locks import ordered_lock, ordered_rlock

# ---------------------------------------------------------------- ports
CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC
CONFIG_ENABLE = 1 << 31

NR_SLOTS = 32
NR_FUNCTIONS = 8

# ---------------------------------------------------------------- header (type 0)
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CLASS_DEVICE = 0x0A
PCI_CACHE_LINE_SIZE = 0x0C
PCI_LATENCY_TIMER = 0x0D
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D
PCI_CONFIG_SIZE = 256
PCI_CAP_START = 0x40               # first byte after the standard header

PCI_COMMAND_IO = 0x1
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_COMMAND_PARITY = 0x40
PCI_COMMAND_SERR = 0x100
PCI_COMMAND_INTX_DISABLE = 0x400
COMMAND_WMASK = (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY
                 | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)

PCI_STATUS_INTERRUPT = 0x8
PCI_STATUS_CAP_LIST = 0x10
PCI_STATUS_W1C = 0xF900            # parity/abort/SERR error bits

PCI_HEADER_TYPE_MULTI_FUNCTION = 0x80

PCI_BASE_ADDRESS_SPACE_IO = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8

BAR_IO = "io"
BAR_MEM32 = "mem32"
BAR_MEM64 = "mem64"

INTA, INTB, INTC, INTD = 1, 2, 3, 4
PIN_NAMES = {0: "none", INTA: "INTA", INTB: "INTB", INTC: "INTC", INTD: "INTD"}
INTX_GSI_BASE = 16                 # I/O APIC pins 16-19
NR_LINKS = 4                       # PCI interrupt links LNKA-LNKD (PIC mode)
PIRQ_DISABLED = 0x80               # PIIX PIRQRC: bit 7 "routing disabled", bits 3:0 the IRQ
PIRQ_IRQ_MASK = 0x0F
PIRQ_VALID_IRQS = frozenset((3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15))

# ---------------------------------------------------------------- firmware windows
PCI_IO_BASE = 0xC000
PCI_IO_END = 0x10000
PCI_MMIO_END = IOAPIC_BASE         # 0xC0000000 .. 0xFEC00000
PIO_LIMIT = 1 << 16

# Guest-physical ranges a BAR must not claim although our MmioBus doesn't know
# them: KVM handles them in the kernel (accesses would never reach the BAR).
KERNEL_MMIO = ((IOAPIC_BASE, IOAPIC_SIZE, "I/O APIC"),
               (LAPIC_BASE, 0x10_0000, "local APIC"),
               (IDENTITY_MAP_ADDR, 0x4000, "KVM identity map/TSS"))
# Ports of KVM's in-kernel PIC, ELCR and PIT (KernelIrqChip only).
KERNEL_PIO = ((0x20, 2, "PIC"), (0xA0, 2, "PIC"), (0x4D0, 2, "ELCR"), (0x40, 4, "PIT"),
              (0x61, 1, "PIT speaker"))


class PciError(RuntimeError):
    """A machine-assembly mistake (slot taken, windows exhausted): VMM-side, never guest-caused."""


def bdf_str(bus: int, devfn: int) -> str:
    return f"{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


class FnRegion:
    """Adapts a (read, write) pair of callables to the bus Device protocol."""

    def __init__(self, read: Callable[[int, int], int], write: Callable[[int, int, int], None]):
        self.read = read
        self.write = write


@dataclass
class PciBar:
    """A base address register of a PCI function and the region behind it."""
    index: int
    size: int
    kind: str                       # BAR_IO, BAR_MEM32, BAR_MEM64
    prefetchable: bool
    region: Device                  # read(offset, size) / write(offset, size, value), offset from the BAR base
    name: str
    address: int | None = None      # where it is mapped on the bus now, or None
    wanted: int | None = None       # the address the config space asks for (None: unmapped)
    refused: str | None = None      # why ``wanted`` could not be mapped

    @property
    def is_io(self) -> bool:
        return self.kind == BAR_IO

    @property
    def flags(self) -> int:
        if self.kind == BAR_IO:
            return PCI_BASE_ADDRESS_SPACE_IO
        f = PCI_BASE_ADDRESS_MEM_TYPE_64 if self.kind == BAR_MEM64 else 0
        return f | (PCI_BASE_ADDRESS_MEM_PREFETCH if self.prefetchable else 0)


@dataclass
class _Capability:
    """A capability in a function's config space, with the hooks of its registers."""
    cap_id: int
    offset: int
    length: int
    on_write: Callable[[int, int], None] | None = field(default=None)
    # MSI/MSI-X (devices/msi.py): refresh device-owned bits (pending) before a read,
    # make the interrupt vectors once the function has a bdf, remove them on unplug.
    on_read: Callable[[int, int], None] | None = field(default=None)
    on_plug: Callable[[], None] | None = field(default=None)
    on_unplug: Callable[[], None] | None = field(default=None)


class PciDevice:
    """A PCI function with a type-0 header.  Subclass it; see the module docstring.

    Subclasses set IDs through the constructor, add BARs with ``add_bar`` and
    capabilities with ``add_capability`` before plugging, and raise INTx with
    ``set_intx``.  ``read_config``/``write_config`` may be overridden (call
    super) for device-specific registers; they run under the bus's config lock.
    """

    def __init__(self, name: str, *, vendor_id: int, device_id: int, class_code: int, revision: int = 0,
                 subsystem_vendor_id: int = 0, subsystem_id: int = 0, interrupt_pin: int = 0):
        self.name = name
        self.config = bytearray(PCI_CONFIG_SIZE)
        self.wmask = bytearray(PCI_CONFIG_SIZE)
        self.w1cmask = bytearray(PCI_CONFIG_SIZE)
        self.bars: list[PciBar | None] = [None] * 6
        self.capabilities: list[_Capability] = []
        self._next_cap = PCI_CAP_START
        self.bus: PciBus | None = None
        self.devfn: int | None = None
        self.intx_level = False        # the device's own INTx output (before INTx-disable)
        # Parts with state of their own that snapshots save with the function (the MSI/MSI-X
        # capability models): each has save() -> dict, restore(state), rebuilt().
        self.state_parts: list = []
        self._set16(PCI_VENDOR_ID, vendor_id)
        self._set16(PCI_DEVICE_ID, device_id)
        self.config[PCI_REVISION_ID] = revision & 0xFF
        self.config[PCI_CLASS_PROG] = class_code & 0xFF
        self._set16(PCI_CLASS_DEVICE, class_code >> 8)
        self._set16(PCI_SUBSYSTEM_VENDOR_ID, subsystem_vendor_id)
        self._set16(PCI_SUBSYSTEM_ID, subsystem_id)
        if not 0 <= interrupt_pin <= 4:
            raise PciError(f"{name}: interrupt pin {interrupt_pin} is not 0..4")
        self.config[PCI_INTERRUPT_PIN] = interrupt_pin
        self.set_wmask(PCI_COMMAND, 2, COMMAND_WMASK)
        self.w1cmask[PCI_STATUS:PCI_STATUS + 2] = PCI_STATUS_W1C.to_bytes(2, "little")
        self.set_wmask(PCI_CACHE_LINE_SIZE, 1, 0xFF)
        self.set_wmask(PCI_LATENCY_TIMER, 1, 0xFF)
        self.set_wmask(PCI_INTERRUPT_LINE, 1, 0xFF)

    # ------------------------------------------------------------ helpers
    def _set16(self, off: int, v: int) -> None:
        self.config[off:off + 2] = (v & 0xFFFF).to_bytes(2, "little")

    def get(self, off: int, size: int) -> int:
        return int.from_bytes(self.config[off:off + size], "little")

    def put(self, off: int, size: int, value: int) -> None:
        """Set config bytes directly (device side: no masks, no side effects)."""
        self.config[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def set_wmask(self, off: int, size: int, mask: int) -> None:
        self.wmask[off:off + size] = (mask & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    @property
    def vendor_id(self) -> int:
        return self.get(PCI_VENDOR_ID, 2)

    @property
    def device_id(self) -> int:
        return self.get(PCI_DEVICE_ID, 2)

    @property
    def class_code(self) -> int:
        return self.get(PCI_CLASS_PROG, 3)

    @property
    def interrupt_pin(self) -> int:
        return self.config[PCI_INTERRUPT_PIN]

    @property
    def command(self) -> int:
        return self.get(PCI_COMMAND, 2)

    @property
    def bus_master(self) -> bool:
        """Devices must check this before DMA or MSI writes."""
        return bool(self.command & PCI_COMMAND_MASTER)

    @property
    def slot(self) -> int | None:
        return None if self.devfn is None else self.devfn >> 3

    @property
    def bdf(self) -> str:
        return "--:--.-" if self.devfn is None else bdf_str(0, self.devfn)

    # ------------------------------------------------------------ setup (before plugging)
    def add_bar(self, index: int, size: int, region: Device | tuple, kind: str = BAR_MEM32,
                prefetchable: bool = False) -> PciBar:
        if self.bus is not None:
            raise PciError(f"{self.name}: add BARs before plugging")
        if kind not in (BAR_IO, BAR_MEM32, BAR_MEM64):
            raise PciError(f"{self.name}: unknown BAR kind {kind!r}")
        last = 4 if kind == BAR_MEM64 else 5
        if not 0 <= index <= last or self.bars[index] is not None or \
                (kind == BAR_MEM64 and self.bars[index + 1] is not None) or \
                (index > 0 and self.bars[index - 1] is not None and self.bars[index - 1].kind == BAR_MEM64):
            raise PciError(f"{self.name}: BAR{index} is not free for a {kind} BAR")
        minimum = 4 if kind == BAR_IO else 16
        if size < minimum or size & (size - 1) or (kind == BAR_IO and size > 256) or \
                (kind == BAR_MEM32 and size > 1 << 31):
            raise PciError(f"{self.name}: bad BAR{index} size {size:#x} for {kind}")
        if isinstance(region, tuple):
            region = FnRegion(*region)
        bar = PciBar(index, size, kind, prefetchable and kind != BAR_IO, region, f"{self.name}.bar{index}")
        self.bars[index] = bar
        off = PCI_BASE_ADDRESS_0 + 4 * index
        mask = ~(size - 1)
        low_ro = 0x3 if kind == BAR_IO else 0xF
        self.put(off, 4, bar.flags)
        self.set_wmask(off, 4, mask & ~low_ro)
        if kind == BAR_MEM64:
            self.put(off + 4, 4, 0)
            self.set_wmask(off + 4, 4, (mask >> 32) & 0xFFFFFFFF)
        return bar

    def add_capability(self, cap_id: int, length: int, on_write: Callable[[int, int], None] | None = None,
                       offset: int | None = None, *, on_read: Callable[[int, int], None] | None = None,
                       on_plug: Callable[[], None] | None = None,
                       on_unplug: Callable[[], None] | None = None) -> int:
        """Reserve ``length`` bytes for a capability, link it into the list
        (status bit 4, pointer at 0x34) and return its offset.  The caller fills
        the body with ``put`` and opens writable bits with ``set_wmask``;
        ``on_write(offset, size)`` runs after any config write that touches it,
        ``on_read(offset, size)`` before any read that does (to refresh bits the
        device changes on its own), ``on_plug()`` once the function is on a bus
        (it has a bdf and ``bus.vm``) and ``on_unplug()`` when it leaves.  All run
        under the bus's config lock."""
        if length < 2:
            raise PciError(f"{self.name}: capability {cap_id:#x} too short")
        off = _align_up(self._next_cap if offset is None else offset, 4)
        if off < PCI_CAP_START or off + length > PCI_CONFIG_SIZE or \
                any(c.offset < off + length and off < c.offset + c.length for c in self.capabilities):
            raise PciError(f"{self.name}: no room for capability {cap_id:#x} at {off:#x}+{length}")
        self.config[off] = cap_id & 0xFF
        self.config[off + 1] = self.config[PCI_CAPABILITY_LIST]   # push on the front of the list
        self.config[PCI_CAPABILITY_LIST] = off
        self.config[PCI_STATUS] |= PCI_STATUS_CAP_LIST
        self.capabilities.append(_Capability(cap_id, off, length, on_write, on_read, on_plug, on_unplug))
        self._next_cap = max(self._next_cap, off + length)
        return off

    def find_capability(self, cap_id: int) -> int | None:
        """Walk the list as a guest would; offset or None."""
        ptr, seen = self.config[PCI_CAPABILITY_LIST] & 0xFC, 0
        while ptr and seen < 48:
            if self.config[ptr] == cap_id:
                return ptr
            ptr, seen = self.config[ptr + 1] & 0xFC, seen + 1
        return None

    # ------------------------------------------------------------ config cycles (bus config lock held)
    def read_config(self, offset: int, size: int) -> int:
        for cap in self.capabilities:
            if cap.on_read is not None and offset < cap.offset + cap.length and offset + size > cap.offset:
                cap.on_read(offset, size)
        value = int.from_bytes(self.config[offset:offset + size], "little")
        if offset <= PCI_STATUS < offset + size and self.intx_level:
            value |= PCI_STATUS_INTERRUPT << (8 * (PCI_STATUS - offset))
        return value

    def write_config(self, offset: int, size: int, value: int) -> None:
        cfg, wm, w1c = self.config, self.wmask, self.w1cmask
        for i in range(size):
            a = offset + i
            b = (value >> (8 * i)) & 0xFF
            cfg[a] = ((cfg[a] & ~wm[a]) | (b & wm[a])) & ~(b & w1c[a]) & 0xFF
        end = offset + size
        if offset < PCI_COMMAND + 2 and end > PCI_COMMAND:
            self.command_written()
        elif offset < PCI_BASE_ADDRESS_0 + 24 and end > PCI_BASE_ADDRESS_0:
            if self.bus is not None:
                self.bus._update_mappings(self)
        for cap in self.capabilities:
            if cap.on_write is not None and offset < cap.offset + cap.length and end > cap.offset:
                cap.on_write(offset, size)

    def command_written(self) -> None:
        """Decode enables and INTx-disable may have changed."""
        if self.bus is not None:
            self.bus._update_mappings(self)
            self.bus._update_intx(self)

    def config_lock(self):
        """The bus's config lock (a no-op context while unplugged), for device-side
        changes to config bytes the guest may be writing too (MSI mask bits)."""
        return self.bus._config_lock if self.bus is not None else contextlib.nullcontext()

    # ------------------------------------------------------------ snapshot (ARCHITECTURE.md "Snapshots")
    def save(self) -> dict:
        """Primary: config space (BAR addresses, command, capabilities' registers), the INTx
        output, the capability models' own state, and the device's (``save_device``)."""
        with self.config_lock():
            return {"config": bytes(self.config), "intx": self.intx_level,
                    "parts": [p.save() for p in self.state_parts], "device": self.save_device()}

    def restore(self, state: dict) -> None:
        with self.config_lock():
            if len(state["config"]) != len(self.config) or len(state["parts"]) != len(self.state_parts):
                raise ValueError(f"{self.name}: the saved function has another layout")
            self.config[:] = state["config"]
            self.intx_level = state["intx"]
            for p, s in zip(self.state_parts, state["parts"]):
                p.restore(s)
            self.restore_device(state["device"])

    def rebuilt(self) -> None:
        """Derived: the BARs' mappings on the buses (and their ioeventfds) from the BAR
        registers and decode enables; the MSI/MSI-X vectors told to the irqchip; INTx driven."""
        if self.bus is None:
            return
        with self.config_lock():
            self.bus._update_mappings(self)
            for p in self.state_parts:
                p.rebuilt()
            self.bus._update_intx(self)

    def save_device(self) -> dict | None:
        """Hook: the device model's own state beyond config space (None: it has none)."""
        return None

    def restore_device(self, state) -> None:
        """Hook: put back what ``save_device`` returned."""

    def unplugged(self) -> None:
        """Hook: the function left its bus (config lock held).  Stop device threads here."""

    def bar_mapped(self, bar: "PciBar") -> None:
        """Hook: ``bar`` now decodes at ``bar.address`` (config lock held): e.g. register
        KVM ioeventfds inside it."""

    def bar_unmapped(self, bar: "PciBar") -> None:
        """Hook: ``bar`` stops decoding at ``bar.address`` (config lock held; called before
        the address is forgotten)."""

    # ------------------------------------------------------------ INTx
    def set_intx(self, level: bool) -> None:
        """Drive this function's interrupt pin (asserted = True).  Any thread;
        may be called with the device's own lock held."""
        level = bool(level)
        self.intx_level = level
        if self.bus is not None:
            self.bus._update_intx(self)


class PciHostBridge(PciDevice):
    """00:00.0, i440FX-like (QEMU's i440FX PMC: 8086:1237 rev 2, class 0x0600)."""

    def __init__(self):
        super().__init__("pci-host", vendor_id=0x8086, device_id=0x1237, class_code=0x060000, revision=0x02)


class PciBus:
    """Bus 0, its config mechanism #1 ports, BAR mapping and INTx routing."""

    def __init__(self, vm: Vm):
        self.vm = vm
        self.devices: dict[int, PciDevice] = {}    # devfn -> function
        self.config_address = 0
        self._config_lock = ordered_rlock("pci.config")
        self._intx_lock = ordered_lock("pci.intx")
        self._asserted: dict[int, set[int]] = {}    # link 0..3 -> devfns asserting a pin on it
        self._lines: dict = {}                       # gsi -> the bus's IrqLine to it
        self._driven: dict[int, bool] = {}           # gsi -> True while the bus drives it high
        # The interrupt model (PciIrqRouter; ACPI \\_PIC) and the links' routes.  APIC until
        # told otherwise: Linux evaluates \\_PIC before it enables any PCI interrupt (with 0
        # under "noapic"), and guests without ACPI (or our kit guests) use GSIs 16-19.
        self.picf = 1
        self.pic_mode = False
        self.pirq = [PIRQ_DISABLED] * NR_LINKS
        self._io_next = PCI_IO_BASE
        self._mmio_next = PCI_MMIO_BASE

    # ------------------------------------------------------------ INTx routing
    @staticmethod
    def intx_gsi(slot: int, pin: int) -> int:
        """The GSI of INTx pin ``pin`` (1 = INTA .. 4 = INTD) of ``slot`` on this
        I/O-APIC-only machine: the standard swizzle onto I/O APIC pins 16-19."""
        if not 1 <= pin <= 4:
            raise ValueError(f"INTx pin {pin} is not 1..4")
        return INTX_GSI_BASE + (slot + pin - 1) % 4

    def routing_table(self) -> list[tuple[int, int, int]]:
        """(slot, pin, gsi) for every slot and pin: what an ACPI _PRT or MP table would list."""
        return [(s, p, self.intx_gsi(s, p)) for s in range(NR_SLOTS) for p in (INTA, INTB, INTC, INTD)]

    @staticmethod
    def intx_link(slot: int, pin: int) -> int:
        """The interrupt link (0 = LNKA .. 3 = LNKD) that INTx pin ``pin`` of ``slot`` is
        wired to: the same swizzle, so link n is what APIC mode routes to GSI 16 + n."""
        return PciBus.intx_gsi(slot, pin) - INTX_GSI_BASE

    def _link_target(self, link: int) -> int | None:
        """Intx lock held: the GSI link ``link`` drives in the current interrupt model."""
        if not self.pic_mode:
            return INTX_GSI_BASE + link
        value = self.pirq[link]
        irq = value & PIRQ_IRQ_MASK
        if value & PIRQ_DISABLED or irq not in PIRQ_VALID_IRQS:
            return None
        return irq

    def _drive_links(self) -> None:
        """Intx lock held: drive every GSI a link targets with the OR of its links' pins,
        and lower the ones no link targets any more (a model switch or a reprogrammed link)."""
        want: dict[int, bool] = {}
        for link in range(NR_LINKS):
            gsi = self._link_target(link)
            if gsi is not None:
                want[gsi] = want.get(gsi, False) or bool(self._asserted.get(link))
        for gsi in sorted(set(want) | set(self._driven)):
            level = want.get(gsi, False)
            if self._driven.get(gsi, False) != level:
                line = self._lines.get(gsi)
                if line is None:
                    line = self._lines[gsi] = self.vm.irqchip.line(gsi, "pci-intx")
                line.set(level)
                if level:
                    self._driven[gsi] = True
                else:
                    self._driven.pop(gsi, None)

    def _update_intx(self, dev: PciDevice) -> None:
        pin = dev.interrupt_pin
        if not pin or dev.devfn is None:
            return
        link = self.intx_link(dev.devfn >> 3, pin)
        with self._intx_lock:
            asserted = dev.intx_level and not dev.command & PCI_COMMAND_INTX_DISABLE and dev.bus is self
            members = self._asserted.setdefault(link, set())
            was = dev.devfn in members
            if asserted:
                members.add(dev.devfn)
            else:
                members.discard(dev.devfn)
            if TP_INTX.enabled and was != asserted:
                gsi = self._link_target(link)
                TP_INTX.emit(bdf=dev.bdf, pin=PIN_NAMES[pin], gsi=gsi if gsi is not None else "none",
                             level=int(asserted), line=int(bool(members)))
            self._drive_links()

    def save(self) -> dict:
        """Primary: CONFIG_ADDRESS, which slots are taken (the functions save themselves),
        the interrupt model (\\_PIC) and the links' route registers."""
        with self._config_lock:
            with self._intx_lock:
                return {"config_address": self.config_address, "devfns": sorted(self.devices),
                        "picf": self.picf, "pirq": list(self.pirq)}

    def restore(self, state: dict) -> None:
        with self._config_lock:
            if sorted(self.devices) != state["devfns"]:
                raise ValueError(f"the PCI functions differ: saved {state['devfns']}, built {sorted(self.devices)}")
            self.config_address = state["config_address"]
            with self._intx_lock:
                self.picf = state["picf"]
                self.pic_mode = self.picf == 0
                self.pirq[:] = state["pirq"]

    def gsi_level(self, gsi: int) -> bool:
        """Whether the bus drives ``gsi`` high now."""
        with self._intx_lock:
            return self._driven.get(gsi, False)

    # ------------------------------------------------------------ the interrupt model and links
    def set_interrupt_model(self, value: int) -> None:
        """\\_PIC's argument (ACPI §5.8.1): 0 the 8259s, 1 the I/O APIC (2, SAPIC, counts as
        APIC).  PIC mode routes each link to its programmed ISA IRQ; APIC mode to GSI 16 + n."""
        with self._config_lock:
            with self._intx_lock:
                self.picf = value & 0xFF
                self.pic_mode = self.picf == 0
                self._drive_links()
                targets = [self._link_target(n) for n in range(NR_LINKS)]
            self._firmware_lines()
        if TP_ROUTE.enabled:
            TP_ROUTE.emit(reg="model " + ("pic" if self.pic_mode else "apic"), value=value & 0xFF, targets=targets)

    def set_link(self, link: int, value: int) -> None:
        """A link's PIIX-style PIRQ route register: bit 7 disables, bits 3:0 the ISA IRQ
        (one of 3-7, 9-12, 14, 15, as PIIX's PIRQRC; anything else routes nowhere)."""
        with self._config_lock:
            with self._intx_lock:
                self.pirq[link] = value & (PIRQ_DISABLED | PIRQ_IRQ_MASK)
                self._drive_links()
                targets = [self._link_target(n) for n in range(NR_LINKS)]
            self._firmware_lines()
        if TP_ROUTE.enabled:
            TP_ROUTE.emit(reg=f"link {'ABCD'[link]}", value=value & 0xFF, targets=targets)

    def _firmware_lines(self) -> None:
        """Config lock held: the interrupt-line registers say what firmware would have
        written for the model: the GSI in APIC mode, the link's IRQ in PIC mode (left as
        it was while the link is disabled)."""
        for dev in self.devices.values():
            pin = dev.interrupt_pin
            if not pin:
                continue
            link = self.intx_link(dev.devfn >> 3, pin)
            with self._intx_lock:
                target = self._link_target(link)
            if target is not None:
                dev.config[PCI_INTERRUPT_LINE] = target

    # ------------------------------------------------------------ plugging
    def plug(self, dev: PciDevice, slot: int | None = None, function: int = 0) -> PciDevice:
        """Put ``dev`` at 00:slot.function (first free slot if None) and do
        what firmware would: assign BARs, set the interrupt line, enable decode."""
        with self._config_lock:
            if dev.bus is not None:
                raise PciError(f"{dev.name} is already plugged at {dev.bdf}")
            if not 0 <= function < NR_FUNCTIONS:
                raise PciError(f"function {function} is not 0..7")
            if slot is None:
                slot = next((s for s in range(NR_SLOTS) if (s << 3 | function) not in self.devices), None)
                if slot is None:
                    raise PciError(f"no free PCI slot for {dev.name}")
            if not 0 <= slot < NR_SLOTS:
                raise PciError(f"slot {slot} is not 0..31")
            devfn = slot << 3 | function
            if devfn in self.devices:
                raise PciError(f"{bdf_str(0, devfn)} is taken by {self.devices[devfn].name}")
            self._assign_bars(dev)
            dev.bus, dev.devfn = self, devfn
            self.devices[devfn] = dev
            if function and (slot << 3) in self.devices:
                self.devices[slot << 3].config[PCI_HEADER_TYPE] |= PCI_HEADER_TYPE_MULTI_FUNCTION
            if not function and any((slot << 3 | f) in self.devices for f in range(1, NR_FUNCTIONS)):
                dev.config[PCI_HEADER_TYPE] |= PCI_HEADER_TYPE_MULTI_FUNCTION
            if dev.interrupt_pin:
                dev.config[PCI_INTERRUPT_LINE] = self.intx_gsi(slot, dev.interrupt_pin)
            cmd = dev.command
            if any(b is not None and b.is_io for b in dev.bars):
                cmd |= PCI_COMMAND_IO
            if any(b is not None and not b.is_io for b in dev.bars):
                cmd |= PCI_COMMAND_MEMORY
            dev.put(PCI_COMMAND, 2, cmd)
            self._update_mappings(dev)
            self._update_intx(dev)
            for cap in dev.capabilities:
                if cap.on_plug is not None:
                    cap.on_plug()
            return dev

    def unplug(self, dev: PciDevice) -> None:
        """Remove a function (e.g. Xen's emulated-device unplug): BARs off the
        buses, its INTx deasserted, its MSI/MSI-X vectors removed from the irqchip
        (capabilities' ``on_unplug``), then the device's own ``unplugged()``."""
        with self._config_lock:
            if dev.bus is not self:
                return
            for cap in dev.capabilities:
                if cap.on_unplug is not None:
                    cap.on_unplug()
            for bar in dev.bars:
                if bar is not None:
                    self._unmap(dev, bar)
                    bar.wanted, bar.refused = None, None
            dev.intx_level = False
            self._update_intx(dev)
            del self.devices[dev.devfn]
            dev.bus = None
            dev.unplugged()

    def _assign_bars(self, dev: PciDevice) -> None:
        for bar in dev.bars:
            if bar is None:
                continue
            if bar.is_io:
                base = self._find_free(self.vm.pio_bus, self._io_next, bar.size, PCI_IO_END)
                if base is None:
                    raise PciError(f"PCI I/O window exhausted placing {bar.name} ({bar.size:#x} bytes)")
                self._io_next = base + bar.size
            else:
                base = self._find_free(self.vm.mmio_bus, self._mmio_next, bar.size, PCI_MMIO_END)
                if base is None:
                    raise PciError(f"PCI MMIO window exhausted placing {bar.name} ({bar.size:#x} bytes)")
                self._mmio_next = base + bar.size
            off = PCI_BASE_ADDRESS_0 + 4 * bar.index
            dev.put(off, 4, (base & 0xFFFFFFFF) | bar.flags)
            if bar.kind == BAR_MEM64:
                dev.put(off + 4, 4, base >> 32)

    @staticmethod
    def _find_free(bus, start: int, size: int, end: int) -> int | None:
        base = _align_up(start, size)
        maps = bus.mappings()
        while base + size <= end:
            clash = next((m for m in maps if m.base < base + size and base < m.end), None)
            if clash is None:
                return base
            base = _align_up(clash.end, size)
        return None

    # ------------------------------------------------------------ BAR mapping
    def _bar_target(self, dev: PciDevice, bar: PciBar) -> int | None:
        """Where the config space says ``bar`` should decode now (None: nowhere)."""
        off = PCI_BASE_ADDRESS_0 + 4 * bar.index
        cmd = dev.command
        if bar.is_io:
            if not cmd & PCI_COMMAND_IO:
                return None
            addr = dev.get(off, 4) & ~0x3 & ~(bar.size - 1)
            last = addr + bar.size - 1
            return None if addr == 0 or last >= 0xFFFFFFFF else addr
        if not cmd & PCI_COMMAND_MEMORY:
            return None
        addr = dev.get(off, 4) & ~0xF
        if bar.kind == BAR_MEM64:
            addr |= dev.get(off + 4, 4) << 32
        addr &= ~(bar.size - 1)
        last = addr + bar.size - 1
        top = 0xFFFFFFFF if bar.kind == BAR_MEM32 else (1 << 64) - 1
        return None if addr == 0 or last >= top else addr

    def _conflict(self, bar: PciBar, addr: int) -> str | None:
        end = addr + bar.size
        if bar.is_io:
            if end > PIO_LIMIT:
                return "beyond the 64 KiB I/O space"
            if self.vm.irqchip.name == "kernel":
                for base, length, what in KERNEL_PIO:
                    if base < end and addr < base + length:
                        return f"overlaps the in-kernel {what}"
            return None
        for r in self.vm.memory.ram_regions:      # (a Xen overlay page may sit in a BAR)
            if r.gpa < end and addr < r.end:
                return f"overlaps guest RAM {r.gpa:#x}-{r.end - 1:#x}"
        for base, length, what in KERNEL_MMIO:
            if base < end and addr < base + length:
                return f"overlaps the {what}"
        return None

    def _unmap(self, dev: PciDevice, bar: PciBar) -> None:
        if bar.address is None:
            return
        dev.bar_unmapped(bar)
        bus = self.vm.pio_bus if bar.is_io else self.vm.mmio_bus
        bus.unregister(bar.address)
        if TP_BAR_UNMAP.enabled:
            TP_BAR_UNMAP.emit(bdf=dev.bdf, bar=bar.index, kind=bar.kind, addr=bar.address, size=bar.size)
        bar.address = None

    def _update_mappings(self, dev: PciDevice) -> None:
        """Bring every BAR of ``dev`` in line with its config space (config lock held)."""
        if dev.bus is not self:
            return
        changed = []
        for bar in dev.bars:
            if bar is None:
                continue
            target = self._bar_target(dev, bar)
            if target == bar.wanted and bar.refused is None:
                continue                     # unchanged (a refused BAR is retried)
            self._unmap(dev, bar)            # unmap everything that moves first, so
            bar.wanted, bar.refused = target, None   # BARs may swap places
            if target is not None:
                changed.append(bar)
        for bar in changed:
            addr = bar.wanted
            reason = self._conflict(bar, addr)
            if reason is None:
                bus = self.vm.pio_bus if bar.is_io else self.vm.mmio_bus
                try:
                    bus.register(addr, bar.size, bar.region, bar.name)
                    bar.address = addr
                    dev.bar_mapped(bar)
                except BusError as e:
                    reason = str(e)
            bar.refused = reason
            if TP_BAR_MAP.enabled:
                TP_BAR_MAP.emit(bdf=dev.bdf, bar=bar.index, kind=bar.kind, addr=addr, size=bar.size,
                                result="mapped" if reason is None else f"refused: {reason}")

    # ------------------------------------------------------------ config mechanism #1
    def _decode(self) -> tuple[PciDevice | None, int, str]:
        a = self.config_address
        bus, devfn, reg = (a >> 16) & 0xFF, (a >> 8) & 0xFF, a & 0xFC
        # AMD's extended form puts register bits 11:8 in address bits 27:24 (what Linux's
        # "type 1 for extended access" uses on AMD CPUs).  We have no extended config
        # space: such accesses must not alias onto 0x00-0xff, so they find no device.
        ext = (a >> 24) & 0xF
        dev = self.devices.get(devfn) if a & CONFIG_ENABLE and bus == 0 and not ext else None
        return dev, reg, bdf_str(bus, devfn)

    def config_read(self, offset: int, size: int) -> int:
        """CONFIG_DATA read at byte ``offset`` (0-3) within the data dword."""
        ones = (1 << (8 * size)) - 1
        with self._config_lock:
            dev, reg, bdf = self._decode()
            if dev is None or offset + size > 4:
                value = ones
            else:
                value = dev.read_config(reg + offset, size) & ones
        if TP_CFG_READ.enabled:
            TP_CFG_READ.emit(bdf=bdf, offset=reg + offset, size=size, value=value)
        return value

    def config_write(self, offset: int, size: int, value: int) -> None:
        with self._config_lock:
            dev, reg, bdf = self._decode()
            if dev is not None and offset + size <= 4:
                dev.write_config(reg + offset, size, value & ((1 << (8 * size)) - 1))
        if TP_CFG_WRITE.enabled:
            TP_CFG_WRITE.emit(bdf=bdf, offset=reg + offset, size=size, value=value)

    # Direct config access by bdf (tests, and VMM-side code such as Xen's PCI INTx callback setup).
    def read_config(self, slot: int, function: int, offset: int, size: int) -> int:
        with self._config_lock:
            dev = self.devices.get(slot << 3 | function)
            return (1 << (8 * size)) - 1 if dev is None else dev.read_config(offset, size)

    def write_config(self, slot: int, function: int, offset: int, size: int, value: int) -> None:
        with self._config_lock:
            dev = self.devices.get(slot << 3 | function)
            if dev is not None:
                dev.write_config(offset, size, value)


class _ConfigAddressPort:
    def __init__(self, bus: PciBus):
        self.bus = bus

    def read(self, offset: int, size: int) -> int:
        return (self.bus.config_address >> (8 * offset)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 4:      # byte/word writes don't latch (PIIX; 0xCF9 is its reset register)
            self.bus.config_address = value & 0xFFFFFFFF


class _ConfigDataPort:
    def __init__(self, bus: PciBus):
        self.read = bus.config_read
        self.write = bus.config_write


class PciIrqRouter:
    """The interrupt model and link registers the DSDT's \\_PIC and LNKA-LNKD use
    (vmm/boot/acpi.py ``pic_model``/``pci_link_devices``), at PCI_IRQ_ROUTER_BASE:

        +0     PICF   \\_PIC's argument: 0 PIC, 1 APIC (reset: 1); reads back
        +1..4  PRQA-D a link's route, PIIX PIRQRC[A:D]: bit 7 disabled (reset: 0x80), 3:0 IRQ
    """

    def __init__(self, bus: PciBus):
        self.bus = bus

    def read(self, offset: int, size: int) -> int:
        regs = bytes([self.bus.picf, *self.bus.pirq])
        return int.from_bytes(regs[offset:offset + size].ljust(size, b"\xff"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            off, byte = offset + i, (value >> (8 * i)) & 0xFF
            if off == 0:
                self.bus.set_interrupt_model(byte)
            elif off <= NR_LINKS:
                self.bus.set_link(off - 1, byte)


def attach_pci(vm: Vm) -> PciBus:
    """Create bus 0 with its host bridge and claim 0xCF8-0xCFF, and the interrupt
    router's ports."""
    bus = PciBus(vm)
    bus.plug(PciHostBridge(), slot=0)
    vm.pio_bus.register(CONFIG_ADDRESS, 4, _ConfigAddressPort(bus), "pci-config-address")
    vm.pio_bus.register(CONFIG_DATA, 4, _ConfigDataPort(bus), "pci-config-data")
    vm.pio_bus.register(PCI_IRQ_ROUTER_BASE, PCI_IRQ_ROUTER_SIZE, PciIrqRouter(bus), "pci-irq-router")
    return bus


__all__ = ["PciBus", "PciDevice", "PciBar", "PciHostBridge", "PciIrqRouter", "PciError", "FnRegion", "attach_pci",
           "bdf_str",
           "BAR_IO", "BAR_MEM32", "BAR_MEM64", "INTA", "INTB", "INTC", "INTD"]
