"""The interrupt-controller seam (in the spirit of crosvm's IrqChip trait).

Devices raise interrupts only through an :class:`IrqChip`, with objects it hands out:

* :class:`IrqLine` — ``chip.line(gsi, source)``: one source's wire to a GSI (ISA IRQs
  0-15 and I/OAPIC pins), crosvm's ``IrqLevelEvent`` idea.  ``set(level)``,
  ``pulse()`` and ``on_eoi(fn)`` (be told when the guest EOIs a level-triggered
  interrupt there, to re-assert a still-pending level).  A GSI may have several
  lines (PCI INTx of several functions, the Xen callback line, the testdev): the
  pin sees their OR.
* :class:`MsiVector` — ``chip.msi_vector(owner, index, kind)``: one MSI or MSI-X
  vector of a device.  Its capability model reports every (re)programming and
  mask change with ``update()``; ``fire()`` sends the message, through an irqfd
  (``use_irqfd()``: no userspace work at all) where the route allows it.
* ``send_msi(address, data)`` — one MSI message from a device (the testdev).

**Diversion** (how Xen PIRQs plug in without vmm/ or devices/ importing xen/):
``set_diverter(d)`` installs an :class:`InterruptDiverter`.  The chip asks it about
every GSI level change (of divertible lines) and every device MSI *under the line
lock*; the diverter only consults its own table (its lock is below the line lock)
and answers "not mine" (``None``: the I/OAPIC / LAPIC gets it) or "mine" with the
deliveries to make.  Those run on the chip's delivery thread, with no lock held, so
a delivery that takes the event-channel port lock can never invert the lock order
whatever the device held when it raised the line (QEMU's bottom half).  Lines made
with ``divertible=False`` (the Xen callback GSI) are never shown to the diverter:
delivering an event can't loop back into event-channel code (QEMU's deadlock 1).
The diverter also snoops MSI vectors (``msi_vector_changed``) and chooses their
irqfd routes (``msi_route``); route changes are pushed with ``rebuild_msi_routes()``,
which callers issue after releasing their own locks ("rebuild after unlock",
QEMU's deadlock 2).

Two implementations sit behind it:

* :class:`KernelIrqChip` — KVM_CREATE_IRQCHIP: PIC, I/OAPIC and LAPICs all in
  the kernel (plus the in-kernel PIT).  A pin is driven with KVM_IRQ_LINE.
* :class:`SplitIrqChip` — KVM_CAP_SPLIT_IRQCHIP: LAPICs in the kernel, the
  I/OAPIC in user space.  Pins go to a :class:`GsiSink` (the userspace I/OAPIC
  model, provided by ``devices/``), which turns them into MSIs (``lapic_msi``);
  EOIs of level-triggered vectors arrive as KVM_EXIT_IOAPIC_EOI.  GSIs 0-15 are
  also the ISA IRQs of the userspace 8259 pair (``attach_pic``), as on a PC where
  each ISA line reaches both the I/OAPIC and the PIC; the PIC reaches vCPU 0 as
  ExtINT (vmm/extint.py) and reports its level EOIs with ``pic_eoi``.

Locks (vmm/locks.py): ``irqchip.line`` is taken with device locks held and is above
the diverter's table lock and the I/OAPIC's; ``irqchip`` (routes, listeners, MSI
vectors) is near the bottom.  The chip never calls a device or the diverter's
delivery path while holding either.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Iterable, Protocol

from kvm_bindings import IrqchipRoute, KvmError, MsiRoute, Route, VmFd, consts
from vmm.errors import internal_error
from vmm.locks import ordered_lock
from vmm.memory import LAPIC_BASE
from vmm.trace_events import (
    TP_IRQ_GSI as TP_SET_GSI,
    TP_IRQ_DIVERT as TP_DIVERT,
    TP_IRQ_MSI as TP_MSI,
    TP_IRQ_MSI_VECTOR as TP_MSI_VECTOR,
    TP_IRQ_EOI as TP_EOI,
)

NR_IOAPIC_PINS = 24          # the I/OAPIC's pins (KVM's KVM_IOAPIC_NUM_PINS), GSIs 0-23
NR_ISA_IRQS = 16             # GSIs 0-15 are the ISA IRQs: they reach the 8259s too
# The MSI format (Intel SDM vol. 3, 11.11): one home for the I/OAPIC, Xen's upcalls and PIRQs.
MSI_ADDR_BASE = LAPIC_BASE   # 0xFEE00000: the LAPICs' MSI window (11.11.1)
MSI_ADDR_DEST_ID_SHIFT = 12  # address[19:12]: the destination APIC id
MSI_ADDR_DEST_ID_MASK = 0xFF
MSI_ADDR_DEST_MODE_LOGICAL = 1 << 2
MSI_DATA_VECTOR_MASK = 0xFF  # data[7:0] (11.11.2)
MSI_DATA_MODE_MASK = 0x7FF   # data[10:0]: the vector and the delivery mode (as an I/OAPIC RTE's)
MSI_DATA_LEVEL_ASSERT = 1 << 14
MSI_DATA_TRIGGER_LEVEL = 1 << 15


def msi_address(dest: int, logical: bool = False) -> int:
    """The MSI address that targets APIC id ``dest`` (physical or logical mode)."""
    return (MSI_ADDR_BASE | (dest & MSI_ADDR_DEST_ID_MASK) << MSI_ADDR_DEST_ID_SHIFT
            | (MSI_ADDR_DEST_MODE_LOGICAL if logical else 0))


Delivery = Callable[[], None]


class IrqChipError(RuntimeError):
    pass


class GsiSink(Protocol):
    """Where a split irqchip sends pin levels: the userspace I/OAPIC model."""
    def set_irq(self, gsi: int, level: bool) -> None: ...
    def end_of_interrupt(self, vector: int) -> list[int]:
        """Handle an EOI broadcast; return the GSIs whose remote IRR it cleared."""
        ...


class IsaPic(Protocol):
    """Where a split irqchip also sends GSIs 0-15: the userspace 8259 pair (ISA IRQ = GSI)."""
    def set_irq(self, irq: int, level: bool) -> None: ...


class InterruptDiverter(Protocol):
    """Takes some GSIs and MSIs away from the I/OAPIC/LAPIC (Xen PIRQs: xen/pirq.py).

    ``divert_gsi`` and ``divert_msi`` run with the chip's line lock (and perhaps a
    device lock) held: they may take only locks below ``irqchip.line`` and must not
    deliver anything themselves; they return ``None`` ("not mine") or the deliveries
    to run later, with no lock held, on the chip's delivery thread."""
    def divert_gsi(self, gsi: int, level: bool) -> list[Delivery] | None: ...
    def divert_msi(self, address: int, data: int) -> list[Delivery] | None: ...
    def msi_vector_changed(self, vec: "MsiVector") -> None:
        """Snoop: a vector was (re)programmed, masked/unmasked, or removed (``vec.removed``)."""
        ...
    def msi_route(self, vec: "MsiVector", gsi: int) -> Route | None | bool:
        """The irqfd route for ``vec`` if it is one of ours: a Route, or False to keep
        it in userspace (fire() then goes through ``divert_msi``); None: not ours."""
        ...


class IrqLine:
    """One source's wire to a GSI.  Made by ``IrqChip.line``; any thread; may be driven
    with the device's own lock held (``irqchip.line`` is below device locks)."""
    __slots__ = ("chip", "gsi", "source", "divertible", "level")

    def __init__(self, chip: "IrqChip", gsi: int, source: str, divertible: bool):
        self.chip = chip
        self.gsi = gsi
        self.source = source
        self.divertible = divertible
        self.level = False

    def set(self, level: bool) -> None:
        self.chip._set_line(self, bool(level))

    def pulse(self) -> None:
        """An edge: raise, then lower."""
        self.set(True)
        self.set(False)

    def on_eoi(self, fn: Callable[[], None], add: bool = True) -> None:
        """Be told (with no irqchip lock held) when the guest EOIs a level interrupt of this GSI."""
        if add:
            self.chip.add_eoi_listener(self.gsi, fn)
        else:
            self.chip.remove_eoi_listener(self.gsi, fn)

    def __repr__(self) -> str:
        return f"<IrqLine gsi {self.gsi} {self.source} {'high' if self.level else 'low'}>"


class _Gsi:
    """A GSI's asserted lines: divertible ones (shown to the diverter) and fixed ones."""
    __slots__ = ("divertible", "fixed", "pin", "diverted")

    def __init__(self):
        self.divertible: set[IrqLine] = set()
        self.fixed: set[IrqLine] = set()
        self.pin = False                 # the level last driven to the pin
        self.diverted = False            # the diverter's last answer


class MsiVector:
    """One MSI/MSI-X vector of a device as the chip sees it: the message programmed,
    whether it is masked (or its function disabled), and an optional irqfd.

    ``unmask`` (given by the capability model) unmasks the vector in the device, for
    the Xen rule that binding an MSI PIRQ unmasks it (Linux never does: Xen's
    physdev code does it for real hardware).  Call it with no lock held."""

    def __init__(self, chip: "IrqChip", owner: str, index: int, kind: str,
                 unmask: Callable[[], None] | None = None):
        self.chip = chip
        self.owner = owner             # e.g. "00:03.0"
        self.index = index
        self.kind = kind               # "msi" | "msix"
        self.unmask = unmask
        self.address = 0
        self.data = 0
        self.masked = True
        self.removed = False
        self.irqfd_gsi: int | None = None
        self._eventfd: int | None = None
        self._fast = False             # fire() may write the eventfd: KVM holds a route for it

    def update(self, address: int, data: int, masked: bool) -> None:
        self.chip.update_msi_vector(self, address, data, masked)

    def fire(self) -> bool:
        """Send the message now (the caller checked its mask and pending bit).  Returns
        True if it went to KVM through the irqfd, False if userspace delivered it."""
        return self.chip.fire_msi_vector(self)

    def remove(self) -> None:
        self.chip.remove_msi_vector(self)

    @property
    def name(self) -> str:
        return f"{self.owner} {self.kind}[{self.index}]"

    def __repr__(self) -> str:
        return f"<MsiVector {self.name} addr={self.address:#x} data={self.data:#x} masked={self.masked}>"


class _DeliveryThread:
    """Runs diverted deliveries with no lock held, in order (QEMU's bottom half)."""

    def __init__(self):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self.delivered = 0

    def submit(self, work: Iterable[Delivery]) -> None:
        work = list(work)
        if not work:
            return
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="irq-deliver", daemon=True)
                    self._thread.start()
        self._idle.clear()
        self._q.put(work)

    def _run(self) -> None:
        while True:
            work = self._q.get()
            if work is None:
                return
            for fn in work:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - reported, and the thread goes on
                    internal_error("irq-deliver", e)
                self.delivered += 1
            if self._q.empty():
                self._idle.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far has run (tests, snapshots)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)


class IrqChip:
    """Interface; see the module docstring.

    Also the owner of KVM's GSI routing table: KVM_SET_GSI_ROUTING replaces
    the whole table, so everyone (I/OAPIC pins, irqfd MSI routes, Xen event
    channel routes) edits it here with ``set_routes``.
    """
    name = "irqchip"
    nr_pins = NR_IOAPIC_PINS
    first_free_gsi = NR_IOAPIC_PINS    # GSIs below this belong to the I/OAPIC pins

    def __init__(self, vm: VmFd):
        self.vm = vm
        self._lock = ordered_lock("irqchip")          # routes, listeners, MSI vectors
        self._line_lock = ordered_lock("irqchip.line")
        self._eoi_listeners: dict[int, list[Callable[[], None]]] = {}
        self._gsis: dict[int, _Gsi] = {}
        self._routes: dict[int, list[Route]] = {}
        self._next_gsi = self.first_free_gsi
        self._free_gsis: list[int] = []
        self._vectors: list[MsiVector] = []
        self.diverter: InterruptDiverter | None = None
        self.deliveries = _DeliveryThread()

    # ------------------------------------------------------------ lines
    def line(self, gsi: int, source: str, *, divertible: bool = True) -> IrqLine:
        """A wire from ``source`` (a name for traces) to ``gsi``."""
        if not 0 <= gsi < self.nr_pins:
            raise IrqChipError(f"GSI {gsi} out of range (0..{self.nr_pins - 1})")
        return IrqLine(self, gsi, source, divertible)

    def _set_line(self, line: IrqLine, level: bool) -> None:
        with self._line_lock:
            line.level = level
            st = self._gsis.get(line.gsi)
            if st is None:
                st = self._gsis[line.gsi] = _Gsi()
            group = st.divertible if line.divertible else st.fixed
            if level:
                group.add(line)
            else:
                group.discard(line)
            if TP_SET_GSI.enabled:
                TP_SET_GSI.emit(gsi=line.gsi, level=int(level), source=line.source)
            work = self._settle(line.gsi, st, raised=level, ask=line.divertible)
        if work:
            self.deliveries.submit(work)

    def redrive(self, gsi: int) -> None:
        """Ask the diverter again about ``gsi`` and drive its pin accordingly: the diverter
        took the GSI over or handed it back (PHYSDEVOP_map_pirq / unmap_pirq)."""
        with self._line_lock:
            st = self._gsis.get(gsi)
            if st is None:
                st = self._gsis[gsi] = _Gsi()
            work = self._settle(gsi, st, raised=False, ask=True)
        if work:
            self.deliveries.submit(work)

    def _settle(self, gsi: int, st: _Gsi, raised: bool, ask: bool) -> list[Delivery] | None:
        """Line lock held: the diverter decides (when a divertible line changed, or on
        ``redrive``), then the pin follows what is left to it."""
        shown = bool(st.divertible)
        work = None
        if ask and self.diverter is not None:
            work = self.diverter.divert_gsi(gsi, shown)
            st.diverted = work is not None
            if TP_DIVERT.enabled:
                TP_DIVERT.emit(what=f"gsi={gsi} level={int(shown)}", diverted=int(st.diverted))
        pin = bool(st.fixed) or (shown and not st.diverted)
        # A raise always reaches the pin (a level pin re-delivers once its IRR is clear);
        # a lower only when the OR of the sources it sees falls.
        if pin != st.pin or (pin and raised):
            st.pin = pin
            self._drive(gsi, pin)
        return work

    def line_level(self, gsi: int) -> bool:
        """The OR of every line on ``gsi`` (diverted or not)."""
        with self._line_lock:
            st = self._gsis.get(gsi)
            return bool(st and (st.divertible or st.fixed))

    def _drive(self, gsi: int, level: bool) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ diversion
    def set_diverter(self, diverter: InterruptDiverter | None) -> None:
        self.diverter = diverter

    def flush_deliveries(self, timeout: float = 5.0) -> bool:
        return self.deliveries.flush(timeout)

    def close(self) -> None:
        self.deliveries.stop()
        with self._lock:
            vectors = list(self._vectors)
        for vec in vectors:
            self._release_irqfd(vec)

    # ------------------------------------------------------------ MSIs
    def send_msi(self, address: int, data: int) -> bool:
        """A device's MSI message: the diverter's, or the LAPIC's.  Returns False if the
        guest's LAPIC blocked it (a diverted message counts as delivered)."""
        d = self.diverter
        if d is not None:
            with self._line_lock:
                work = d.divert_msi(address, data)
            if work is not None:
                if TP_DIVERT.enabled:
                    TP_DIVERT.emit(what=f"msi addr={address:#x} data={data:#x}", diverted=1)
                self.deliveries.submit(work)
                return True
        return self.lapic_msi(address, data)

    def lapic_msi(self, address: int, data: int) -> bool:
        """Straight to the LAPICs (KVM_SIGNAL_MSI), never diverted: the I/OAPIC's pin
        messages and Xen's own upcall vectors."""
        r = self.vm.signal_msi(address, data)
        if TP_MSI.enabled:
            TP_MSI.emit(addr=address, data=data, delivered=r > 0)
        return r > 0

    def msi_vector(self, owner: str, index: int, kind: str,
                   unmask: Callable[[], None] | None = None) -> MsiVector:
        vec = MsiVector(self, owner, index, kind, unmask)
        with self._lock:
            self._vectors.append(vec)
        return vec

    def update_msi_vector(self, vec: MsiVector, address: int, data: int, masked: bool) -> None:
        """The device model's record of a vector changed (call it with no chip lock held;
        a device or capability lock is fine)."""
        with self._lock:
            changed = (vec.address, vec.data) != (address, data)
            vec.address, vec.data, vec.masked = address, data, masked
            if changed and vec.irqfd_gsi is not None:
                self._route_vector(vec)
        if TP_MSI_VECTOR.enabled:
            TP_MSI_VECTOR.emit(owner=vec.owner, kind=vec.kind, index=vec.index, addr=address, data=data,
                               masked=int(masked), irqfd=int(vec._fast))
        if self.diverter is not None:
            self.diverter.msi_vector_changed(vec)

    def remove_msi_vector(self, vec: MsiVector) -> None:
        """The device is gone (unplugged, or MSI-X turned off): forget the vector."""
        self._release_irqfd(vec)
        with self._lock:
            vec.removed = True
            if vec in self._vectors:
                self._vectors.remove(vec)
        if self.diverter is not None:
            self.diverter.msi_vector_changed(vec)

    def use_irqfd(self, vec: MsiVector) -> bool:
        """Give ``vec`` an eventfd bound to a GSI of its own (KVM_IRQFD), so fire() from a
        device thread costs no userspace delivery.  False if KVM refuses."""
        with self._lock:
            if vec.irqfd_gsi is not None:
                return True
            gsi = self._free_gsis.pop() if self._free_gsis else self._take_gsi()
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            try:
                vec.irqfd_gsi, vec._eventfd = gsi, fd
                self._route_vector(vec)
                self.vm.irqfd(fd, gsi)
            except KvmError:
                os.close(fd)
                vec.irqfd_gsi, vec._eventfd, vec._fast = None, None, False
                self._routes.pop(gsi, None)
                self._free_gsis.append(gsi)
                return False
            return True

    def _release_irqfd(self, vec: MsiVector) -> None:
        with self._lock:
            gsi, fd = vec.irqfd_gsi, vec._eventfd
            if gsi is None:
                return
            vec.irqfd_gsi, vec._eventfd, vec._fast = None, None, False
            try:
                self.vm.irqfd(fd, gsi, deassign=True)
            except KvmError:
                pass
            os.close(fd)
            if self._routes.pop(gsi, None) is not None:
                self._commit_routes()
            self._free_gsis.append(gsi)

    def _route_vector(self, vec: MsiVector) -> None:
        """Chip lock held: (re)compute the irqfd route of ``vec`` and commit the table."""
        gsi = vec.irqfd_gsi
        route: Route | None | bool = None
        if self.diverter is not None:
            route = self.diverter.msi_route(vec, gsi)
        if route is None:
            route = MsiRoute(gsi, vec.address, vec.data)
        if route is False:                  # the diverter's, but only userspace can deliver it
            vec._fast = False
            self._routes.pop(gsi, None)
        else:
            vec._fast = True
            self._routes[gsi] = [route]
        self._commit_routes()

    def rebuild_msi_routes(self) -> None:
        """The diverter's answers changed (a PIRQ bound, closed, moved): recompute every
        irqfd route.  Call with no lock of yours held (QEMU's deadlock 2)."""
        with self._lock:
            for vec in self._vectors:
                if vec.irqfd_gsi is not None:
                    self._route_vector(vec)

    def fire_msi_vector(self, vec: MsiVector) -> bool:
        with self._lock:               # ordered against route changes
            if vec._fast and vec._eventfd is not None:
                os.eventfd_write(vec._eventfd, 1)
                return True
            address, data = vec.address, vec.data
        self.send_msi(address, data)
        return False

    # -- EOI notification for level-triggered lines
    def add_eoi_listener(self, gsi: int, fn: Callable[[], None]) -> None:
        with self._lock:
            self._eoi_listeners.setdefault(gsi, []).append(fn)

    def remove_eoi_listener(self, gsi: int, fn: Callable[[], None]) -> None:
        with self._lock:
            listeners = self._eoi_listeners.get(gsi, [])
            if fn in listeners:
                listeners.remove(fn)

    def _notify_eoi(self, gsis: list[int]) -> None:
        for gsi in gsis:
            with self._lock:
                listeners = list(self._eoi_listeners.get(gsi, ()))
            for fn in listeners:  # called without our lock: listeners may drive lines
                fn()

    def ioapic_eoi(self, vector: int) -> None:
        """KVM_EXIT_IOAPIC_EOI (split mode only)."""
        if TP_EOI.enabled:
            TP_EOI.emit(vector=vector)

    # -- snapshot (ARCHITECTURE.md "Snapshots")
    def save(self) -> dict:
        """Primary state the kernel holds for this chip (none for the split chip: its LAPICs
        are the vCPUs', its I/OAPIC and PICs are devices).  The GSI routing table, irqfds and
        the lines' levels are derived: the devices and Xen rebuild them."""
        return {}

    def restore(self, state: dict) -> None:
        pass

    # -- the GSI routing table
    def _take_gsi(self) -> int:
        gsi = self._next_gsi
        self._next_gsi += 1
        return gsi

    def allocate_gsi(self) -> int:
        """A GSI number above the I/OAPIC pins, for an irqfd route."""
        with self._lock:
            return self._free_gsis.pop() if self._free_gsis else self._take_gsi()

    def set_routes(self, gsi: int, routes: list[Route]) -> None:
        """Replace the routes of ``gsi`` (empty list: remove) and commit the table."""
        with self._lock:
            if routes:
                self._routes[gsi] = list(routes)
            else:
                self._routes.pop(gsi, None)
            self._commit_routes()

    def _commit_routes(self) -> None:
        self.vm.set_gsi_routing([r for rs in self._routes.values() for r in rs])

    def routes(self) -> dict[int, list[Route]]:
        with self._lock:
            return {g: list(rs) for g, rs in self._routes.items()}


class KernelIrqChip(IrqChip):
    """PIC + I/OAPIC + LAPIC + PIT in the kernel."""
    name = "kernel"

    def __init__(self, vm: VmFd, pit: bool = True):
        super().__init__(vm)
        vm.create_irqchip()
        self.has_pit = pit
        if pit:
            vm.create_pit2()
        # KVM's default table (arch/x86/kvm/irq_comm.c default_routing): ISA
        # IRQs 0-15 to both PICs and the I/OAPIC pin of the same number,
        # 16-23 to the I/OAPIC.  Keep it when we add our own routes.
        for gsi in range(NR_IOAPIC_PINS):
            rs = [IrqchipRoute(gsi, consts.KVM_IRQCHIP_IOAPIC, gsi)]
            if gsi < 8:
                rs.append(IrqchipRoute(gsi, consts.KVM_IRQCHIP_PIC_MASTER, gsi))
            elif gsi < 16:
                rs.append(IrqchipRoute(gsi, consts.KVM_IRQCHIP_PIC_SLAVE, gsi - 8))
            self._routes[gsi] = rs

    def _drive(self, gsi: int, level: bool) -> None:
        self.vm.irq_line(gsi, 1 if level else 0)

    def save(self) -> dict:
        """KVM's PICs and I/OAPIC (KVM_GET_IRQCHIP) and its PIT (KVM_GET_PIT2), as bytes."""
        s = {"chips": [self.vm.get_irqchip(c) for c in (consts.KVM_IRQCHIP_PIC_MASTER, consts.KVM_IRQCHIP_PIC_SLAVE,
                                                         consts.KVM_IRQCHIP_IOAPIC)]}
        if self.has_pit:
            s["pit"] = self.vm.get_pit2()
        return s

    def restore(self, state: dict) -> None:
        for data in state["chips"]:
            self.vm.set_irqchip(data)
        if "pit" in state and self.has_pit:
            self.vm.set_pit2(state["pit"])

    def add_eoi_listener(self, gsi: int, fn: Callable[[], None]) -> None:
        # The in-kernel I/OAPIC reports EOIs only through irqfd resamplers.
        raise IrqChipError("EOI notification needs --irqchip split")


class SplitIrqChip(IrqChip):
    """LAPICs in the kernel; the I/OAPIC modelled in user space (a GsiSink)."""
    name = "split"

    def __init__(self, vm: VmFd, nr_pins: int = NR_IOAPIC_PINS):
        super().__init__(vm)
        vm.enable_split_irqchip(nr_pins)
        self.nr_pins = nr_pins
        self.sink: GsiSink | None = None
        self.pic: IsaPic | None = None

    def attach_gsi_sink(self, sink: GsiSink) -> None:
        self.sink = sink

    def attach_pic(self, pic: IsaPic) -> None:
        self.pic = pic

    def _drive(self, gsi: int, level: bool) -> None:
        if self.sink is None:
            raise IrqChipError("split irqchip: no userspace I/OAPIC attached, GSIs cannot be delivered")
        self.sink.set_irq(gsi, level)
        if gsi < NR_ISA_IRQS and self.pic is not None:
            self.pic.set_irq(gsi, level)            # under the line lock; the PIC's lock is below it

    def pic_eoi(self, gsi: int) -> None:
        """The guest EOI'd a level-triggered ISA IRQ at the PIC (no lock held; traced as pic.eoi)."""
        self._notify_eoi([gsi])

    def ioapic_eoi(self, vector: int) -> None:
        super().ioapic_eoi(vector)
        if self.sink is not None:
            self._notify_eoi(self.sink.end_of_interrupt(vector))


def create_irqchip(vm: VmFd, mode: str) -> IrqChip:
    try:
        if mode == "kernel":
            return KernelIrqChip(vm)
        if mode == "split":
            return SplitIrqChip(vm)
    except KvmError as e:
        raise IrqChipError(f"cannot create the {mode} irqchip: {e}") from None
    raise IrqChipError(f"unknown irqchip mode {mode!r}")


__all__ = ["IrqChip", "KernelIrqChip", "SplitIrqChip", "GsiSink", "IsaPic", "InterruptDiverter", "IrqLine",
           "MsiVector", "IrqChipError", "create_irqchip", "NR_IOAPIC_PINS", "NR_ISA_IRQS", "MSI_ADDR_BASE",
           "MSI_ADDR_DEST_ID_SHIFT", "MSI_ADDR_DEST_ID_MASK", "MSI_DATA_VECTOR_MASK", "MSI_DATA_MODE_MASK",
           "MSI_DATA_LEVEL_ASSERT", "MSI_DATA_TRIGGER_LEVEL", "msi_address"]
