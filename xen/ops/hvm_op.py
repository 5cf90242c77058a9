"""__HYPERVISOR_hvm_op (public/hvm/hvm_op.h, params.h; xen/arch/x86/hvm/hvm.c).

Which params a guest may set or read of itself: hvm_allow_set_param /
hvm_allow_get_param.  Absent services (xenstore, PV console) read as 0.
"""

from __future__ import annotations

from xen import abi
from xen.hypercall import Hypercall, XenError
from xen.ops import check_domid

GUEST_SETTABLE = {abi.HVM_PARAM_CALLBACK_IRQ, abi.HVM_PARAM_STORE_EVTCHN, abi.HVM_PARAM_CONSOLE_EVTCHN,
                  abi.HVM_PARAM_X87_FIP_WIDTH}
GUEST_READABLE = GUEST_SETTABLE | {abi.HVM_PARAM_STORE_PFN, abi.HVM_PARAM_CONSOLE_PFN, abi.HVM_PARAM_ALTP2M}


def handlers(domain):
    def hvm_op(call: Hypercall) -> int:
        op, arg = call.args[0], call.args[1]
        call.tracing and call.note(f"op={abi.HVMOP(op).name if op in abi.HVMOP._value2member_map_ else op}")
        if op in (abi.HVMOP_set_param, abi.HVMOP_get_param):
            st = abi.layout(abi.xen_hvm_param, call.abi)
            p = call.mem.read_struct(st, arg)
            check_domid(domain, p.domid)
            if p.index >= abi.HVM_NR_PARAMS:
                raise XenError(abi.XenErrno.EINVAL, f"param {p.index}")
            call.tracing and call.note(f"index={p.index} value={p.value:#x}")
            if op == abi.HVMOP_set_param:
                if p.index not in GUEST_SETTABLE:
                    raise XenError(abi.XenErrno.EPERM, f"param {p.index} is the toolstack's")
                with domain.lock:
                    domain.hvm_params[p.index] = p.value
                if p.index == abi.HVM_PARAM_CALLBACK_IRQ:
                    domain.upcall.set_callback_irq(p.value)
                return 0
            if p.index not in GUEST_READABLE:
                raise XenError(abi.XenErrno.EPERM, f"param {p.index} is the toolstack's")
            with domain.lock:
                p.value = domain.hvm_params.get(p.index, 0)
            call.mem.write_struct(st, arg, p)
            return 0
        if op == abi.HVMOP_set_evtchn_upcall_vector:
            st = abi.layout(abi.xen_hvm_evtchn_upcall_vector, call.abi)
            u = call.mem.read_struct(st, arg)
            if u.vector < 0x10:
                raise XenError(abi.XenErrno.EINVAL, f"vector {u.vector:#x}")
            if not 0 <= u.vcpu < len(domain.vcpus):
                raise XenError(abi.XenErrno.ENOENT, f"vcpu {u.vcpu}")
            domain.upcall.set_vector(u.vcpu, u.vector)
            call.tracing and call.note(f"vcpu={u.vcpu} vector={u.vector:#x}")
            return 0
        raise XenError(abi.XenErrno.ENOSYS, f"HVMOP {op}")   # pagetable_dying included, as asked

    return {abi.Hypercall.hvm_op: hvm_op}
