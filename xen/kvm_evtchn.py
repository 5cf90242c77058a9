"""EVTCHNOP_send in KVM: a guest's IPIs and loopback interdomain events cost no exit.

Linux sends every cross-vCPU IPI of a Xen HVM guest (reschedule, function call) with
EVTCHNOP_send on an IPI port: 1,010 of the 6,225 exits of a 2-vCPU boot to a shell
command in the nested test host once the timers were in KVM.  KVM answers EVTCHNOP_send
itself for the ports it is told about (``KVM_XEN_ATTR_TYPE_EVTCHN``, arch/x86/kvm/xen.c
kvm_xen_hcall_evtchn_send): an IPI port delivers to itself on its vCPU, an interdomain
port to another port and vCPU.  A send KVM can't deliver (no shared_info yet, say)
falls through to the VMM, which delivers it as before.

``EventChannels`` keeps KVM's table equal to what ``target`` says for every port, under
the port lock, each time a port changes (bind, close, bind_vcpu, the ABI switch, a
restore): the ioctl is issued under the lock, so KVM never delivers on a port after it
was closed or moved (KVM waits for senders in flight: synchronize_srcu).  A port is
KVM's when

* KVM delivers events (``EventChannels.kernel_delivery``: full acceleration, 2-level);
* it is an IPI port, or an interdomain port whose other end is a port of this domain
  (not a backend's: the VMM's console and xenstore must see the notification);
* KVM raises the receiving vCPU's upcall itself (``Upcall.kvm_raises``): a callback
  line is ours to drive.

What KVM delivers doesn't pass our tracing (``xen.evtchn.send``), nor wake a
SCHEDOP_block/poll the VMM answers at once: those see it at their next check (5 ms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from kvm_bindings import KvmError, consts
from xen.trace_events import TP_XEN_KVM as TP_ACCEL

if TYPE_CHECKING:
    from xen.kvm_accel import KvmXenAccel

# (type, the port KVM delivers to, its vCPU)
Target = tuple[int, int, int]


class KvmSendPorts:
    def __init__(self, accel: "KvmXenAccel", kvm_raises: Callable[[int], bool]):
        self.accel = accel
        self.kvm_raises = kvm_raises
        self.registered: dict[int, Target] = {}      # send port -> what KVM does with it

    def _attr(self, port: int, flags: int, target: Target | None = None) -> None:
        evtchn = dict(send_port=port, flags=flags)
        if target is not None:
            evtchn.update(type=target[0], deliver=dict(port=dict(
                port=target[1], vcpu=target[2], priority=consts.KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL)))
        self.accel.vm_attr(consts.KVM_XEN_ATTR_TYPE_EVTCHN, evtchn=evtchn)

    def set(self, port: int, target: Target | None) -> None:
        """Make KVM's entry for ``port`` ``target`` (None: none).  Port lock held.  A
        refusal is traced and leaves the port to the VMM."""
        if target is not None and not self.kvm_raises(target[2]):
            target = None
        old = self.registered.get(port)
        if old == target:
            return
        try:
            if old is not None and target is not None and old[:2] == target[:2]:
                self._attr(port, consts.KVM_XEN_EVTCHN_UPDATE, target)        # its vCPU moved
            else:
                if old is not None:
                    del self.registered[port]
                    self._attr(port, consts.KVM_XEN_EVTCHN_DEASSIGN)
                if target is not None:
                    self._attr(port, 0, target)
        except KvmError as e:
            if self.registered.pop(port, None) is not None:
                try:                                  # whatever it still has: gone
                    self._attr(port, consts.KVM_XEN_EVTCHN_DEASSIGN)
                except KvmError:
                    pass
            if TP_ACCEL.enabled:
                TP_ACCEL.emit(what=f"port {port}: KVM refused {target}: {e}; the VMM sends on it")
            return
        if target is None:
            self.registered.pop(port, None)
        else:
            self.registered[port] = target
        if TP_ACCEL.enabled:
            TP_ACCEL.emit(what=f"port {port}: " + ("sends in KVM to port {1} on vcpu{2}".format(*target)
                                                    if target else "sends through the VMM again"))

    def reset(self) -> None:
        """Forget every entry (a restore starts from a new KVM: nothing to tell it)."""
        self.registered.clear()
