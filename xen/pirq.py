"""Xen PIRQs of an HVM guest: the PIRQ table and the :class:`InterruptDiverter`.

An HVM guest with XENFEAT_hvm_pirqs may take an emulated GSI or MSI away from
the (v)IOAPIC/LAPIC and have it arrive on an event channel instead (Linux's
arch/x86/pci/xen.c and drivers/xen/events/events_base.c):

* GSI: ``PHYSDEVOP_map_pirq(MAP_PIRQ_TYPE_GSI, index=gsi, pirq=-1)`` picks a
  PIRQ, ``EVTCHNOP_bind_pirq`` gives it a port, the guest unmasks the port and
  issues ``PHYSDEVOP_eoi``; from then on a rising edge of the GSI sets the port
  pending (xen/arch/x86/hvm/irq.c assert_gsi -> send_guest_pirq) instead of
  reaching the I/OAPIC, and an EOI of a level GSI (>= 16) still asserted sends
  it again (xen/arch/x86/physdev.c PHYSDEVOP_eoi).
* MSI: ``PHYSDEVOP_get_free_pirq(MAP_PIRQ_TYPE_MSI)``, then the guest programs
  the device with a message of vector 0 whose address names the PIRQ
  (address_hi[31:8] = pirq[31:8], address_lo dest id [19:12] = pirq[7:0]), then
  binds it.  Xen (hvm/irq.c hvm_inject_msi) turns such a message into
  send_guest_pirq, mapping the PIRQ as "MSI emulation" on its first use.

The table below is Xen's per-domain ``struct pirq`` radix tree for an HVM
domain without passthrough: an entry exists (Xen's ``pirq_info() != NULL``)
while the PIRQ is mapped (``emuirq``: a GSI or IRQ_MSI_EMU), reserved by
get_free_pirq (``arch.irq = PIRQ_ALLOCATED``) or bound to a port, and is
dropped where Xen calls ``pirq_cleanup_check``.  ``emuirq_pirq`` is Xen's
reverse tree ``d->arch.hvm.emuirq_pirq`` (GSI -> PIRQ; IRQ_MSI_EMU -> the one
PIRQ recorded under that key, see :meth:`PirqTable._map_emuirq`).

Locks (vmm/locks.py): ``xen.pirq`` is a leaf below the irqchip's locks: the
chip asks :meth:`divert_gsi`/:meth:`divert_msi` under its line lock, and
:meth:`msi_route` under its own lock.  The event-channel port lock may be held
while taking it (bind/close/bind_vcpu); never the other way.  Deliveries are
closures run later (the chip's ``irq-deliver`` thread, or the hypercall after
it released the table) that take the port lock and look the binding up again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from kvm_bindings import XenEvtchnRoute
from vmm.irqchip import MSI_ADDR_DEST_ID_MASK, MSI_ADDR_DEST_ID_SHIFT, MSI_DATA_VECTOR_MASK
from vmm.locks import ordered_lock
from xen import abi
from xen.hypercall import XenError
from xen.trace_events import (
    TP_XEN_PIRQ_MAP as TP_MAP,
    TP_XEN_PIRQ_UNMAP as TP_UNMAP,
    TP_XEN_PIRQ_BIND as TP_BIND,
    TP_XEN_PIRQ_UNBIND as TP_UNBIND,
    TP_XEN_PIRQ_ASSERT as TP_ASSERT,
    TP_XEN_PIRQ_MSI_SNOOP as TP_MSI_SNOOP,
    TP_XEN_PIRQ_DELIVER as TP_DELIVER,
    TP_XEN_PIRQ_EOI as TP_EOI,
    TP_XEN_PIRQ_REASSERT as TP_REASSERT,
)

if TYPE_CHECKING:
    from vmm.irqchip import IrqChip, MsiVector
    from xen.evtchn import EventChannels

# xen/arch/x86/include/asm/irq.h: values of struct pirq's arch.hvm.emuirq besides a GSI.
IRQ_UNBOUND = -1
IRQ_MSI_EMU = -3
# xen/arch/x86/include/asm/hvm/irq.h: ISA IRQs are edge triggered (no re-assert on EOI).
NR_ISA_IRQS = 16


def msi_pirq(address: int, data: int) -> int | None:
    """The PIRQ a vector-0 MSI names, or None if it is an ordinary MSI.
    xen/arch/x86/hvm/irq.c hvm_inject_msi: ``pirq = ((addr >> 32) & 0xffffff00) | dest``,
    dest = address bits 19:12 (Linux: arch/x86/pci/xen.c xen_msi_compose_msg)."""
    if data & MSI_DATA_VECTOR_MASK:
        return None
    return ((address >> 32) & 0xFFFFFF00) | ((address >> MSI_ADDR_DEST_ID_SHIFT) & MSI_ADDR_DEST_ID_MASK)


@dataclass
class Pirq:
    """Xen's struct pirq for an emulated interrupt."""
    emuirq: int = IRQ_UNBOUND      # the GSI, IRQ_MSI_EMU or IRQ_UNBOUND
    allocated: bool = False        # PHYSDEVOP_get_free_pirq: arch.irq = PIRQ_ALLOCATED
    port: int = 0                  # the bound event channel (pirq->evtchn), 0: none
    vcpu: int = 0                  # that port's notify vCPU (for KVM routes: cached under both locks)

    def describe(self) -> str:
        if self.emuirq == IRQ_MSI_EMU:
            return "msi"
        return f"gsi {self.emuirq}" if self.emuirq >= 0 else "unmapped"


class PirqTable:
    """The domain's PIRQs; also the irqchip's InterruptDiverter (vmm/irqchip.py)."""

    def __init__(self, irqchip: "IrqChip", evtchn: "EventChannels", nr_pirqs: int, nr_gsis: int):
        # The chip it diverts for (redrive, MSI route rebuilds) and the ports it delivers to.
        self.irqchip = irqchip
        self.evtchn = evtchn
        self.nr_pirqs = nr_pirqs
        # Xen's nr_irqs_gsi is the host's GSI count; ours is the guest's I/OAPIC pins.
        self.nr_gsis = nr_gsis
        self.lock = ordered_lock("xen.pirq")
        self.pirqs: dict[int, Pirq] = {}
        self.emuirq_pirq: dict[int, int] = {}           # GSI or IRQ_MSI_EMU -> pirq
        self.gsi_level: dict[int, bool | None] = {}      # mapped GSI -> its line (None: not yet seen)
        self.msi_vectors: dict[int, "MsiVector"] = {}    # pirq -> the vector programmed with it

    # ------------------------------------------------------------ Xen's helpers (irq.c)
    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Primary: every PIRQ (mapping, allocation, bound port and its vCPU), the GSI map and
        the mapped GSIs' line levels.  The MSI snoop records are derived (the PCI functions
        tell their vectors again), so are KVM's routes."""
        with self.lock:
            return {"pirqs": {str(n): dataclasses.asdict(p) for n, p in self.pirqs.items()},
                    "emuirq_pirq": {str(k): v for k, v in self.emuirq_pirq.items()},
                    "gsi_level": {str(k): v for k, v in self.gsi_level.items()}}

    def restore(self, state: dict) -> None:
        with self.lock:
            self.pirqs = {int(n): Pirq(**p) for n, p in state["pirqs"].items()}
            self.emuirq_pirq = {int(k): v for k, v in state["emuirq_pirq"].items()}
            self.gsi_level = {int(k): v for k, v in state["gsi_level"].items()}
            self.msi_vectors = {}

    def rebuilt(self) -> None:
        """Derived, with no lock held: the mapped GSIs' pins asked again (a level line still
        high and awaiting EOI stays as it was: its level is primary), the irqfd routes."""
        with self.lock:
            gsis = [g for g in self.emuirq_pirq if g >= 0]
        for gsi in gsis:
            self.irqchip.redrive(gsi)
        self.irqchip.rebuild_msi_routes()

    def _is_free(self, pirq: int) -> bool:
        """irq.c is_free_pirq: no entry, or neither reserved nor mapped (a bound port doesn't count)."""
        info = self.pirqs.get(pirq)
        return info is None or (not info.allocated and info.emuirq == IRQ_UNBOUND)

    def _get_info(self, pirq: int) -> Pirq:
        """irq.c pirq_get_info: the entry, created if absent."""
        info = self.pirqs.get(pirq)
        if info is None:
            info = self.pirqs[pirq] = Pirq()
        return info

    def _cleanup(self, pirq: int) -> None:
        """irq.c pirq_cleanup_check (and its !evtchn guard): drop an entry back at its defaults."""
        info = self.pirqs.get(pirq)
        if info is not None and not info.port and not info.allocated and info.emuirq == IRQ_UNBOUND:
            del self.pirqs[pirq]

    def _get_free(self, typ: int) -> int:
        """irq.c get_free_pirq: a GSI-type PIRQ is taken upwards from 16 among the GSI
        numbers, anything else (and GSI type once those are used) downwards from the top."""
        if typ == abi.MAP_PIRQ_TYPE_GSI:
            for p in range(NR_ISA_IRQS, min(self.nr_gsis, self.nr_pirqs)):
                if self._is_free(p):
                    self._get_info(p)
                    return p
        for p in range(self.nr_pirqs - 1, self.nr_gsis - 1, -1):
            if self._is_free(p):
                self._get_info(p)
                return p
        return -abi.XenErrno.ENOSPC

    def _map_emuirq(self, pirq: int, emuirq: int) -> int:
        """irq.c map_domain_emuirq_pirq; returns 0 or -errno.

        As in Xen, a PIRQ or GSI already mapped elsewhere is left alone and 0 returned
        ("already mapped" is only a warning there).  IRQ_MSI_EMU is a key of the reverse
        tree like a GSI, so only one PIRQ at a time is recorded as mapped for MSI
        emulation; the others still get their MSIs (hvm_inject_msi sends to any PIRQ
        that has an entry, e.g. because it is bound)."""
        if not 0 <= pirq < self.nr_pirqs:
            return -abi.XenErrno.EINVAL
        info = self.pirqs.get(pirq)
        old_emuirq = info.emuirq if info else IRQ_UNBOUND
        old_pirq = self.emuirq_pirq.get(emuirq, IRQ_UNBOUND)
        if ((old_emuirq != IRQ_UNBOUND and old_emuirq != emuirq)
                or (old_pirq != IRQ_UNBOUND and old_pirq != pirq)):
            if TP_MAP.enabled:
                TP_MAP.emit(pirq=pirq, what=Pirq(emuirq).describe(), result="already mapped: unchanged")
            return 0
        info = self._get_info(pirq)
        self.emuirq_pirq[emuirq] = pirq
        info.emuirq = emuirq
        if emuirq >= 0:
            self.gsi_level[emuirq] = None        # learnt from the chip's redrive
        if TP_MAP.enabled:
            TP_MAP.emit(pirq=pirq, what=info.describe(), result="ok")
        return 0

    def _unmap_emuirq(self, pirq: int) -> int | None:
        """irq.c unmap_domain_pirq_emuirq for a mapped PIRQ; returns the GSI it had (or None)."""
        info = self.pirqs[pirq]
        emuirq = info.emuirq
        info.emuirq = IRQ_UNBOUND
        if self.emuirq_pirq.get(emuirq) == pirq:
            del self.emuirq_pirq[emuirq]
        if TP_UNMAP.enabled:
            TP_UNMAP.emit(pirq=pirq, what=Pirq(emuirq).describe())
        self._cleanup(pirq)
        if emuirq >= 0:
            self.gsi_level.pop(emuirq, None)
            return emuirq
        return None

    # ------------------------------------------------------------ PHYSDEVOP_* (physdev.c)
    def map_gsi(self, gsi: int, pirq: int) -> tuple[int, int]:
        """physdev_hvm_map_pirq, MAP_PIRQ_TYPE_GSI: returns (rc, pirq written back)."""
        if not 0 <= gsi < self.nr_gsis:
            # Xen: *index >= NR_HVM_DOMU_IRQS (its vIOAPIC's 48 pins); ours has nr_gsis.
            return -abi.XenErrno.EINVAL, pirq
        with self.lock:
            if pirq < 0:
                pirq = self._get_free(abi.MAP_PIRQ_TYPE_GSI)
            rc = self._map_emuirq(pirq, gsi)
        if rc == 0:
            # Take the GSI over now (or re-learn its level): the chip calls divert_gsi.
            self.irqchip.redrive(gsi)
        return rc, pirq

    def unmap(self, pirq: int) -> None:
        """physdev_unmap_pirq for our own HVM domain: 0 whatever the PIRQ (unmapped or
        out of range: domain_pirq_to_emuirq is IRQ_UNBOUND, nothing is done)."""
        gsi = None
        with self.lock:
            info = self.pirqs.get(pirq)
            if info is None or info.emuirq == IRQ_UNBOUND:
                return
            was_msi = info.emuirq == IRQ_MSI_EMU
            gsi = self._unmap_emuirq(pirq)
        chip = self.irqchip
        if gsi is not None:
            chip.redrive(gsi)             # the line goes back to the I/OAPIC at its level
        elif was_msi:
            chip.rebuild_msi_routes()

    def get_free(self, typ: int) -> int:
        """PHYSDEVOP_get_free_pirq: reserve and return a PIRQ (any type but GSI counts as MSI)."""
        with self.lock:
            p = self._get_free(typ)
            if p >= 0:
                self.pirqs[p].allocated = True
        if p < 0:
            raise XenError(-p, "no free pirq")
        if TP_MAP.enabled:
            TP_MAP.emit(pirq=p, what="reserved", result=f"type={typ}")
        return p

    def status_flags(self, pirq: int) -> int:
        """PHYSDEVOP_irq_status_query: a GSI PIRQ needs an EOI (a level line still high is
        sent again then); an MSI PIRQ does not.

        Deliberate deviation: Xen's physdev.c sets XENIRQSTAT_needs_eoi for every mapped
        PIRQ, because a *machine* MSI may need unmasking after a guest EOI ("In practice,
        this only really makes a difference for maskable MSI sources").  An emulated MSI
        has no machine IRQ: the EOI would do nothing here, but Linux
        (events_base.c eoi_pirq) would issue it after every interrupt, a userspace exit
        per MSI that the kernel fast path (irqfd + KVM_IRQ_ROUTING_XEN_EVTCHN) exists to
        avoid.  QEMU answers the same way (xen_physdev_query_pirq: GSI PIRQs only).
        XENIRQSTAT_shared is never set for emulated PIRQs."""
        if not 0 <= pirq < self.nr_pirqs:
            raise XenError(abi.XenErrno.EINVAL, f"pirq {pirq}")
        with self.lock:
            info = self.pirqs.get(pirq)
            if info is None or info.emuirq == IRQ_UNBOUND:
                raise XenError(abi.XenErrno.EINVAL, f"pirq {pirq} is not mapped")
            is_gsi = info.emuirq >= 0
        return abi.XENIRQSTAT_needs_eoi if is_gsi else 0

    def eoi(self, pirq: int) -> None:
        """PHYSDEVOP_eoi: a level GSI (>= 16) still asserted is sent again."""
        if not 0 <= pirq < self.nr_pirqs:
            raise XenError(abi.XenErrno.EINVAL, f"pirq {pirq}")
        with self.lock:
            info = self.pirqs.get(pirq)
            if info is None:
                raise XenError(abi.XenErrno.EINVAL, f"pirq {pirq}: no such pirq")
            gsi = info.emuirq
            again = gsi >= NR_ISA_IRQS and bool(self.gsi_level.get(gsi))
        if TP_EOI.enabled:
            TP_EOI.emit(pirq=pirq, result=f"{info.describe()} re-assert" if again else info.describe())
        if again:
            if TP_REASSERT.enabled:
                TP_REASSERT.emit(pirq=pirq, gsi=gsi)
            self.evtchn.deliver_pirq(pirq, "eoi")

    # ------------------------------------------------------------ event channels (port lock held)
    def bind(self, pirq: int, port: int) -> "MsiVector | None":
        """EVTCHNOP_bind_pirq's table half (port lock held): -EEXIST if already bound.
        Returns the MSI vector to unmask once every lock is released, if any."""
        with self.lock:
            info = self._get_info(pirq)
            if info.port:
                raise XenError(abi.XenErrno.EEXIST, f"pirq {pirq} already bound to port {info.port}")
            info.port, info.vcpu = port, 0
            vec = self.msi_vectors.get(pirq)
        if TP_BIND.enabled:
            TP_BIND.emit(pirq=pirq, port=port, detail=info.describe() + (f" msi={vec.name}" if vec else ""))
        return vec if vec is not None and vec.masked and not vec.removed else None

    def is_bound(self, pirq: int) -> bool:
        with self.lock:
            info = self.pirqs.get(pirq)
            return bool(info and info.port)

    def unbound(self, pirq: int, port: int) -> None:
        """evtchn_close of a PIRQ port (port lock held): the mapping stays (event_channel.c:
        an emulated PIRQ has no machine irq, so unmap_domain_pirq_emuirq isn't called)."""
        with self.lock:
            info = self.pirqs.get(pirq)
            if info is None or info.port != port:
                return
            info.port = 0
            self._cleanup(pirq)
        if TP_UNBIND.enabled:
            TP_UNBIND.emit(pirq=pirq, port=port)

    def moved(self, pirq: int, vcpu: int) -> None:
        """EVTCHNOP_bind_vcpu of a PIRQ port (port lock held)."""
        with self.lock:
            info = self.pirqs.get(pirq)
            if info is not None:
                info.vcpu = vcpu

    def port_of(self, pirq: int) -> int:
        """The bound port (0: none).  Callers hold the port lock, so it can't change under them."""
        with self.lock:
            info = self.pirqs.get(pirq)
            return info.port if info else 0

    def routes_changed(self) -> None:
        """After bind/close/bind_vcpu/unmap, with no lock held: recompute irqfd routes."""
        self.irqchip.rebuild_msi_routes()

    # ------------------------------------------------------------ InterruptDiverter (vmm/irqchip.py)
    def _delivery(self, pirq: int, via: str) -> Callable[[], None]:
        evtchn = self.evtchn
        return lambda: evtchn.deliver_pirq(pirq, via)

    def divert_gsi(self, gsi: int, level: bool):
        """Line lock held.  A mapped GSI never reaches the I/OAPIC; its rising edge is
        delivered (hvm/irq.c: assert_gsi when gsi_assert_count goes 0 -> 1)."""
        with self.lock:
            pirq = self.emuirq_pirq.get(gsi)
            if pirq is None:
                return None
            was = self.gsi_level.get(gsi)
            self.gsi_level[gsi] = level
        # was None: the chip's redrive right after map_pirq tells us the line's level;
        # Xen doesn't send then either (a level GSI arrives at the guest's first EOI).
        edge = level and was is False
        if TP_ASSERT.enabled:
            TP_ASSERT.emit(gsi=gsi, level=int(level), pirq=pirq,
                           result="sent" if edge else ("level learnt" if was is None else ""))
        return [self._delivery(pirq, f"gsi {gsi}")] if edge else []

    def divert_msi(self, address: int, data: int):
        """Line lock held.  hvm/irq.c hvm_inject_msi: a vector-0 message is Xen's whatever
        becomes of it (pirq 0: -ERANGE; out of range or mapped to a GSI: -EINVAL, dropped)."""
        pirq = msi_pirq(address, data)
        if pirq is None:
            return None
        result, work = "", []
        with self.lock:
            info = self.pirqs.get(pirq)
            if pirq == 0:
                result = "pirq 0: dropped (-ERANGE)"
            elif info is None or info.emuirq == IRQ_UNBOUND:
                rc = self._map_emuirq(pirq, IRQ_MSI_EMU)       # "the first time, allocate the pirq"
                if rc:
                    result = f"dropped ({rc})"
                elif pirq not in self.pirqs:
                    result = "dropped (-EBUSY)"
                else:
                    work = [self._delivery(pirq, "msi")]
            elif info.emuirq != IRQ_MSI_EMU:
                result = f"dropped: mapped to gsi {info.emuirq} (-EINVAL)"
            else:
                work = [self._delivery(pirq, "msi")]
        if result and TP_DELIVER.enabled:
            TP_DELIVER.emit(pirq=pirq, port=0, via="msi", result=result)
        return work

    def msi_vector_changed(self, vec: "MsiVector") -> None:
        """Snoop: remember which vector carries which PIRQ (bind_pirq unmasks it)."""
        pirq = None if vec.removed else msi_pirq(vec.address, vec.data)
        with self.lock:
            old = [p for p, v in self.msi_vectors.items() if v is vec and p != pirq]
            for p in old:
                del self.msi_vectors[p]
            if pirq is not None and 0 < pirq < self.nr_pirqs:
                self.msi_vectors[pirq] = vec
            else:
                pirq = None
        if TP_MSI_SNOOP.enabled and (old or pirq is not None):
            what = "removed" if vec.removed else ("masked" if vec.masked else "unmasked")
            TP_MSI_SNOOP.emit(vec=vec.name, pirq=pirq if pirq is not None else f"none (was {old})", what=what)

    def msi_route(self, vec: "MsiVector", gsi: int):
        """Chip lock held.  A PIRQ-encoded vector is ours: with KVM's Xen support and a
        bound port, KVM delivers to the port itself; otherwise it stays in userspace
        (fire() -> send_msi -> divert_msi)."""
        pirq = msi_pirq(vec.address, vec.data)
        if pirq is None:
            return None
        if self.evtchn.kernel_delivery is None:      # no acceleration, or not 2-level
            return False
        with self.lock:
            info = self.pirqs.get(pirq)
            if (pirq == 0 or info is None or not info.port
                    or info.emuirq not in (IRQ_UNBOUND, IRQ_MSI_EMU)):
                return False
            if info.emuirq == IRQ_UNBOUND:
                # KVM will deliver without asking us: map it as the first inject would.
                self._map_emuirq(pirq, IRQ_MSI_EMU)
            return XenEvtchnRoute(gsi, info.port, info.vcpu)


__all__ = ["PirqTable", "Pirq", "msi_pirq", "IRQ_UNBOUND", "IRQ_MSI_EMU", "NR_ISA_IRQS"]
