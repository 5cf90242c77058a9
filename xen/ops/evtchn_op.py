"""__HYPERVISOR_event_channel_op (public/event_channel.h; xen/common/event_channel.c)."""

from __future__ import annotations

from xen import abi
from xen.evtchn import ECS_INTERDOMAIN, ECS_PIRQ, ECS_UNBOUND, ECS_VIRQ
from xen.hypercall import Hypercall, XenError

OPS = {  # cmd -> argument struct
    abi.EVTCHNOP_alloc_unbound: abi.evtchn_alloc_unbound,
    abi.EVTCHNOP_bind_interdomain: abi.evtchn_bind_interdomain,
    abi.EVTCHNOP_bind_virq: abi.evtchn_bind_virq,
    abi.EVTCHNOP_bind_ipi: abi.evtchn_bind_ipi,
    abi.EVTCHNOP_bind_pirq: abi.evtchn_bind_pirq,
    abi.EVTCHNOP_close: abi.evtchn_close,
    abi.EVTCHNOP_send: abi.evtchn_send,
    abi.EVTCHNOP_status: abi.evtchn_status,
    abi.EVTCHNOP_bind_vcpu: abi.evtchn_bind_vcpu,
    abi.EVTCHNOP_unmask: abi.evtchn_unmask,
    abi.EVTCHNOP_reset: abi.evtchn_reset,
    # FIFO ABI (xen/common/event_fifo.c; xen/evtchn_fifo.py)
    abi.EVTCHNOP_init_control: abi.evtchn_init_control,
    abi.EVTCHNOP_expand_array: abi.evtchn_expand_array,
    abi.EVTCHNOP_set_priority: abi.evtchn_set_priority,
}


def handlers(domain):
    ev = domain.evtchn

    def run(call: Hypercall, cmd: int, a) -> bool:
        """Do op ``cmd`` on parsed struct ``a``; returns True if ``a`` must be copied back."""
        if cmd == abi.EVTCHNOP_alloc_unbound:
            a.port = ev.alloc_unbound(a.dom, a.remote_dom)
        elif cmd == abi.EVTCHNOP_bind_interdomain:
            a.local_port = ev.bind_interdomain(a.remote_dom, a.remote_port)
        elif cmd == abi.EVTCHNOP_bind_virq:
            a.port = ev.bind_virq(a.virq, a.vcpu)
        elif cmd == abi.EVTCHNOP_bind_ipi:
            a.port = ev.bind_ipi(a.vcpu)
        elif cmd == abi.EVTCHNOP_bind_pirq:
            a.port = ev.bind_pirq(a.pirq, a.flags)
        elif cmd == abi.EVTCHNOP_close:
            ev.close(a.port)
            return False
        elif cmd == abi.EVTCHNOP_send:
            ev.send(a.port)
            return False
        elif cmd == abi.EVTCHNOP_status:
            ch = ev.status(a.dom, a.port)
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
        elif cmd == abi.EVTCHNOP_bind_vcpu:
            ev.bind_vcpu(a.port, a.vcpu)
            return False
        elif cmd == abi.EVTCHNOP_unmask:
            ev.unmask(a.port)
            return False
        elif cmd == abi.EVTCHNOP_reset:
            ev.reset(a.dom)
            return False
        elif cmd == abi.EVTCHNOP_init_control:
            # link_bits is OUT; the struct is copied back only on success (do_event_channel_op).
            a.link_bits = ev.init_control(a.vcpu, a.control_gfn, a.offset)
        elif cmd == abi.EVTCHNOP_expand_array:
            ev.expand_array(a.array_gfn)
            return False
        elif cmd == abi.EVTCHNOP_set_priority:
            ev.set_priority(a.port, a.priority)
            return False
        return True

    def event_channel_op(call: Hypercall) -> int:
        cmd, arg = call.args[0] & 0xFFFFFFFF, call.args[1]      # do_event_channel_op(int cmd, ...)
        call.tracing and call.note(f"cmd={abi.EVTCHNOP(cmd).name if cmd in abi.EVTCHNOP._value2member_map_ else cmd}")
        struct = OPS.get(cmd)
        if struct is None:
            raise XenError(abi.XenErrno.ENOSYS, f"EVTCHNOP {cmd}")
        st = abi.layout(struct, call.abi)
        a = call.mem.read_struct(st, arg)
        call.tracing and call.note(", ".join(f"{k}={v}" for k, v in a.items() if not k.startswith("_") and k != "u"))
        if run(call, cmd, a):
            call.mem.write_struct(st, arg, a)
        return 0

    # event_channel_op_compat (16) is PV-only: not in the HVM hypercall table, so -ENOSYS.
    return {abi.Hypercall.event_channel_op: event_channel_op}
