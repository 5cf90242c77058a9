"""Event channels: the port table (xen/common/event_channel.c).

The pending/mask protocol is the port ABI's (``self.port_abi``, a
``xen.evtchn_abi.PortAbi``): 2-level (xen/evtchn_2l.py) from the start, FIFO
once the guest asks for it (``switch_abi``).  Port 0 is reserved; ports are
allocated below ``port_abi.max_ports()`` (2-level: 4096 with the 64-bit
shared_info layout, 1024 with the compat one); a port bound above the limit
before it shrank stays valid but is never pending (see ``_bound_beyond``).

With KVM's in-kernel event delivery (``kernel_delivery``: KvmXenAccel on a host
with all of it) KVM sets the 2-level bits and raises the upcall itself; it only
knows 2-level, so it is used only while the ABI is 2-level.

Backend ports (``bind_backend``): the VMM's own backends (PV console,
xenstore) are "domain 0", the remote end of interdomain ports; a guest's
EVTCHNOP_send on one calls the backend's ``on_notify`` after the port lock is
released, and ``notify_guest`` makes the guest's end pending.

The table is guarded by ``EventChannels.lock`` — the "port lock" of the lock
order (vmm/locks.py): taken after the domain lock, before device locks; upcall
injection (an MSI ioctl, or the callback line, never diverted) happens with it
held, which is safe because the irqchip never calls back into event channels.
PIRQ ports are bound here (``bind_pirq``) and delivered by ``deliver_pirq``,
which runs with no lock held (the irqchip's delivery thread, PHYSDEVOP_eoi) and
looks the binding up again under the port lock.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from vmm.locks import ordered_lock
from vmm.trace import now
from xen import abi
from xen.evtchn_2l import TwoLevelAbi
from xen.evtchn_fifo import FifoAbi, check_init_control
from xen.hypercall import XenError
from xen.trace_events import (
    TP_XEN_EVTCHN_BIND as TP_BIND,
    TP_XEN_EVTCHN_CLOSE as TP_CLOSE,
    TP_XEN_EVTCHN_FIFO as TP_FIFO,
    TP_XEN_EVTCHN_SEND as TP_SEND,
    TP_XEN_EVTCHN_SET_PENDING as TP_SET_PENDING,
    TP_XEN_EVTCHN_UNMASK as TP_UNMASK,
    TP_XEN_PIRQ_DELIVER,
)

if TYPE_CHECKING:
    from xen.evtchn_abi import PortAbi
    from xen.kvm_evtchn import KvmSendPorts
    from xen.kvm_timer import KvmTimers
    from xen.pirq import PirqTable
    from xen.shared_info import SharedInfo
    from xen.upcall import Upcall

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
    """One event-channel port (Xen's struct evtchn)."""
    state: int = ECS_FREE
    vcpu: int = 0                 # notify_vcpu_id
    remote_dom: int = 0           # unbound: who may bind; interdomain: the peer
    remote_port: int = 0          # interdomain: the peer port
    virq: int = 0
    pirq: int = 0
    priority: int = abi.EVTCHN_FIFO_PRIORITY_DEFAULT     # FIFO only (2-level ignores it)
    # FIFO's "last queue" (Xen's evtchn->fifo_lastq) is kept by FifoAbi per port number:
    # it must outlive a close and rebind, and a closed port's Channel is replaced.


@dataclass
class Backend:
    """The VMM end of a backend port (bind_backend)."""
    name: str
    on_notify: Callable[[], None]
    remote_port: int


class EventChannels:
    """``shared``: SharedInfo (whether KVM can deliver yet); ``wake()``: notify the domain's
    blocked vCPUs (SCHEDOP_block/poll) after every delivery; ``upcall``: Upcall (after a KVM
    delivery, the callback line is ours).  The PIRQ table is attached (``pirqs``) once made:
    it delivers through us."""

    def __init__(self, port_abi: "PortAbi", shared: "SharedInfo", nr_vcpus: int, domid: int,
                 wake: Callable[[], None], upcall: "Upcall | None" = None, kernel_delivery=None):
        self.shared = shared
        self.nr_vcpus = nr_vcpus
        self.domid = domid
        self.wake = wake
        self.upcall = upcall
        self.pirqs: "PirqTable | None" = None
        self.lock = ordered_lock("xen.ports")
        self.port_abi = port_abi
        # KvmXenAccel when KVM delivers events (accel_full), while the ABI is 2-level
        self.kernel_delivery = kernel_delivery
        self._kernel = kernel_delivery              # given back when the guest returns to 2-level
        self._two_level = port_abi
        self.max_ports = abi.EVTCHN_2L_NR_CHANNELS_64      # the table's size (>= port_abi.max_ports())
        self.ports: list[Channel] = [Channel() for _ in range(self.max_ports)]
        self.ports[0].state = ECS_RESERVED
        # (vcpu, virq) -> port
        self.virq_ports: dict[tuple[int, int], int] = {}
        self.backends: dict[int, Backend] = {}      # guest port -> its VMM end
        self._backend_ports = itertools.count(1)    # the backend side's own port numbers
        # KvmTimers (xen/kvm_timer.py) when KVM may run vCPU timers: told, with no lock held,
        # when the VIRQ_TIMER bindings or the delivery may have changed.
        self.kvm_timers: "KvmTimers | None" = None
        # KvmSendPorts (xen/kvm_evtchn.py) when KVM may answer EVTCHNOP_send: kept equal to
        # _send_target for every port, under the port lock.
        self.kvm_sends: "KvmSendPorts | None" = None

    # ------------------------------------------------------------ helpers
    def nr_ports(self) -> int:
        """Ports the current ABI addresses, within the table (allocation stays below it).
        FIFO addresses 2^17 ports; the table's 4096 is then our limit, as a toolstack's
        max_event_channels is Xen's (d->max_evtchn_port; xl's default is 1023)."""
        return min(self.port_abi.max_ports(), self.max_ports)

    def _valid(self, port: int) -> bool:
        """In range and not the reserved port 0 (what Xen's ops that need a bound port check)."""
        return 0 < port < self.nr_ports() or self._bound_beyond(port)

    def _in_range(self, port: int) -> bool:
        """Xen's port_is_valid(): port 0 exists (reserved), so status/unmask accept it."""
        return 0 <= port < self.nr_ports() or self._bound_beyond(port)

    def _bound_beyond(self, port: int) -> bool:
        """A port bound above the ABI's limit before it shrank (2-level: the guest latched the
        compat layout after binding above 1024): Xen's port_is_valid (d->valid_evtchns never
        shrinks) still accepts it; delivery to it is dropped (TwoLevelAbi.set_pending)."""
        return 0 < port < self.max_ports and self.ports[port].state != ECS_FREE

    def _get(self, port: int) -> Channel:
        if not self._valid(port) or self.ports[port].state in (ECS_FREE, ECS_RESERVED):
            raise XenError(abi.XenErrno.EINVAL, f"port {port} not in use")
        return self.ports[port]

    def _alloc(self) -> int:
        busy = self.port_abi.is_busy
        for p in range(1, self.nr_ports()):
            # A free port still on a FIFO queue (LINKED) isn't reused until the guest has
            # unlinked it (event_channel.c get_free_port: evtchn_is_busy).
            if self.ports[p].state == ECS_FREE and not busy(p):
                return p
        raise XenError(abi.XenErrno.ENOSPC, "no free port")

    def _install(self, port: int, ch: Channel) -> Channel:
        """Bind ``port`` (lock held): the ABI prepares it (evtchn_port_init)."""
        self.ports[port] = ch
        self.port_abi.bound(port, ch)
        return ch

    def _check_vcpu(self, vcpu: int) -> None:
        if not 0 <= vcpu < self.nr_vcpus:
            raise XenError(abi.XenErrno.ENOENT, f"no vCPU {vcpu}")

    def _check_dom(self, dom: int) -> None:
        if dom not in (abi.DOMID_SELF, self.domid):
            raise XenError(abi.XenErrno.ESRCH, f"domain {dom:#x}")

    def _trace_bind(self, port: int, ch: Channel, detail: str = "") -> None:
        if TP_BIND.enabled:
            TP_BIND.emit(port=port, kind=STATE_NAMES[ch.state], detail=detail, vcpu=ch.vcpu)

    # ------------------------------------------------------------ ops (xen/common/event_channel.c)
    def alloc_unbound(self, dom: int, remote_dom: int) -> int:
        self._check_dom(dom)
        if remote_dom == abi.DOMID_SELF:
            remote_dom = self.domid
        # Any other remote domid is stored as given: Xen doesn't look it up either
        # (evtchn_alloc_unbound; the remote end binds later, or never).
        with self.lock:
            port = self._alloc()
            ch = self._install(port, Channel(ECS_UNBOUND, 0, remote_dom))
            self._trace_bind(port, ch, f"remote_dom={remote_dom}")
            return port

    def bind_interdomain(self, remote_dom: int, remote_port: int) -> int:
        """Loopback: both ends live in this domain."""
        self._check_dom(remote_dom)
        with self.lock:
            if not self._valid(remote_port):
                raise XenError(abi.XenErrno.EINVAL, f"remote port {remote_port}")
            rch = self.ports[remote_port]
            if rch.state != ECS_UNBOUND or rch.remote_dom != self.domid:
                raise XenError(abi.XenErrno.EINVAL, f"remote port {remote_port} is not unbound for us")
            port = self._alloc()
            ch = self._install(port, Channel(ECS_INTERDOMAIN, 0, self.domid, remote_port))
            rch.state, rch.remote_port = ECS_INTERDOMAIN, port
            self._trace_bind(port, ch, f"remote_port={remote_port}")
            self._kvm_sends(port, remote_port)
            # Xen: the local port is marked pending so nothing sent before the bind is lost.
            self._set_pending(port)
            return port

    def bind_virq(self, virq: int, vcpu: int) -> int:
        if not 0 <= virq < abi.NR_VIRQS:
            raise XenError(abi.XenErrno.EINVAL, f"virq {virq}")
        if virq not in PER_VCPU_VIRQS and vcpu != 0:
            raise XenError(abi.XenErrno.EINVAL, "global VIRQs bind on vCPU 0")
        self._check_vcpu(vcpu)
        with self.lock:
            if (vcpu, virq) in self.virq_ports:
                raise XenError(abi.XenErrno.EEXIST, f"virq {virq} already bound on vCPU {vcpu}")
            port = self._alloc()
            ch = self._install(port, Channel(ECS_VIRQ, vcpu, virq=virq))
            self.virq_ports[(vcpu, virq)] = port
            self._trace_bind(port, ch, f"virq={virq}")
        if virq == abi.VIRQ_TIMER:
            self._timers_changed()
        return port

    def bind_ipi(self, vcpu: int) -> int:
        self._check_vcpu(vcpu)
        with self.lock:
            port = self._alloc()
            ch = self._install(port, Channel(ECS_IPI, vcpu))
            self._trace_bind(port, ch)
            self._kvm_sends(port)
            return port

    def bind_backend(self, name: str, on_notify: Callable[[], None]) -> int:
        """A guest port whose remote end is the VMM's backend ``name`` ("domain 0"): an
        interdomain channel from the start.  ``on_notify()`` runs when the guest sends on
        it, with no lock held; it must not block (it may queue work)."""
        with self.lock:
            port = self._alloc()
            remote = next(self._backend_ports)
            ch = self._install(port, Channel(ECS_INTERDOMAIN, 0, abi.DOMID_BACKEND, remote))
            self.backends[port] = Backend(name, on_notify, remote)
            self._trace_bind(port, ch, f"backend={name}")
            return port

    def notify_guest(self, port: int) -> bool:
        """The backend kicks the guest: its end of the backend port becomes pending.
        False if the guest closed it (bind_backend again to re-create it)."""
        with self.lock:
            if port not in self.backends:
                return False
            self._set_pending(port)
            return True

    def close(self, port: int) -> None:
        with self.lock:
            ch = self.ports[port] if 0 < port < self.max_ports else None
            timer = ch is not None and ch.state == ECS_VIRQ and ch.virq == abi.VIRQ_TIMER
            was_pirq = self._close(port)
        if was_pirq:
            self._release_quarantined([port])
        if timer:
            self._timers_changed()

    def _release_quarantined(self, ports: list[int]) -> None:
        """Closed PIRQ ports: rebuild KVM's routes after unlock (QEMU's deadlock 2), then
        free the ports.  Until the rebuild, a kernel irqfd route may still point at a
        port; keeping it out of the free pool meanwhile means a message KVM takes in that
        window can't land on a port re-bound to something else, and its pending bit is
        cleared as the port is freed (Xen clears pirq->evtchn under its event lock)."""
        self.pirqs.routes_changed()
        with self.lock:
            for port in ports:
                if self.ports[port].state == ECS_RESERVED:
                    self.ports[port] = ch = Channel()
                    self.port_abi.clear_pending(port, ch)

    def bind_pirq(self, pirq: int, flags: int) -> int:
        """EVTCHNOP_bind_pirq (event_channel.c evtchn_bind_pirq).  An HVM guest needs no
        prior mapping; the port notifies vCPU 0; BIND_PIRQ__WILL_SHARE only matters to a
        PV guest's machine IRQ (pirq_guest_bind), so any flags are accepted."""
        pirqs = self.pirqs
        if not 0 <= pirq < pirqs.nr_pirqs:            # unsigned in the ABI: negative is huge
            raise XenError(abi.XenErrno.EINVAL, f"pirq {pirq}")
        with self.lock:
            if pirqs.is_bound(pirq):                  # checked before a port is allocated
                raise XenError(abi.XenErrno.EEXIST, f"pirq {pirq} already bound")
            port = self._alloc()
            vec = pirqs.bind(pirq, port)
            ch = self._install(port, Channel(ECS_PIRQ, 0, pirq=pirq))
            self._trace_bind(port, ch, f"pirq={pirq}")
        pirqs.routes_changed()
        if vec is not None and vec.unmask is not None:
            # Xen unmasks a real device's MSI at bind (irq.c arch_evtchn_bind_pirq ->
            # guest_mask_msi_irq(desc, 0)); Linux never unmasks a PIRQ-routed MSI itself.
            # QEMU does the same for emulated devices (xen_evtchn_bind_pirq_op).
            vec.unmask()
        return port

    def _close(self, port: int) -> bool:
        """Close ``port`` (lock held); True if it was a PIRQ's (routes to rebuild)."""
        ch = self._get(port)
        kind = STATE_NAMES[ch.state]
        if ch.state == ECS_VIRQ:
            # A global VIRQ stays keyed on vCPU 0 after bind_vcpu moved its port
            # (evtchn_close: v = d->vcpu[virq_is_global(virq) ? 0 : chn->notify_vcpu_id]).
            self.virq_ports.pop((ch.vcpu if ch.virq in PER_VCPU_VIRQS else 0, ch.virq), None)
        elif ch.state == ECS_INTERDOMAIN and ch.remote_dom == self.domid:
            peer = self.ports[ch.remote_port]
            if peer.state == ECS_INTERDOMAIN and peer.remote_port == port:
                # The other end goes back to unbound, waiting for us again (Xen does the same).
                peer.state, peer.remote_port = ECS_UNBOUND, 0
        elif ch.state == ECS_INTERDOMAIN and ch.remote_dom == abi.DOMID_BACKEND:
            self.backends.pop(port, None)                # the backend re-binds when it wants
        elif ch.state == ECS_PIRQ:
            self.pirqs.unbound(ch.pirq, port)     # port lock -> PIRQ table lock: in order
        # A PIRQ port stays reserved until its KVM route is gone (_release_quarantined).
        self.ports[port] = Channel(ECS_RESERVED) if ch.state == ECS_PIRQ else Channel()
        if ch.state in (ECS_IPI, ECS_INTERDOMAIN):
            self._kvm_sends(port, *([ch.remote_port] if ch.remote_dom == self.domid else []))
        self.port_abi.clear_pending(port, ch)
        if TP_CLOSE.enabled:
            TP_CLOSE.emit(port=port, kind=kind)
        return ch.state == ECS_PIRQ

    def send(self, port: int) -> None:
        backend = None
        with self.lock:
            ch = self._get(port)
            if ch.state == ECS_INTERDOMAIN:
                target = ch.remote_port if ch.remote_dom == self.domid else None
                backend = self.backends.get(port)
            elif ch.state == ECS_IPI:
                target = port
            elif ch.state == ECS_UNBOUND:
                target = None                     # nobody listening: dropped, success
            else:
                raise XenError(abi.XenErrno.EINVAL, f"cannot send on a {STATE_NAMES[ch.state]} port")
            if TP_SEND.enabled:
                TP_SEND.emit(port=port, target=target if backend is None else f"backend {backend.name}")
            if target is not None:
                self._set_pending(target)
        if backend is not None:
            backend.on_notify()                   # decided under the lock, delivered after it

    def status(self, dom: int, port: int) -> Channel:
        self._check_dom(dom)
        with self.lock:
            if not self._in_range(port):
                raise XenError(abi.XenErrno.EINVAL, f"port {port}")
            ch = self.ports[port]
            return replace(ch, state=ch.state if ch.state != ECS_RESERVED else ECS_FREE)

    def bind_vcpu(self, port: int, vcpu: int) -> None:
        self._check_vcpu(vcpu)
        with self.lock:
            ch = self._get(port)
            if ch.state == ECS_VIRQ and ch.virq in PER_VCPU_VIRQS:
                raise XenError(abi.XenErrno.EINVAL, "per-vCPU VIRQ")
            if ch.state not in (ECS_VIRQ, ECS_UNBOUND, ECS_INTERDOMAIN, ECS_PIRQ):
                raise XenError(abi.XenErrno.EINVAL, f"cannot move a {STATE_NAMES[ch.state]} port")
            ch.vcpu = vcpu
            if ch.state == ECS_PIRQ:
                self.pirqs.moved(ch.pirq, vcpu)
            elif ch.state == ECS_INTERDOMAIN and ch.remote_dom == self.domid:
                self._kvm_sends(ch.remote_port)         # the other end delivers to our new vCPU
            self._trace_bind(port, ch, "moved")
        if ch.state == ECS_PIRQ:
            self.pirqs.routes_changed()

    def unmask(self, port: int) -> None:
        if not self._in_range(port):
            raise XenError(abi.XenErrno.EINVAL, f"port {port}")
        with self.lock:
            raised = self.port_abi.unmask(port, self.ports[port])
        if TP_UNMASK.enabled:
            TP_UNMASK.emit(port=port, result="re-raised" if raised else "")

    def reset(self, dom: int) -> None:
        """EVTCHNOP_reset (evtchn_reset): close every port; a FIFO domain goes back to
        2-level (evtchn_fifo_destroy, evtchn_2l_init)."""
        self._check_dom(dom)
        quarantined = []
        with self.lock:
            for p in range(1, self.max_ports):
                if self.ports[p].state not in (ECS_FREE, ECS_RESERVED) and self._close(p):
                    quarantined.append(p)
            fifo = self.port_abi if isinstance(self.port_abi, FifoAbi) else None
            if fifo is not None:
                fifo.destroy()
                self._switch_abi(self._two_level)
        if quarantined:
            self._release_quarantined(quarantined)
        elif fifo is not None:
            self._routes_changed()                    # KVM may deliver PIRQs again
        self._timers_changed()                         # no VIRQ_TIMER is bound any more

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Primary: the port table (FIFO priorities included), VIRQ bindings, which backend
        port is whose, and a FIFO domain's FifoAbi state.  Pending and mask bits are the
        guest's memory (shared_info, or FIFO's event words)."""
        with self.lock:
            fifo = self.port_abi.save() if isinstance(self.port_abi, FifoAbi) else None
            return {"ports": [[i, dataclasses.asdict(ch)] for i, ch in enumerate(self.ports) if ch.state != ECS_FREE],
                    "virq_ports": [[v, virq, port] for (v, virq), port in self.virq_ports.items()],
                    "backends": {str(port): b.name for port, b in self.backends.items()},
                    "fifo": fifo}

    def restore(self, state: dict) -> None:
        """Into a domain just built (2-level, nothing bound but the backend ports).  A FIFO
        domain gets its FifoAbi back as it was: nothing is carried over or re-raised, as
        a switch would (its pending state is in the restored memory).  KVM's delivery
        stops for it in ``kvm_rebuilt``."""
        with self.lock:
            built = {str(port): b.name for port, b in self.backends.items()}
            if built != state["backends"]:
                raise ValueError(f"backend ports differ: saved {state['backends']}, built {built}")
            ports = [Channel() for _ in range(self.max_ports)]
            for i, ch in state["ports"]:
                if not 0 <= i < self.max_ports:
                    raise ValueError(f"port {i}")
                ports[i] = Channel(**ch)
            fifo = None
            if state.get("fifo") is not None:
                fifo = FifoAbi(self.shared.mem, self.nr_vcpus, self.shared.mark_events_pending)
                fifo.restore(state["fifo"])
            self.ports = ports
            self.virq_ports = {(v, virq): port for v, virq, port in state["virq_ports"]}
            self.port_abi = fifo or self._two_level
            if fifo is not None:
                self.kernel_delivery = None

    def kvm_rebuilt(self) -> None:
        """After a restore, with KVM's acceleration: a FIFO domain's events are not KVM's
        (switch_abi's stop_event_delivery, told to the new KVM), then the ports KVM sends
        on.  No lock held."""
        if self._kernel is not None and self.kernel_delivery is None:
            self._kernel.stop_event_delivery()
        self.kvm_sends_changed(rebuild=True)

    def switch_abi(self, new_abi: "PortAbi") -> None:
        """Install another port ABI (EVTCHNOP_init_control: FIFO; EVTCHNOP_reset: 2-level
        again).  Under the port lock, as Xen's evtchn_fifo_init_control: every bound port
        is prepared in the new ABI and what was pending in the old one is pending in the
        new one (setup_ports).  KVM delivers 2-level events only: while the ABI is another
        one, events are delivered here (KvmXenAccel is told to stop, and to start again)."""
        with self.lock:
            self._switch_abi(new_abi)
        self._routes_changed()                        # PIRQ routes into KVM follow (pirq.msi_route)
        self._timers_changed()                         # and the vCPU timers KVM runs

    # ------------------------------------------------------------ KVM's EVTCHNOP_send (xen/kvm_evtchn.py)
    def _send_target(self, port: int):
        """What KVM should do with a send on ``port`` (lock held): (type, port, vCPU) to
        deliver to, or None (the VMM answers)."""
        if self.kernel_delivery is None:
            return None
        ch = self.ports[port]
        if ch.state == ECS_IPI:
            return (ECS_IPI, port, ch.vcpu)
        if ch.state == ECS_INTERDOMAIN and ch.remote_dom == self.domid:
            peer = self.ports[ch.remote_port]
            if peer.state == ECS_INTERDOMAIN and peer.remote_port == port:
                return (ECS_INTERDOMAIN, ch.remote_port, peer.vcpu)
        return None

    def _kvm_sends(self, *ports: int) -> None:
        if self.kvm_sends is not None:
            for p in ports:
                self.kvm_sends.set(p, self._send_target(p))

    def kvm_sends_changed(self, rebuild: bool = False) -> None:
        """Every port again: an upcall's route changed, or a restore (``rebuild``: a new
        KVM knows none).  No lock held."""
        if self.kvm_sends is not None:
            with self.lock:
                if rebuild:
                    self.kvm_sends.reset()
                self._kvm_sends_all()

    def _kvm_sends_all(self) -> None:
        if self.kvm_sends is not None:
            ports = set(self.kvm_sends.registered)
            ports.update(p for p in range(1, self.max_ports) if self.ports[p].state in (ECS_IPI, ECS_INTERDOMAIN))
            self._kvm_sends(*sorted(ports))

    def _timers_changed(self) -> None:
        if self.kvm_timers is not None:
            self.kvm_timers.sync()

    def _routes_changed(self) -> None:
        """Delivery moved between KVM and us: the PIRQ table re-decides its KVM routes
        (outside the port lock: it takes its own and programs KVM)."""
        if self.pirqs is not None:
            self.pirqs.routes_changed()

    def _switch_abi(self, new_abi: "PortAbi") -> None:
        old = self.port_abi
        pending = [p for p in range(1, self.max_ports)
                   if self.ports[p].state not in (ECS_FREE, ECS_RESERVED) and old.is_pending(p)]
        self.port_abi = new_abi
        if new_abi.name != TwoLevelAbi.name and self.kernel_delivery is not None:
            self.kernel_delivery.stop_event_delivery()
            self.kernel_delivery = None
        elif new_abi.name == TwoLevelAbi.name and self._kernel is not None and self.kernel_delivery is None:
            self._kernel.resume_event_delivery()
            self.kernel_delivery = self._kernel
        for p in range(1, self.max_ports):
            if self.ports[p].state not in (ECS_FREE, ECS_RESERVED):
                new_abi.bound(p, self.ports[p])
        self._kvm_sends_all()                         # KVM sends 2-level events only
        for p in pending:
            self._set_pending(p)

    # ------------------------------------------------------------ FIFO ABI (xen/common/event_fifo.c)
    def init_control(self, vcpu: int, gfn: int, offset: int) -> int:
        """EVTCHNOP_init_control: map ``vcpu``'s control block; the first call switches the
        domain to FIFO (ports bound so far keep their pending state).  A failure leaves the
        domain as it was (Xen: evtchn_fifo_destroy on a failed first call).  Returns
        link_bits."""
        check_init_control(self.nr_vcpus, vcpu, offset)
        # KVM's vCPU timers come back first: after the switch one would fire into the
        # 2-level bits the guest no longer reads.  (If the call fails they go back.)
        held = self.kvm_timers is not None and not isinstance(self.port_abi, FifoAbi)
        if held:
            self.kvm_timers.hold()
        try:
            with self.lock:
                fifo = self.port_abi
                switched = not isinstance(fifo, FifoAbi)
                if switched:
                    fifo = FifoAbi(self.shared.mem, self.nr_vcpus, self.shared.mark_events_pending)
                fifo.map_control_block(vcpu, gfn, offset)
                if switched:
                    self._switch_abi(fifo)
        finally:
            if held:
                self.kvm_timers.release()
        if TP_FIFO.enabled:
            TP_FIFO.emit(what=f"init_control vcpu={vcpu} gfn={gfn:#x} offset={offset:#x}"
                              + (" (switched from 2-level)" if switched else ""))
        if switched:
            self._routes_changed()                    # no PIRQ is delivered by KVM any more
        return abi.EVTCHN_FIFO_LINK_BITS

    def expand_array(self, gfn: int) -> None:
        """EVTCHNOP_expand_array: -EOPNOTSUPP before init_control (Xen's evtchn_fifo_expand_array);
        ports that became pending before their event word existed are raised now."""
        with self.lock:
            fifo = self.port_abi
            if not isinstance(fifo, FifoAbi):
                raise XenError(abi.XenErrno.EOPNOTSUPP, "not using FIFO event channels")
            for port in fifo.expand_array(gfn):
                if 0 < port < self.max_ports and self.ports[port].state not in (ECS_FREE, ECS_RESERVED):
                    self._set_pending(port)
            words = fifo.nr_words()
        if TP_FIFO.enabled:
            TP_FIFO.emit(what=f"expand_array gfn={gfn:#x}: {words} event words")

    def set_priority(self, port: int, priority: int) -> None:
        """EVTCHNOP_set_priority: an invalid port is -EINVAL, then the ABI answers (2-level:
        -ENOSYS; FIFO: -EINVAL above EVTCHN_FIFO_PRIORITY_MIN).  As Xen, any valid port's
        record takes it, bound or not (binding resets it to the default)."""
        with self.lock:
            if not self._in_range(port):
                raise XenError(abi.XenErrno.EINVAL, f"port {port}")
            self.port_abi.set_priority(port, self.ports[port], priority)

    # ------------------------------------------------------------ delivery
    def _set_pending(self, port: int) -> None:
        ch = self.ports[port]
        kd = self.kernel_delivery
        if kd is not None and self.shared.gpa is not None:
            # KVM sets the bits and raises the upcall, and wakes a vCPU polling in the kernel.
            error = kd.send(port, ch.vcpu)
            if error is None:
                self.upcall.after_kvm_delivery(ch.vcpu)
                result = "via KVM"
                if TP_SET_PENDING.enabled:
                    result += f" (upcall_pending={int(self.shared.upcall_pending(ch.vcpu))})"
            else:   # e.g. KVM doesn't know this vCPU's vcpu_info: do it ourselves
                result = self.port_abi.set_pending(port, ch) + f" (KVM: {error})"
        else:
            result = self.port_abi.set_pending(port, ch)
        if TP_SET_PENDING.enabled:
            TP_SET_PENDING.emit(port=port, vcpu=ch.vcpu, result=result)
        # Wake SCHEDOP_block/poll sleepers, masked ports included (Xen's evtchn_check_pollers).
        # The events condition is a leaf lock: taking it under the port lock is in order.
        self.wake()

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
            port = self.pirqs.port_of(pirq)
            ch = self.ports[port] if 0 < port < self.max_ports else None
            ok = ch is not None and ch.state == ECS_PIRQ and ch.pirq == pirq
            if ok:
                self._set_pending(port)
        if TP_XEN_PIRQ_DELIVER.enabled:
            TP_XEN_PIRQ_DELIVER.emit(since=t0, pirq=pirq, port=port, via=via, result="" if ok else "not bound: dropped")

    def any_pending(self, ports: list[int]) -> bool:
        """SCHEDOP_poll: is any of ``ports`` pending (masked or not, as Xen's do_poll)?"""
        is_pending = self.port_abi.is_pending
        return any(is_pending(p) for p in ports)
