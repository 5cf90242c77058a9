"""Interrupts userspace injects at KVM's interrupt window: the shared window, and ExtINT.

With the split irqchip KVM has the LAPICs but no PIC, and two ways for userspace to put
an interrupt into a vCPU outside the LAPIC (Documentation/virt/kvm/api.rst):

* ``KVM_INTERRUPT`` -- "queues a hardware interrupt vector to be injected": with the
  split irqchip KVM keeps one pending external vector (``pending_external_vector``,
  EEXIST while it waits) and injects it as an ExtINT arriving through LINT0, i.e. only
  while the LAPIC's LVT0 is unmasked in ExtINT mode (or the LAPIC is off:
  arch/x86/kvm/lapic.c kvm_apic_accept_pic_intr) and the guest has interrupts open.
* ``KVM_SET_VCPU_EVENTS`` with an injected interrupt (Xen's global callback vector).

Either is done on the vCPU's own thread between two KVM_RUNs, when ``kvm_run`` says the
vCPU can take one (``ready_for_interrupt_injection`` -- no external vector pending and
LINT0 accepting -- and ``if_flag``); otherwise userspace sets
``request_interrupt_window`` and KVM exits with KVM_EXIT_IRQ_WINDOW_OPEN as soon as it
can (arch/x86/kvm/x86.c vcpu_run, dm_request_for_irq_injection).  QEMU does the same
for its userspace PIC (target/i386/kvm/kvm.c kvm_arch_pre_run).

:class:`InterruptWindow` -- one per vCPU (``Vcpu.irq_window``) -- shares the one
request flag and the one exit among its clients (the PIC's :class:`ExtIntInjector`,
xen/upcall.py's global vector): the flag is set while any client wants a window, and at
the window each wanting client, in registration order, is offered it until one
injects (KVM takes one interrupt per entry; the others get the next window).

:class:`ExtIntInjector` is the wire from a PIC's INT output to vCPU 0's LINT0, as on a
PC where only the BSP's LINT0 is in ExtINT mode.  The PIC says when INT may have risen
(``raise_``, any thread, after releasing its lock); on vCPU 0's thread the injector
runs the INTA cycle (``source.acknowledge()``: IRR -> ISR, the vector) and
``KVM_INTERRUPT`` once the vCPU can take it, then asks for another window while INT
stays high.  The acknowledge happens at that moment, not at the CPU's INTA: the
guest can't tell the difference, since the vCPU is between two instructions with
interrupts open either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from kvm_bindings import KvmError, consts
from vmm.errors import internal_error
from vmm.trace_events import TP_IRQ_EXTINT as TP_EXTINT

if TYPE_CHECKING:
    from vmm.vcpu import Vcpu

WindowClient = Callable[["Vcpu"], bool]     # offered a window: True if it injected


class InterruptWindow:
    """One vCPU's interrupt window, shared.  ``want`` and the window run on the vCPU's
    own thread (or while it is borrowed through ``Vcpu.call``), so no lock."""

    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self._clients: list[WindowClient] = []
        self._wanting: set[WindowClient] = set()
        vcpu.exit_handlers[consts.KVM_EXIT_IRQ_WINDOW_OPEN] = self._open

    def add_client(self, client: WindowClient) -> None:
        """``client(vcpu) -> bool`` is offered windows it asked for, after earlier clients."""
        self._clients.append(client)

    def want(self, client: WindowClient, on: bool = True) -> None:
        if on:
            self._wanting.add(client)
        else:
            self._wanting.discard(client)
        run = self.vcpu.fd.run
        if run is not None:
            run.request_interrupt_window = 1 if self._wanting else 0

    @property
    def requested(self) -> bool:
        return bool(self._wanting)

    def _open(self, v: "Vcpu") -> None:
        """KVM_EXIT_IRQ_WINDOW_OPEN."""
        for client in self._clients:
            if client in self._wanting and client(v):
                break


class ExtIntSource(Protocol):
    """A PIC's side of the INTR/INTA handshake."""
    def intr(self) -> bool:
        """INT is high: an unmasked request beats what is in service."""
        ...

    def acknowledge(self) -> int | None:
        """The INTA cycle: the vector to inject (IRR -> ISR), None if INT fell meanwhile."""
        ...


class ExtIntInjector:
    """A PIC's INT output -> ``vcpu``'s LINT0 (ExtINT), with the split irqchip."""

    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.source: ExtIntSource | None = None
        self.injected = 0
        vcpu.irq_window.add_client(self._try)

    def attach(self, source: ExtIntSource) -> None:
        self.source = source

    def raise_(self) -> None:
        """INT may have risen.  Any thread; call it with no device lock held (on an idle
        vCPU the work runs right here and takes the PIC's lock)."""
        self.vcpu.call(self._try, wait=False)

    def _try(self, v: "Vcpu") -> bool:
        """On the vCPU's thread: inject if INT is high and the vCPU can take it, else ask
        for a window (or stop asking).  True if it injected."""
        src = self.source
        window = v.irq_window
        if src is None or not src.intr():
            window.want(self._try, False)
            return False
        run = v.fd.run
        if not (run.ready_for_interrupt_injection and run.if_flag):
            window.want(self._try)               # KVM exits when it can take one
            return False
        vector = src.acknowledge()
        if vector is None:
            window.want(self._try, False)
            return False
        try:
            v.fd.interrupt(vector)
        except KvmError as e:                    # ready_for_interrupt_injection promised a free slot
            internal_error(f"vcpu{v.id} ExtINT {vector:#x}", e)
            return False
        self.injected += 1
        if TP_EXTINT.enabled:
            TP_EXTINT.emit(v.id, vector=vector)
        window.want(self._try, src.intr())       # another request behind this one
        return True


__all__ = ["InterruptWindow", "ExtIntInjector", "ExtIntSource", "WindowClient"]
