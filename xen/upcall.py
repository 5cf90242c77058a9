"""Upcall delivery: how "you have events" reaches a vCPU.

Xen's order (xen/arch/x86/hvm/irq.c hvm_assert_evtchn_irq):

1. **per-vCPU vector** (HVMOP_set_evtchn_upcall_vector) — a LAPIC fixed,
   edge interrupt on that vCPU; the guest EOIs it.  Takes precedence over
   HVM_PARAM_CALLBACK_IRQ, which Linux sets to GSI 1 anyway "to trick the
   toolstack" after choosing the per-vCPU vector.
2. **global vector** (CALLBACK_IRQ type 2) — injected like an ExtINT: no LAPIC
   ISR bit, no EOI.  We inject it with KVM_SET_VCPU_EVENTS when KVM reports an
   interrupt window (needs the split irqchip: KVM ignores window requests when
   the PIC is in the kernel), on the vCPU's own thread.
3. **GSI** (type 0) and **PCI INTx** (type 1, through the Xen platform
   device's pin) — only vCPU 0's evtchn_upcall_pending drives the line: we
   raise it on delivery and drop it once the guest has cleared
   upcall_pending (checked on the line's EOI, after every hypercall, and
   by a poll while it stays high).  The level goes straight to the IrqChip,
   never through event-channel or PIRQ code: delivering an event can't
   re-enter the port lock (QEMU's first deadlock).

A per-vCPU vector sent to a LAPIC that is still software-disabled is *held*, not
lost: Xen's vlapic_set_irq sets the IRR bit whatever the LAPIC's state and the
vector is taken once the guest enables it, but KVM's LAPIC refuses a fixed
interrupt while disabled (__apic_accept_irq; KVM_SIGNAL_MSI then returns 0).
Linux registers vCPU 0's vector in xen_init_IRQ, before it enables its LAPIC, with
an event already pending; since later events only raise the upcall on
upcall_pending's 0 -> 1 edge, a refused vector would stop every upcall for good.
So a refused vector is re-sent, with a growing delay, until the LAPIC takes it or
the guest clears upcall_pending.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from kvm_bindings import KvmError, consts
from vmm.irqchip import IrqChipError, msi_address
from vmm.locks import ordered_lock
from xen import abi
from xen.trace_events import TP_XEN_EVTCHN_UPCALL as TP_UPCALL, TP_XEN_CALLBACK as TP_CALLBACK

if TYPE_CHECKING:
    from xen.shared_info import SharedInfo



class Upcall:
    """``shared``: where upcall_pending is read; ``accel``: KvmXenAccel when KVM injects
    vectors itself (accel_full), else None; ``intx_gsi(value)``: the GSI of a PCI_INTX
    callback (None without a PCI bus); ``is_running()``: False once the VM ends."""

    def __init__(self, vm, shared: "SharedInfo", accel=None,
                 intx_gsi: Callable[[int], int | None] = lambda value: None,
                 is_running: Callable[[], bool] = lambda: True):
        self.vm = vm
        self.shared = shared
        self.accel = accel
        self._intx_gsi = intx_gsi
        self._is_running = is_running
        self.vectors: dict[int, int] = {}     # per-vCPU upcall vectors
        self.via_type: int | None = None      # HVM_PARAM_CALLBACK_IRQ type
        self.via_value = 0
        self.gsi: int | None = None           # the callback line (types 0/1)
        self._line = False
        self._lock = ordered_lock("xen.upcall")   # the callback line and the held vectors
        self._callback_line = None            # our IrqLine on self.gsi (never diverted)
        self._window_pending: set[int] = set()
        self._held: dict[int, threading.Timer] = {}   # vCPU -> retry of a refused vector
        self._poll: threading.Timer | None = None
        self._kvm_global_vector = False       # KVM injects the global vector (acceleration)
        # Per vCPU, how many upcalls were raised: Xen's vcpu_kick, which ends SCHEDOP_block
        # and poll whatever the guest's IF (sched_op compares before and after).
        self.kicks = [0] * len(self.vm.vcpus)
        # Told (no lock held) when what kvm_raises() answers may have changed: the vCPU
        # timers KVM runs follow (xen/kvm_timer.py).
        self.changed: Callable[[], None] = lambda: None
        for v in self.vm.vcpus:
            v.irq_window.add_client(self._window_open)     # shared with the PIC's ExtINT (vmm/extint.py)

    # ------------------------------------------------------------ configuration
    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Primary: the per-vCPU vectors and the callback via (HVM_PARAM_CALLBACK_IRQ's value)."""
        with self._lock:
            return {"vectors": {str(k): v for k, v in self.vectors.items()}, "via_type": self.via_type,
                    "via_value": self.via_value}

    def restore(self, state: dict) -> None:
        self._saved = state

    def rebuilt(self) -> None:
        """Derived: the callback line (and its EOI listener) from the via; KVM's vectors;
        an upcall raised again wherever evtchn_upcall_pending is set."""
        state = self._saved
        if state["via_type"] is not None:
            self.set_callback_irq(state["via_value"])
        for vcpu, vector in state["vectors"].items():
            self.set_vector(int(vcpu), vector)          # delivers if events are pending

    def set_vector(self, vcpu: int, vector: int) -> None:
        """HVMOP_set_evtchn_upcall_vector.  Like Xen (hvm_assert_evtchn_irq right
        after setting it), deliver at once if events are already pending."""
        self.vectors[vcpu] = vector
        if self.accel is not None:
            self.accel.upcall_vector(vcpu, vector)
        if self.shared.upcall_pending(vcpu):
            self.inject(vcpu)
        self.changed()

    def kvm_raises(self, vcpu: int) -> bool:
        """Does KVM raise ``vcpu``'s upcall itself after an event it delivers in the kernel
        (its timer: xen/kvm_timer.py)?  For a per-vCPU vector and a global vector KVM
        took, yes.  vCPU 0's callback line (GSI/INTx) and a global vector KVM refused are
        ours to raise (after_kvm_delivery), which such a delivery never calls.  (Other
        vCPUs get no upcall from a callback line, on Xen either.)"""
        if vcpu in self.vectors:
            return True
        if self.via_type == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR:
            return self._kvm_global_vector
        return not (vcpu == 0 and self.gsi is not None)

    def set_callback_irq(self, value: int) -> None:
        """HVM_PARAM_CALLBACK_IRQ (params.h: type in bits 63:56)."""
        via_type = abi.callback_irq_type(value)
        new_type: int | None = via_type
        new_gsi: int | None = None
        detail = ""
        if value == 0:
            new_type = None
        elif via_type == abi.HVM_PARAM_CALLBACK_TYPE_GSI:
            # val[55:0] (params.h).  Xen's hvm_set_callback_via keeps only (uint8_t)via, so
            # 0x105 aliases GSI 5 there; here a GSI beyond the pins names none (no guest we
            # know sets those bits).
            gsi = abi.callback_irq_gsi(value)
            if 0 < gsi < self.vm.irqchip.nr_pins:
                new_gsi = gsi
            detail = f"gsi={gsi}"
        elif via_type == abi.HVM_PARAM_CALLBACK_TYPE_PCI_INTX:
            new_gsi = self._intx_gsi(value)
            detail = f"intx -> gsi {new_gsi}"
        elif via_type != abi.HVM_PARAM_CALLBACK_TYPE_VECTOR:
            new_type = None
            detail = "unsupported type"
        # Drop the old line and switch in one step under the line's lock: a delivery
        # racing with us then raises either the old line before it drops, or the new one.
        with self._lock:
            old_gsi = self.gsi
            if old_gsi is not None and self._line:
                self._callback_line.set(False)
            self._line = False
            self.via_type, self.via_value, self.gsi = new_type, value, new_gsi
            # The callback GSI is never diverted to a PIRQ: delivering an event can't
            # loop back into event-channel code (QEMU's deadlock 1).
            self._callback_line = (self.vm.irqchip.line(new_gsi, "xen-callback", divertible=False)
                                   if new_gsi is not None else None)
        if old_gsi is not None:                            # one EOI listener, on the current line
            self._eoi_listener(old_gsi, self.maybe_deassert, add=False)
        if TP_CALLBACK.enabled:
            TP_CALLBACK.emit(type=via_type, value=value, detail=detail)
        if self.accel is not None:        # KVM injects the global vector itself, at VM entry
            vector = abi.callback_irq_vector(value) if self.via_type == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR else 0
            try:
                self.accel.global_vector(vector)
                self._kvm_global_vector = bool(vector)
            except KvmError:
                # KVM refuses vectors 1..15 (Xen takes any): we inject that one ourselves.
                self.accel.global_vector(0)
                self._kvm_global_vector = False
        if self.gsi is not None:
            self._eoi_listener(self.gsi, self.maybe_deassert)
            self.maybe_deassert(raise_if_pending=True)
        elif self.via_type == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR:
            for v in range(len(self.vm.vcpus)):
                if v not in self.vectors and self.shared.upcall_pending(v):
                    self.inject(v)
        self.changed()

    def _eoi_listener(self, gsi: int, fn: Callable[[], None], add: bool = True) -> None:
        try:
            if add:
                self.vm.irqchip.add_eoi_listener(gsi, fn)
            else:
                self.vm.irqchip.remove_eoi_listener(gsi, fn)
        except IrqChipError:
            pass   # kernel irqchip: the poll below does the deassert

    # ------------------------------------------------------------ delivery
    def inject(self, vcpu: int) -> None:
        """upcall_pending went 0 -> 1 on ``vcpu``: raise its upcall."""
        self.kicks[vcpu] += 1
        vector = self.vectors.get(vcpu)
        if vector is not None:
            via = f"vector {vector:#x}" if self._send_vector(vcpu, vector) else \
                f"vector {vector:#x} held: the LAPIC refused it (software-disabled)"
        elif self.via_type == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR:
            via = f"global vector {abi.callback_irq_vector(self.via_value):#x}"
            if self._kvm_global_vector:
                self.vm.vcpus[vcpu].call(lambda v: None, wait=False)   # KVM checks upcall_pending at entry
            else:
                self._request_window(vcpu)
        elif self.gsi is not None and vcpu == 0:
            via = f"gsi {self.gsi}"
            self._set_line(True)
        else:
            via = "none"
        if TP_UPCALL.enabled:
            TP_UPCALL.emit(vcpu=vcpu, via=via)

    # -- per-vCPU vector: a LAPIC fixed interrupt, held while the LAPIC refuses it
    def _send_vector(self, vcpu: int, vector: int) -> bool:
        """Send ``vector`` to ``vcpu`` (our APIC IDs are vCPU indices).  False: refused,
        and a retry is armed (see the module docstring)."""
        if self.vm.irqchip.lapic_msi(msi_address(vcpu), vector):
            return True
        self._hold(vcpu, 0.001)
        return False

    def _hold(self, vcpu: int, delay: float) -> None:
        def retry() -> None:
            with self._lock:
                if self._held.get(vcpu) is not timer:
                    return
                del self._held[vcpu]
            vector = self.vectors.get(vcpu)
            if vector is None or not self._is_running() or not self.shared.upcall_pending(vcpu):
                return                     # nothing to deliver any more
            try:
                taken = self.vm.irqchip.lapic_msi(msi_address(vcpu), vector)
            except KvmError:
                return                     # the VM is being torn down
            if taken:
                if TP_UPCALL.enabled:
                    TP_UPCALL.emit(vcpu=vcpu, via=f"vector {vector:#x} (held, now taken)")
            else:
                self._hold(vcpu, min(delay * 2, 0.05))

        with self._lock:
            if vcpu in self._held:
                return                     # a retry is armed already
            timer = threading.Timer(delay, retry)
            timer.name = "xen-upcall-retry"
            timer.daemon = True
            self._held[vcpu] = timer
        timer.start()

    def after_kvm_delivery(self, vcpu: int) -> None:
        """KVM delivered an event: it raised any vector upcall itself, but a GSI/INTx
        callback line is ours to drive."""
        self.kicks[vcpu] += 1
        if (self.gsi is not None and vcpu == 0 and 0 not in self.vectors      # the vector takes precedence
                and self.via_type != abi.HVM_PARAM_CALLBACK_TYPE_VECTOR
                and self.shared.upcall_pending(0)):
            self._set_line(True)
        elif (self.via_type == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR and not self._kvm_global_vector
              and vcpu not in self.vectors and self.shared.upcall_pending(vcpu)):
            self._request_window(vcpu)          # a global vector KVM refused (< 0x10)

    # -- global vector: wait for an interrupt window, then inject like ExtINT
    def _request_window(self, vcpu: int) -> None:
        self._window_pending.add(vcpu)
        self.vm.vcpus[vcpu].call(self._arm_window, wait=False)

    def _arm_window(self, v) -> None:
        if v.id not in self._window_pending:
            return
        try:
            if v.fd.get_mp_state() == consts.KVM_MP_STATE_HALTED:
                v.fd.set_mp_state(consts.KVM_MP_STATE_RUNNABLE)   # an interrupt ends HLT
        except KvmError:
            pass
        v.irq_window.want(self._window_open)

    def _window_open(self, v) -> bool:
        """KVM_EXIT_IRQ_WINDOW_OPEN.  The global vector is level-like on Xen (and in
        KVM's own implementation): it is injected at any VM entry with interrupts
        open while evtchn_upcall_pending is set.  So after an injection we keep
        asking for windows; the next one, after the handler's iret, injects again
        if the guest left upcall_pending set, or stops asking."""
        run = v.fd.run
        if not (run.ready_for_interrupt_injection and run.if_flag):
            return False                                      # keep asking
        fresh = v.id in self._window_pending
        if self.via_type != abi.HVM_PARAM_CALLBACK_TYPE_VECTOR or v.id in self.vectors or not (
                fresh or self.shared.upcall_pending(v.id)):
            v.irq_window.want(self._window_open, False)
            self._window_pending.discard(v.id)
            return False
        ev = v.fd.get_vcpu_events()
        if ev.interrupt.injected:
            return False
        ev.interrupt.injected = 1
        ev.interrupt.nr = abi.callback_irq_vector(self.via_value)
        ev.interrupt.soft = 0
        ev.flags = 0
        v.fd.set_vcpu_events(ev)
        self._window_pending.discard(v.id)
        if TP_UPCALL.enabled and not fresh:
            TP_UPCALL.emit(vcpu=v.id, via=f"global vector {abi.callback_irq_vector(self.via_value):#x} (still pending)")
        return True

    # -- GSI / INTx line following vCPU 0's upcall_pending
    def _set_line(self, level: bool) -> None:
        """Raise or lower the callback line.  Delivery (raising) and the poll/EOI
        (lowering) run on different threads: a lower re-reads upcall_pending and
        the line is driven under the lock, so a lower decided before an event
        arrived can't land after that event's raise."""
        with self._lock:
            if self.gsi is None or level == self._line:
                return
            if level and 0 in self.vectors:
                return      # vCPU 0's vector takes precedence (hvm_assert_evtchn_irq): no GSI
            if not level and self.shared.upcall_pending(0):
                return
            self._line = level
            self._callback_line.set(level)   # lock order: Upcall._lock > irqchip.line
        if level:
            self._start_poll()

    def maybe_deassert(self, raise_if_pending: bool = False) -> None:
        if self.gsi is None:
            return
        pending = self.shared.upcall_pending(0)
        if not pending:
            self._set_line(False)
        elif raise_if_pending:
            self._set_line(True)

    def _start_poll(self) -> None:
        if self._poll is not None and self._poll.is_alive():
            return

        def poll():
            self._poll = None
            self.maybe_deassert()
            if self._line and self._is_running():
                self._start_poll()
        self._poll = threading.Timer(0.002, poll)
        self._poll.name = "xen-callback-poll"     # one trace track for all of them, not Thread-N
        self._poll.daemon = True
        self._poll.start()
