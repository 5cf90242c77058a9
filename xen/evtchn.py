"""Event channels, 2-level ABI: the port table and the pending/mask protocol.

Semantics follow xen/common/event_channel.c and event_2l.c:

* port 0 is reserved; 2-level has 4096 ports with the 64-bit ABI (64 words of
  64 bits) and 1024 with the 32-bit ABI (32 x 32) — the limit follows the
  shared_info layout the domain latched (``XenDomain.compat``), as Xen sizes it
  by the guest's word width; ports bound above 1024 before a switch to the
  compat layout stay valid but are never pending (see ``_bound_beyond``);
* set_pending: test_and_set the port's bit in shared_info.evtchn_pending;
  if it was clear and the port is unmasked, test_and_set its word's bit in
  the notified vCPU's vcpu_info.evtchn_pending_sel; if that was clear, set
  evtchn_upcall_pending and, if *that* was clear, raise the upcall;
* unmask: clear the mask bit; if the port is pending, do the selector and
  upcall half of set_pending.

All bit updates are atomic RMWs on guest memory (the guest clears bits
concurrently with lock-prefixed instructions).  The table itself is guarded
by ``EventChannels.lock`` — the "port lock" of the lock order (vmm/locks.py):
taken after the domain lock, before device locks; upcall injection (an MSI
ioctl, or the callback line, never diverted) happens with it held, which is
safe because the irqchip never calls back into event channels.  PIRQ ports are
bound here (``bind_pirq``) and delivered by ``deliver_pirq``, which runs with no
lock held (the irqchip's delivery thread, PHYSDEVOP_eoi) and looks the binding up
again under the port lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmm.locks import ordered_lock
from vmm.trace import now
from xen import abi
from xen.hypercall import XenError
from xen.trace_events import (
    TP_XEN_EVTCHN_BIND as TP_BIND,
    TP_XEN_EVTCHN_CLOSE as TP_CLOSE,
    TP_XEN_EVTCHN_SEND as TP_SEND,
    TP_XEN_EVTCHN_SET_PENDING as TP_SET_PENDING,
    TP_XEN_EVTCHN_UNMASK as TP_UNMASK,
    TP_XEN_PIRQ_DELIVER,
)

if TYPE_CHECKING:
    from xen.domain import XenDomain

ECS_FREE = abi.EVTCHNSTAT_closed
ECS_UNBOUND = abi.EVTCHNSTAT_unbound
ECS_INTERDOMAIN = abi.EVTCHNSTAT_interdomain
ECS_PIRQ = abi.EVTCHNSTAT_pirq
ECS_VIRQ = abi.EVTCHNSTAT_virq
ECS_IPI = abi.EVTCHNSTAT_ipi
ECS_RESERVED = -1
STATE_NAMES = {ECS_FREE: "closed", ECS_UNBOUND: "unbound", ECS_INTERDOMAIN: "interdomain",
               ECS_PIRQ: "pirq", ECS_VIRQ: "virq", ECS_IPI: "ipi", ECS_RESERVED: "reserved"}

# Per-vCPU VIRQs (xen/common/event_channel.c virq_is_global: everything else is global).
PER_VCPU_VIRQS = {abi.VIRQ_TIMER, abi.VIRQ_DEBUG, abi.VIRQ_XENOPROF, abi.VIRQ_XENPMU}


@dataclass
class Channel:
    state: int = ECS_FREE
    vcpu: int = 0                 # notify_vcpu_id
    remote_dom: int = 0           # unbound: who may bind; interdomain: the peer
    remote_port: int = 0          # interdomain: the peer port
    virq: int = 0
    pirq: int = 0


class EventChannels:
    def __init__(self, domain: "XenDomain"):
        self.domain = domain
        self.lock = ordered_lock("xen.ports")
        self.max_ports = abi.EVTCHN_2L_NR_CHANNELS_64
        self.ports: list[Channel] = [Channel() for _ in range(self.max_ports)]
        self.ports[0].state = ECS_RESERVED
        # (vcpu, virq) -> port
        self.virq_ports: dict[tuple[int, int], int] = {}

    # ------------------------------------------------------------ helpers
    def nr_ports(self, compat: bool) -> int:
        return abi.EVTCHN_2L_NR_CHANNELS_32 if compat else abi.EVTCHN_2L_NR_CHANNELS_64

    def _valid(self, port: int, compat: bool) -> bool:
        """In range and not the reserved port 0 (what Xen's ops that need a bound port check)."""
        return 0 < port < self.nr_ports(compat) or self._bound_beyond(port, compat)

    def _in_range(self, port: int, compat: bool) -> bool:
        """Xen's port_is_valid(): port 0 exists (reserved), so status/unmask accept it."""
        return 0 <= port < self.nr_ports(compat) or self._bound_beyond(port, compat)

    def _bound_beyond(self, port: int, compat: bool) -> bool:
        """A port bound above the compat limit before the guest latched the compat layout:
        Xen's port_is_valid (d->valid_evtchns never shrinks) still accepts it; delivery to
        it is dropped (SharedInfo.set_pending)."""
        return compat and 0 < port < self.max_ports and self.ports[port].state != ECS_FREE

    def _get(self, port: int, compat: bool) -> Channel:
        if not self._valid(port, compat) or self.ports[port].state in (ECS_FREE, ECS_RESERVED):
            raise XenError(abi.XenErrno.EINVAL, f"port {port} not in use")
        return self.ports[port]

    def _alloc(self, compat: bool) -> int:
        for p in range(1, self.nr_ports(compat)):
            if self.ports[p].state == ECS_FREE:
                return p
        raise XenError(abi.XenErrno.ENOSPC, "no free port")

    def _check_vcpu(self, vcpu: int) -> None:
        if not 0 <= vcpu < len(self.domain.vcpus):
            raise XenError(abi.XenErrno.ENOENT, f"no vCPU {vcpu}")

    def _check_dom(self, dom: int) -> None:
        if dom not in (abi.DOMID_SELF, self.domain.domid):
            raise XenError(abi.XenErrno.ESRCH, f"domain {dom:#x}")

    def _trace_bind(self, port: int, ch: Channel, detail: str = "") -> None:
        if TP_BIND.enabled:
            TP_BIND.emit(port=port, kind=STATE_NAMES[ch.state], detail=detail, vcpu=ch.vcpu)

    # ------------------------------------------------------------ ops (xen/common/event_channel.c)
    def alloc_unbound(self, dom: int, remote_dom: int, compat: bool) -> int:
        self._check_dom(dom)
        if remote_dom == abi.DOMID_SELF:
            remote_dom = self.domain.domid
        # Any other remote domid is stored as given: Xen doesn't look it up either
        # (evtchn_alloc_unbound; the remote end binds later, or never).
        with self.lock:
            port = self._alloc(compat)
            self.ports[port] = ch = Channel(ECS_UNBOUND, 0, remote_dom)
            self._trace_bind(port, ch, f"remote_dom={remote_dom}")
            return port

    def bind_interdomain(self, remote_dom: int, remote_port: int, compat: bool) -> int:
        """Loopback: both ends live in this domain."""
        self._check_dom(remote_dom)
        with self.lock:
            if not self._valid(remote_port, compat):
                raise XenError(abi.XenErrno.EINVAL, f"remote port {remote_port}")
            rch = self.ports[remote_port]
            if rch.state != ECS_UNBOUND or rch.remote_dom != self.domain.domid:
                raise XenError(abi.XenErrno.EINVAL, f"remote port {remote_port} is not unbound for us")
            port = self._alloc(compat)
            self.ports[port] = ch = Channel(ECS_INTERDOMAIN, 0, self.domain.domid, remote_port)
            rch.state, rch.remote_port = ECS_INTERDOMAIN, port
            self._trace_bind(port, ch, f"remote_port={remote_port}")
            # Xen: the local port is marked pending so nothing sent before the bind is lost.
            self._set_pending(port)
            return port

    def bind_virq(self, virq: int, vcpu: int, compat: bool) -> int:
        if not 0 <= virq < abi.NR_VIRQS:
            raise XenError(abi.XenErrno.EINVAL, f"virq {virq}")
        if virq not in PER_VCPU_VIRQS and vcpu != 0:
            raise XenError(abi.XenErrno.EINVAL, "global VIRQs bind on vCPU 0")
        self._check_vcpu(vcpu)
        with self.lock:
            if (vcpu, virq) in self.virq_ports:
                raise XenError(abi.XenErrno.EEXIST, f"virq {virq} already bound on vCPU {vcpu}")
            port = self._alloc(compat)
            self.ports[port] = ch = Channel(ECS_VIRQ, vcpu, virq=virq)
            self.virq_ports[(vcpu, virq)] = port
            self._trace_bind(port, ch, f"virq={virq}")
            return port

    def bind_ipi(self, vcpu: int, compat: bool) -> int:
        self._check_vcpu(vcpu)
        with self.lock:
            port = self._alloc(compat)
            self.ports[port] = ch = Channel(ECS_IPI, vcpu)
            self._trace_bind(port, ch)
            return port

    def close(self, port: int, compat: bool) -> None:
        with self.lock:
            was_pirq = self._close(port, compat)
        if was_pirq:
            self._release_quarantined([port], compat)

    def _release_quarantined(self, ports: list[int], compat: bool) -> None:
        """Closed PIRQ ports: rebuild KVM's routes after unlock (QEMU's deadlock 2), then
        free the ports.  Until the rebuild, a kernel irqfd route may still point at a
        port; keeping it out of the free pool meanwhile means a message KVM takes in that
        window can't land on a port re-bound to something else, and its pending bit is
        cleared as the port is freed (Xen clears pirq->evtchn under its event lock)."""
        self.domain.pirqs.routes_changed()
        with self.lock:
            for port in ports:
                if self.ports[port].state == ECS_RESERVED:
                    self.ports[port] = Channel()
                    self.domain.shared.clear_pending(port, compat)

    def bind_pirq(self, pirq: int, flags: int, compat: bool) -> int:
        """EVTCHNOP_bind_pirq (event_channel.c evtchn_bind_pirq).  An HVM guest needs no
        prior mapping; the port notifies vCPU 0; BIND_PIRQ__WILL_SHARE only matters to a
        PV guest's machine IRQ (pirq_guest_bind), so any flags are accepted."""
        pirqs = self.domain.pirqs
        if not 0 <= pirq < pirqs.nr_pirqs:            # unsigned in the ABI: negative is huge
            raise XenError(abi.XenErrno.EINVAL, f"pirq {pirq}")
        with self.lock:
            if pirqs.is_bound(pirq):                  # checked before a port is allocated
                raise XenError(abi.XenErrno.EEXIST, f"pirq {pirq} already bound")
            port = self._alloc(compat)
            vec = pirqs.bind(pirq, port)
            self.ports[port] = ch = Channel(ECS_PIRQ, 0, pirq=pirq)
            self._trace_bind(port, ch, f"pirq={pirq}")
        pirqs.routes_changed()
        if vec is not None and vec.unmask is not None:
            # Xen unmasks a real device's MSI at bind (irq.c arch_evtchn_bind_pirq ->
            # guest_mask_msi_irq(desc, 0)); Linux never unmasks a PIRQ-routed MSI itself.
            # QEMU does the same for emulated devices (xen_evtchn_bind_pirq_op).
            vec.unmask()
        return port

    def _close(self, port: int, compat: bool) -> bool:
        """Close ``port`` (lock held); True if it was a PIRQ's (routes to rebuild)."""
        ch = self._get(port, compat)
        kind = STATE_NAMES[ch.state]
        if ch.state == ECS_VIRQ:
            # A global VIRQ stays keyed on vCPU 0 after bind_vcpu moved its port
            # (evtchn_close: v = d->vcpu[virq_is_global(virq) ? 0 : chn->notify_vcpu_id]).
            self.virq_ports.pop((ch.vcpu if ch.virq in PER_VCPU_VIRQS else 0, ch.virq), None)
        elif ch.state == ECS_INTERDOMAIN and ch.remote_dom == self.domain.domid:
            peer = self.ports[ch.remote_port]
            if peer.state == ECS_INTERDOMAIN and peer.remote_port == port:
                # The other end goes back to unbound, waiting for us again (Xen does the same).
                peer.state, peer.remote_port = ECS_UNBOUND, 0
        elif ch.state == ECS_PIRQ:
            self.domain.pirqs.unbound(ch.pirq, port)     # port lock -> PIRQ table lock: in order
        # A PIRQ port stays reserved until its KVM route is gone (_release_quarantined).
        self.ports[port] = Channel(ECS_RESERVED) if ch.state == ECS_PIRQ else Channel()
        self.domain.shared.clear_pending(port, compat)
        if TP_CLOSE.enabled:
            TP_CLOSE.emit(port=port, kind=kind)
        return ch.state == ECS_PIRQ

    def send(self, port: int, compat: bool) -> None:
        with self.lock:
            ch = self._get(port, compat)
            if ch.state == ECS_INTERDOMAIN:
                target = ch.remote_port if ch.remote_dom == self.domain.domid else None
            elif ch.state == ECS_IPI:
                target = port
            elif ch.state == ECS_UNBOUND:
                target = None                     # nobody listening: dropped, success
            else:
                raise XenError(abi.XenErrno.EINVAL, f"cannot send on a {STATE_NAMES[ch.state]} port")
            if TP_SEND.enabled:
                TP_SEND.emit(port=port, target=target)
            if target is not None:
                self._set_pending(target)

    def status(self, dom: int, port: int, compat: bool) -> Channel:
        self._check_dom(dom)
        with self.lock:
            if not self._in_range(port, compat):
                raise XenError(abi.XenErrno.EINVAL, f"port {port}")
            ch = self.ports[port]
            return Channel(ch.state if ch.state != ECS_RESERVED else ECS_FREE, ch.vcpu, ch.remote_dom,
                           ch.remote_port, ch.virq, ch.pirq)

    def bind_vcpu(self, port: int, vcpu: int, compat: bool) -> None:
        self._check_vcpu(vcpu)
        with self.lock:
            ch = self._get(port, compat)
            if ch.state == ECS_VIRQ and ch.virq in PER_VCPU_VIRQS:
                raise XenError(abi.XenErrno.EINVAL, "per-vCPU VIRQ")
            if ch.state not in (ECS_VIRQ, ECS_UNBOUND, ECS_INTERDOMAIN, ECS_PIRQ):
                raise XenError(abi.XenErrno.EINVAL, f"cannot move a {STATE_NAMES[ch.state]} port")
            ch.vcpu = vcpu
            if ch.state == ECS_PIRQ:
                self.domain.pirqs.moved(ch.pirq, vcpu)
            self._trace_bind(port, ch, "moved")
        if ch.state == ECS_PIRQ:
            self.domain.pirqs.routes_changed()

    def unmask(self, port: int, compat: bool) -> None:
        if not self._in_range(port, compat):
            raise XenError(abi.XenErrno.EINVAL, f"port {port}")
        with self.lock:
            ch = self.ports[port]
            raised = self.domain.shared.unmask(port, ch.vcpu if ch.state != ECS_FREE else 0, compat)
        if TP_UNMASK.enabled:
            TP_UNMASK.emit(port=port, result="re-raised" if raised else "")

    def reset(self, dom: int) -> None:
        self._check_dom(dom)
        quarantined = []
        with self.lock:
            for p in range(1, self.max_ports):
                if self.ports[p].state not in (ECS_FREE, ECS_RESERVED) and self._close(p, False):
                    quarantined.append(p)
        if quarantined:
            self._release_quarantined(quarantined, False)

    # ------------------------------------------------------------ delivery
    def _set_pending(self, port: int) -> None:
        ch = self.ports[port]
        d = self.domain
        if d.accel_full and d.shared.gpa is not None:
            # KVM sets the bits and raises the upcall, and wakes a vCPU polling in the kernel.
            error = d.accel.send(port, ch.vcpu)
            if error is None:
                d.upcall.after_kvm_delivery(ch.vcpu)
                result = "via KVM"
                if TP_SET_PENDING.enabled:
                    result += f" (upcall_pending={int(d.shared.upcall_pending(ch.vcpu, d.compat))})"
            else:   # e.g. KVM doesn't know this vCPU's vcpu_info: do it ourselves
                result = d.shared.set_pending(port, ch.vcpu, d.compat) + f" (KVM: {error})"
        else:
            result = d.shared.set_pending(port, ch.vcpu, d.compat)
        if TP_SET_PENDING.enabled:
            TP_SET_PENDING.emit(port=port, vcpu=ch.vcpu, result=result)
        # Wake SCHEDOP_block/poll sleepers, masked ports included (Xen's evtchn_check_pollers).
        # The events condition is a leaf lock: taking it under the port lock is in order.
        self.domain.notify_events()

    def raise_virq(self, vcpu: int, virq: int) -> bool:
        """Deliver a VIRQ if the guest bound it (timer, debug, ...)."""
        with self.lock:
            port = self.virq_ports.get((vcpu, virq))
            if port is None:
                return False
            self._set_pending(port)
            return True

    def set_pending_port(self, port: int) -> None:
        """For devices/backends (e.g. PIRQs): make ``port`` pending on its vCPU."""
        with self.lock:
            if 0 < port < self.max_ports and self.ports[port].state not in (ECS_FREE, ECS_RESERVED):
                self._set_pending(port)

    def deliver_pirq(self, pirq: int, via: str) -> None:
        """event_channel.c send_guest_pirq: the PIRQ's port, if bound, becomes pending on
        its vCPU.  Run with no lock held (the irqchip's delivery thread, PHYSDEVOP_eoi); the
        binding is looked up now, under the port lock, not when the interrupt was decided."""
        t0 = now() if TP_XEN_PIRQ_DELIVER.enabled else None     # a span in a Perfetto trace
        with self.lock:
            port = self.domain.pirqs.port_of(pirq)
            ch = self.ports[port] if 0 < port < self.max_ports else None
            ok = ch is not None and ch.state == ECS_PIRQ and ch.pirq == pirq
            if ok:
                self._set_pending(port)
        if TP_XEN_PIRQ_DELIVER.enabled:
            TP_XEN_PIRQ_DELIVER.emit(since=t0, pirq=pirq, port=port, via=via, result="" if ok else "not bound: dropped")

    def any_pending(self, ports: list[int], compat: bool) -> bool:
        """SCHEDOP_poll: is any of ``ports`` pending (masked or not, as Xen's do_poll)?"""
        return any(self.domain.shared.is_pending(p, compat) for p in ports)
