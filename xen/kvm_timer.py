"""Each vCPU's singleshot timer in KVM: the guest's timer hypercalls cost no exit.

A Linux Xen HVM guest re-arms its clockevent with VCPUOP_set_singleshot_timer at every
tick it needs: 7,182 of the 13,245 exits of a 2-vCPU boot to a shell command (nested test
host, session 7).  KVM can run that timer itself (``KVM_XEN_VCPU_ATTR_TYPE_TIMER``,
Linux 5.18+, arch/x86/kvm/xen.c): once told the vCPU's VIRQ_TIMER port, it answers
VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer and set_timer_op in the
kernel (from CPL 0; with Xen's checks: another vCPU's timer -EINVAL, a past deadline
with VCPU_SSHOTTMR_future -ETIME, set_timer_op's "Linux workaround") and on expiry
sets the port pending in the 2-level bitmap and raises the upcall, as we would.

So a vCPU's timer is KVM's exactly while all of these hold, and ours (xen/time.py
Timers) otherwise:

* KVM delivers events (``EventChannels.kernel_delivery``: full acceleration and the
  2-level ABI; KVM's timer only knows 2-level);
* shared_info is placed (KVM's delivery needs it; before, an event would be lost);
* KVM raises that vCPU's upcall itself (``Upcall.kvm_raises``: a per-vCPU vector or the
  global vector it took); vCPU 0's callback line (GSI/INTx) is ours to drive, and KVM's
  timer would set the event pending without raising it;
* VIRQ_TIMER is bound on that vCPU (the port KVM fires; without one Xen's timer fires
  into nothing, as ours does).

``sync`` decides this from the primary state (the port table) whenever it may have
changed: a VIRQ bound or closed, EVTCHNOP_reset, the ABI switch, shared_info placed, the
callback via or an upcall vector set, a restore.  A deadline moves with the timer: taken from ours when KVM gets it, read back
(``expires_ns``) when we do; a timer KVM fired but did not yet inject keeps its
deadline until injected, so it fires again on our side instead of being lost.  Our
periodic timer (VCPUOP_set_periodic_timer, not in KVM) stays ours.  The moves run on the
vCPU's own thread (``Vcpu.call``: a vCPU attribute can't be set while it is in
KVM_RUN), so they fall between that vCPU's hypercalls; each applies the latest
decision, so moves queued by racing syncs converge.

SCHEDOP_block and a poll we answer park the vCPU's thread outside KVM_RUN, where a
KVM timer's expiry is only noted: the wait ends at its ``deadline`` and KVM injects
the event as the vCPU re-enters.  A snapshot saves KVM's deadlines with ours
(``save``); a restore gives them to ours and ``sync`` moves them back.

Leaving the 2-level ABI (EVTCHNOP_init_control) first takes every timer back and waits
for the moves (``hold``): after the switch, an expiry in KVM would set a 2-level bit the
guest no longer reads.

Lock: ``xen.kvm_timer`` guards the decision and each move; taken with no port lock held
(a decision takes the port lock to read the bindings, a move the timer lock); nobody
waits for a vCPU while holding it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from kvm_bindings import consts, ffi
from vmm.locks import ordered_lock
from xen import abi
from xen.kvm_accel import KvmXenAccel
from xen.trace_events import TP_XEN_KVM as TP_ACCEL

# A vCPU answers a queued call before its next entry; one busy in a long exit of its own
# (the nested test host is slow) gets this long before the caller gives up.
MOVE_TIMEOUT_S = 10.0

if TYPE_CHECKING:
    from xen.evtchn import EventChannels
    from xen.time import Timers


class KvmTimers:
    def __init__(self, vm_vcpus, evtchn: "EventChannels", timers: "Timers", shared_info_placed: Callable[[], bool],
                 kvm_raises: Callable[[int], bool]):
        self._vcpus = vm_vcpus
        self.evtchn = evtchn
        self.timers = timers
        self._placed = shared_info_placed
        self._kvm_raises = kvm_raises
        self._lock = ordered_lock("xen.kvm_timer")
        self.ports: dict[int, int] = {}          # vcpu -> the VIRQ_TIMER port KVM fires (KVM's timers)
        self._held = False                       # an ABI switch in progress: every timer is ours

    # ------------------------------------------------------------ deciding
    def wanted(self) -> dict[int, int]:
        """vcpu -> VIRQ_TIMER port, for the vCPUs whose timer should be KVM's now."""
        ev = self.evtchn
        with ev.lock:
            if self._held or ev.kernel_delivery is None or not self._placed():
                return {}
            bound = {vcpu: port for (vcpu, virq), port in ev.virq_ports.items() if virq == abi.VIRQ_TIMER}
        return {vcpu: port for vcpu, port in bound.items() if self._kvm_raises(vcpu)}

    def sync(self, wait: bool = False) -> None:
        """Decide where each vCPU's timer belongs (``wanted``), then have the vCPUs whose
        place changed apply it.  No lock held by the caller; none held here while a vCPU
        is waited for (``wait``: return once those vCPUs have applied it)."""
        with self._lock:
            want = self.wanted()
            changed = [v for v in sorted(set(want) | set(self.ports)) if want.get(v, 0) != self.ports.get(v, 0)]
            self.ports = want
        for vcpu in changed:
            self._vcpus[vcpu].call(self._apply, wait=wait, timeout=MOVE_TIMEOUT_S)

    def hold(self) -> None:
        """Every timer ours until ``release``, moved back before this returns (the guest
        leaves the 2-level ABI: EVTCHNOP_init_control)."""
        self._held = True
        self.sync(wait=True)

    def release(self) -> None:
        self._held = False
        self.sync()

    # ------------------------------------------------------------ on the vCPU's thread
    def _apply(self, v) -> None:
        """Make KVM's timer of ``v`` fire the port decided last (0: the timer is ours); the
        live deadline follows.  Applying the latest decision, not the one that queued this,
        makes moves queued by racing syncs converge whatever order they run in."""
        with self._lock:
            port = self.ports.get(v.id, 0)
            kvm_port, kvm_deadline = self._get(v)
            if kvm_port == port:
                return
            ours = self.timers.take_singleshot(v.id)
            deadline = kvm_deadline if kvm_port and kvm_deadline else ours
            if port:
                # expires_ns 0 is "none"; a deadline at or before 0 (Xen's s_time_t may be
                # negative) is in the past: 1 ns fires it at once.
                self._set(v, port, 0 if deadline is None else max(deadline, 1))
                where = f"KVM's, firing port {port}"
            else:
                self._set(v, 0, 0)
                if deadline:
                    self.timers.set_singleshot(v.id, deadline)
                where = "the VMM's again"
        if TP_ACCEL.enabled:
            TP_ACCEL.emit(what=f"vcpu{v.id} singleshot timer: {where}"
                               + (f", deadline {deadline} carried" if deadline else ""))

    @staticmethod
    def _get(v) -> tuple[int, int]:
        attr = ffi.new("struct kvm_xen_vcpu_attr *")
        attr.type = consts.KVM_XEN_VCPU_ATTR_TYPE_TIMER
        v.fd.xen_vcpu_get_attr(attr)
        return attr.u.timer.port, attr.u.timer.expires_ns

    @staticmethod
    def _set(v, port: int, expires_ns: int) -> None:
        KvmXenAccel.vcpu_attr(v, consts.KVM_XEN_VCPU_ATTR_TYPE_TIMER,
                              timer=dict(port=port, priority=consts.KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL,
                                         expires_ns=expires_ns))

    def deadline(self, vcpu) -> int | None:
        """KVM's deadline for the vCPU (a ``Vcpu``), read on its own thread; None: not KVM's
        timer, or not armed."""
        if vcpu.id not in self.ports:
            return None
        port, expires = self._get(vcpu)
        return expires if port and expires else None

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict[int, int]:
        """KVM's armed deadlines (vCPUs paused), saved as our singleshot timers."""
        out = {}
        for vcpu in sorted(self.ports):
            port, expires = self._vcpus[vcpu].call(self._get)
            if port and expires:
                out[vcpu] = expires
        return out

    def rebuilt(self) -> None:
        """After a restore: a new KVM has no timer; ours hold the saved deadlines."""
        with self._lock:
            self.ports = {}
        self.sync(wait=True)
