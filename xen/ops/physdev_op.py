"""__HYPERVISOR_physdev_op for an HVM guest (public/physdev.h; xen/arch/x86/physdev.c).

xen/arch/x86/hvm/hypercall.c hvm_physdev_op lets an HVM domU use map_pirq,
unmap_pirq, and (with X86_EMU_USE_PIRQ, which our domains have: we advertise
XENFEAT_hvm_pirqs) eoi, irq_status_query and get_free_pirq.  The hardware
domain's ops (setup_gsi, pci_*, dbgp_op) and everything else are -ENOSYS.
The PIRQ table itself is xen/pirq.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xen import abi
from xen.hypercall import Hypercall, XenError
from xen.ops import check_domid

if TYPE_CHECKING:
    from xen.pirq import PirqTable
    from xen.upcall import Upcall


class PhysdevOps:
    def __init__(self, pirqs: "PirqTable", upcall: "Upcall", domid: int):
        self.pirqs = pirqs
        self.upcall = upcall
        self.domid = domid
        self.ops = {abi.PHYSDEVOP_map_pirq: self.map_pirq, abi.PHYSDEVOP_unmap_pirq: self.unmap_pirq,
                    abi.PHYSDEVOP_eoi: self.eoi, abi.PHYSDEVOP_irq_status_query: self.irq_status_query,
                    abi.PHYSDEVOP_get_free_pirq: self.get_free_pirq}

    def handlers(self) -> dict:
        # physdev_op_compat (19) is PV-only: not in the HVM table, so -ENOSYS.
        return {abi.Hypercall.physdev_op: self.physdev_op}

    def physdev_op(self, call: Hypercall) -> int:
        cmd, arg = call.args[0] & 0xFFFFFFFF, call.args[1]       # do_physdev_op(int cmd, ...)
        name = abi.PHYSDEVOP(cmd).name if cmd in abi.PHYSDEVOP._value2member_map_ else cmd
        call.tracing and call.note(f"cmd={name}")
        op = self.ops.get(cmd)
        if op is None:
            raise XenError(abi.XenErrno.ENOSYS, f"PHYSDEVOP {name} (hvm_physdev_op)")
        return op(call, arg)

    def own_domain(self, domid: int) -> None:
        # physdev.c: rcu_lock_domain_by_any_id(domid) -> -ESRCH for a domain that doesn't
        # exist.  Only ours does here (a real Xen's dom0 would answer -EPERM from XSM).
        check_domid(domid, self.domid)

    def pv_evtchn(self) -> bool:
        """asm/domain.h is_hvm_pv_evtchn_domain: the callback is the global vector, or
        vCPU 0 has a per-vCPU upcall vector.  physdev_map_pirq refuses a PIRQ otherwise
        ("else HVM-IRQ logic calls back into itself")."""
        up = self.upcall
        return up.via_type == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR or 0 in up.vectors

    def map_pirq(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.physdev_map_pirq, call.abi)
        m = call.mem.read_struct(st, arg)
        call.tracing and call.note(f"domid={m.domid:#x} type={m.type} index={m.index} pirq={m.pirq}")
        if m.type == abi.MAP_PIRQ_TYPE_MSI_SEG:
            m.type = abi.MAP_PIRQ_TYPE_MSI           # Xen rewrites it in the copy it writes back
        elif m.type == abi.MAP_PIRQ_TYPE_MULTI_MSI and m.table_base:
            raise XenError(abi.XenErrno.EINVAL, "MULTI_MSI with a table base")   # no write-back
        self.own_domain(m.domid)                     # -ESRCH: no write-back either
        if not self.pv_evtchn():
            rc = -abi.XenErrno.EINVAL
        elif m.type != abi.MAP_PIRQ_TYPE_GSI:
            rc = -abi.XenErrno.EINVAL                # physdev_hvm_map_pirq: "not supported yet"
        else:
            rc, m.pirq = self.pirqs.map_gsi(m.index, m.pirq)
        call.mem.write_struct(st, arg, m)            # written back whatever the result
        if rc:
            raise XenError(-rc, f"map_pirq type {m.type} index {m.index}")
        call.tracing and call.note(f"-> pirq {m.pirq}")
        return 0

    def unmap_pirq(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.physdev_unmap_pirq, call.abi)
        u = call.mem.read_struct(st, arg)
        call.tracing and call.note(f"domid={u.domid:#x} pirq={u.pirq}")
        self.own_domain(u.domid)
        self.pirqs.unmap(u.pirq)
        return 0

    def eoi(self, call: Hypercall, arg: int) -> int:
        e = call.mem.read_struct(abi.layout(abi.physdev_eoi, call.abi), arg)
        call.tracing and call.note(f"irq={e.irq}")
        self.pirqs.eoi(e.irq)
        return 0

    def irq_status_query(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.physdev_irq_status_query, call.abi)
        q = call.mem.read_struct(st, arg)
        call.tracing and call.note(f"irq={q.irq}")
        q.flags = self.pirqs.status_flags(q.irq)
        call.mem.write_struct(st, arg, q)
        return 0

    def get_free_pirq(self, call: Hypercall, arg: int) -> int:
        st = abi.layout(abi.physdev_get_free_pirq, call.abi)
        g = call.mem.read_struct(st, arg)
        call.tracing and call.note(f"type={g.type}")
        g.pirq = self.pirqs.get_free(g.type)
        call.mem.write_struct(st, arg, g)
        call.tracing and call.note(f"-> pirq {g.pirq}")
        return 0
