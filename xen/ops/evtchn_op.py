"""__HYPERVISOR_event_channel_op (public/event_channel.h; xen/common/event_channel.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xen import abi
from xen.evtchn import ECS_INTERDOMAIN, ECS_PIRQ, ECS_UNBOUND, ECS_VIRQ
from xen.hypercall import Hypercall, XenError

if TYPE_CHECKING:
    from xen.evtchn import EventChannels



class EvtchnOps:
    """Each sub-op takes its parsed argument struct and returns True if it must be
    copied back to the guest."""

    def __init__(self, evtchn: "EventChannels", fifo: bool = True):
        self.ev = evtchn
        self.ops = {  # cmd -> (argument struct, method)
            abi.EVTCHNOP_alloc_unbound: (abi.evtchn_alloc_unbound, self.alloc_unbound),
            abi.EVTCHNOP_bind_interdomain: (abi.evtchn_bind_interdomain, self.bind_interdomain),
            abi.EVTCHNOP_bind_virq: (abi.evtchn_bind_virq, self.bind_virq),
            abi.EVTCHNOP_bind_ipi: (abi.evtchn_bind_ipi, self.bind_ipi),
            abi.EVTCHNOP_bind_pirq: (abi.evtchn_bind_pirq, self.bind_pirq),
            abi.EVTCHNOP_close: (abi.evtchn_close, self.close),
            abi.EVTCHNOP_send: (abi.evtchn_send, self.send),
            abi.EVTCHNOP_status: (abi.evtchn_status, self.status),
            abi.EVTCHNOP_bind_vcpu: (abi.evtchn_bind_vcpu, self.bind_vcpu),
            abi.EVTCHNOP_unmask: (abi.evtchn_unmask, self.unmask),
            abi.EVTCHNOP_reset: (abi.evtchn_reset, self.reset),
        }
        if fifo:            # FIFO ABI (xen/common/event_fifo.c; xen/evtchn_fifo.py); else -ENOSYS, as QEMU
            self.ops.update({
                abi.EVTCHNOP_init_control: (abi.evtchn_init_control, self.init_control),
                abi.EVTCHNOP_expand_array: (abi.evtchn_expand_array, self.expand_array),
                abi.EVTCHNOP_set_priority: (abi.evtchn_set_priority, self.set_priority),
            })

    def handlers(self) -> dict:
        # event_channel_op_compat (16) is PV-only: not in the HVM hypercall table, so -ENOSYS.
        return {abi.Hypercall.event_channel_op: self.event_channel_op}

    def event_channel_op(self, call: Hypercall) -> int:
        cmd, arg = call.args[0] & 0xFFFFFFFF, call.args[1]      # do_event_channel_op(int cmd, ...)
        call.tracing and call.note(f"cmd={abi.EVTCHNOP(cmd).name if cmd in abi.EVTCHNOP._value2member_map_ else cmd}")
        op = self.ops.get(cmd)
        if op is None:
            raise XenError(abi.XenErrno.ENOSYS, f"EVTCHNOP {cmd}")
        struct, run = op
        st = abi.layout(struct, call.abi)
        a = call.mem.read_struct(st, arg)
        call.tracing and call.note(", ".join(f"{k}={v}" for k, v in a.items() if not k.startswith("_") and k != "u"))
        if run(a):
            call.mem.write_struct(st, arg, a)
        return 0

    # ------------------------------------------------------------ sub-ops
    def alloc_unbound(self, a) -> bool:
        a.port = self.ev.alloc_unbound(a.dom, a.remote_dom)
        return True

    def bind_interdomain(self, a) -> bool:
        a.local_port = self.ev.bind_interdomain(a.remote_dom, a.remote_port)
        return True

    def bind_virq(self, a) -> bool:
        a.port = self.ev.bind_virq(a.virq, a.vcpu)
        return True

    def bind_ipi(self, a) -> bool:
        a.port = self.ev.bind_ipi(a.vcpu)
        return True

    def bind_pirq(self, a) -> bool:
        a.port = self.ev.bind_pirq(a.pirq, a.flags)
        return True

    def close(self, a) -> bool:
        self.ev.close(a.port)
        return False

    def send(self, a) -> bool:
        self.ev.send(a.port)
        return False

    def status(self, a) -> bool:
        ch = self.ev.status(a.dom, a.port)
        a.status, a.vcpu = ch.state, ch.vcpu
        if ch.state == ECS_UNBOUND:
            a.u = dict(unbound=dict(dom=ch.remote_dom))
        elif ch.state == ECS_INTERDOMAIN:
            a.u = dict(interdomain=dict(dom=ch.remote_dom, port=ch.remote_port))
        elif ch.state == ECS_PIRQ:
            a.u = dict(pirq=ch.pirq)
        elif ch.state == ECS_VIRQ:
            a.u = dict(virq=ch.virq)
        else:
            a.u = dict(virq=0)
        return True

    def bind_vcpu(self, a) -> bool:
        self.ev.bind_vcpu(a.port, a.vcpu)
        return False

    def unmask(self, a) -> bool:
        self.ev.unmask(a.port)
        return False

    def reset(self, a) -> bool:
        self.ev.reset(a.dom)
        return False

    def init_control(self, a) -> bool:
        # link_bits is OUT; the struct is copied back only on success (do_event_channel_op).
        a.link_bits = self.ev.init_control(a.vcpu, a.control_gfn, a.offset)
        return True

    def expand_array(self, a) -> bool:
        self.ev.expand_array(a.array_gfn)
        return False

    def set_priority(self, a) -> bool:
        self.ev.set_priority(a.port, a.priority)
        return False
