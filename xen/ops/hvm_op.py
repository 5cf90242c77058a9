"""__HYPERVISOR_hvm_op (public/hvm/hvm_op.h, params.h; xen/arch/x86/hvm/hvm.c).

Which params a guest may set or read of itself: xen/hvm_params.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xen import abi
from xen.hypercall import Hypercall, XenError
from xen.ops import check_domid

if TYPE_CHECKING:
    from xen.hvm_params import HvmParams
    from xen.upcall import Upcall


class HvmOps:
    def __init__(self, params: "HvmParams", upcall: "Upcall", domid: int, nr_vcpus: int):
        self.params = params
        self.upcall = upcall
        self.domid = domid
        self.nr_vcpus = nr_vcpus
        self.ops = {abi.HVMOP_set_param: self.set_param, abi.HVMOP_get_param: self.get_param,
                    abi.HVMOP_set_evtchn_upcall_vector: self.set_evtchn_upcall_vector}

    def handlers(self) -> dict:
        return {abi.Hypercall.hvm_op: self.hvm_op}

    def hvm_op(self, call: Hypercall) -> int:
        op, arg = call.args[0], call.args[1]
        call.tracing and call.note(f"op={abi.HVMOP(op).name if op in abi.HVMOP._value2member_map_ else op}")
        run = self.ops.get(op)
        if run is None:
            raise XenError(abi.XenErrno.ENOSYS, f"HVMOP {op}")   # pagetable_dying included, as asked
        return run(call, arg)

    def _param_arg(self, call: Hypercall, arg: int):
        st = abi.layout(abi.xen_hvm_param, call.abi)
        p = call.mem.read_struct(st, arg)
        check_domid(p.domid, self.domid)
        call.tracing and call.note(f"index={p.index} value={p.value:#x}")
        return st, p

    def set_param(self, call: Hypercall, arg: int) -> int:
        _, p = self._param_arg(call, arg)
        self.params.guest_set(p.index, p.value)
        return 0

    def get_param(self, call: Hypercall, arg: int) -> int:
        st, p = self._param_arg(call, arg)
        p.value = self.params.guest_get(p.index)
        call.mem.write_struct(st, arg, p)
        return 0

    def set_evtchn_upcall_vector(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.xen_hvm_evtchn_upcall_vector, call.abi)
        u = call.mem.read_struct(st, arg)
        if u.vector < 0x10:
            raise XenError(abi.XenErrno.EINVAL, f"vector {u.vector:#x}")
        if not 0 <= u.vcpu < self.nr_vcpus:
            raise XenError(abi.XenErrno.ENOENT, f"vcpu {u.vcpu}")
        self.upcall.set_vector(u.vcpu, u.vector)
        call.tracing and call.note(f"vcpu={u.vcpu} vector={u.vector:#x}")
        return 0
