"""The interrupt-controller seam (in the spirit of crosvm's IrqChip trait).

Devices raise interrupts only through an :class:`IrqChip`:

* ``set_gsi(gsi, level, source)`` — drive a GSI line (ISA IRQs 0-15 and I/OAPIC
  pins).  A line may have several sources (the PCI bus's INTx, the Xen callback
  line): the pin sees their OR, as Xen counts asserters per GSI;
* ``send_msi(address, data)`` — deliver one MSI message;
* ``add_eoi_listener(gsi, fn)`` / ``remove_eoi_listener`` — be told when the
  guest EOIs a level-triggered interrupt on ``gsi`` (devices re-assert a
  still-pending level there).

Two implementations sit behind it:

* :class:`KernelIrqChip` — KVM_CREATE_IRQCHIP: PIC, I/OAPIC and LAPICs all in
  the kernel (plus the in-kernel PIT).  ``set_gsi`` is KVM_IRQ_LINE.
* :class:`SplitIrqChip` — KVM_CAP_SPLIT_IRQCHIP: LAPICs in the kernel, the
  I/OAPIC in user space.  ``set_gsi`` goes to a :class:`GsiSink` (the userspace
  I/OAPIC model, provided by ``devices/``), which turns pins into MSIs; EOIs of
  level-triggered vectors arrive as KVM_EXIT_IOAPIC_EOI.  This is the mode Xen
  PIRQs need: the VMM must see a GSI before the I/OAPIC does to divert it to an
  event channel (see ARCHITECTURE.md, "A GSI's path").

Lock rule: an IrqChip never calls back into a device while holding its lock,
and ``set_gsi``/``send_msi`` may be called with a device lock held (they are
the innermost level of the lock order).
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from kvm_bindings import IrqchipRoute, KvmError, Route, VmFd, consts
from vmm.trace import tracepoint

TP_SET_GSI = tracepoint("irq.gsi", "gsi={gsi} level={level}")
TP_MSI = tracepoint("irq.msi", "addr={addr:#x} data={data:#x} delivered={delivered}")
TP_EOI = tracepoint("irq.eoi", "vector={vector:#x}")

NR_IOAPIC_PINS = 24


class IrqChipError(RuntimeError):
    pass


class GsiSink(Protocol):
    """Where a split irqchip sends GSI levels: the userspace I/OAPIC model."""
    def set_irq(self, gsi: int, level: bool) -> None: ...
    def end_of_interrupt(self, vector: int) -> list[int]:
        """Handle an EOI broadcast; return the GSIs whose remote IRR it cleared."""
        ...


class IrqChip:
    """Interface; see module docstring.

    Also the owner of KVM's GSI routing table: KVM_SET_GSI_ROUTING replaces
    the whole table, so everyone (I/OAPIC pins, irqfd MSI routes, Xen event
    channel routes) edits it here with ``set_routes``.
    """
    name = "irqchip"
    first_free_gsi = NR_IOAPIC_PINS    # GSIs below this belong to the I/OAPIC pins

    def __init__(self, vm: VmFd):
        self.vm = vm
        self._eoi_listeners: dict[int, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        # Held while a line's OR is decided *and* driven (so two sources' changes reach the
        # pin in the order they were decided); above the I/OAPIC's lock, below device locks.
        self._line_lock = threading.Lock()
        self._line_sources: dict[int, set[str]] = {}
        self._routes: dict[int, list[Route]] = {}
        self._next_gsi = self.first_free_gsi

    # -- interrupts
    def set_gsi(self, gsi: int, level: bool, source: str = "line") -> None:
        """Drive ``source``'s level on ``gsi``; the pin follows the OR of all sources.
        A raise always reaches the pin (single-source devices keep their old
        behaviour); a lower only when no other source still asserts."""
        with self._line_lock:
            sources = self._line_sources.setdefault(gsi, set())
            if level:
                sources.add(source)
            else:
                sources.discard(source)
                if sources:
                    return
            self._drive(gsi, level)

    def _drive(self, gsi: int, level: bool) -> None:
        raise NotImplementedError

    def send_msi(self, address: int, data: int) -> bool:
        """Deliver an MSI; returns False if the guest's LAPIC blocked it."""
        r = self.vm.signal_msi(address, data)
        if TP_MSI.enabled:
            TP_MSI.emit(addr=address, data=data, delivered=r > 0)
        return r > 0

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
            for fn in listeners:  # called without our lock: listeners may call set_gsi
                fn()

    def ioapic_eoi(self, vector: int) -> None:
        """KVM_EXIT_IOAPIC_EOI (split mode only)."""
        if TP_EOI.enabled:
            TP_EOI.emit(vector=vector)

    # -- the GSI routing table
    def allocate_gsi(self) -> int:
        """A GSI number above the I/OAPIC pins, for an irqfd route."""
        with self._lock:
            gsi = self._next_gsi
            self._next_gsi += 1
            return gsi

    def set_routes(self, gsi: int, routes: list[Route]) -> None:
        """Replace the routes of ``gsi`` (empty list: remove) and commit the table."""
        with self._lock:
            if routes:
                self._routes[gsi] = list(routes)
            else:
                self._routes.pop(gsi, None)
            table = [r for rs in self._routes.values() for r in rs]
            self.vm.set_gsi_routing(table)

    def routes(self) -> dict[int, list[Route]]:
        with self._lock:
            return {g: list(rs) for g, rs in self._routes.items()}


class KernelIrqChip(IrqChip):
    """PIC + I/OAPIC + LAPIC + PIT in the kernel."""
    name = "kernel"

    def __init__(self, vm: VmFd, pit: bool = True):
        super().__init__(vm)
        vm.create_irqchip()
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
        if not 0 <= gsi < NR_IOAPIC_PINS:
            raise IrqChipError(f"GSI {gsi} out of range")
        if TP_SET_GSI.enabled:
            TP_SET_GSI.emit(gsi=gsi, level=int(level))
        self.vm.irq_line(gsi, 1 if level else 0)

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

    def attach_gsi_sink(self, sink: GsiSink) -> None:
        self.sink = sink

    def _drive(self, gsi: int, level: bool) -> None:
        if not 0 <= gsi < self.nr_pins:
            raise IrqChipError(f"GSI {gsi} out of range")
        if TP_SET_GSI.enabled:
            TP_SET_GSI.emit(gsi=gsi, level=int(level))
        if self.sink is None:
            raise IrqChipError("split irqchip: no userspace I/OAPIC attached, GSIs cannot be delivered")
        self.sink.set_irq(gsi, level)

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


__all__ = ["IrqChip", "KernelIrqChip", "SplitIrqChip", "GsiSink", "IrqChipError", "create_irqchip"]
