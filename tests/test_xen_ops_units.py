"""Hypercall families as units, without booting anything: each family is built around
the subsystems it is handed (xen/ops/__init__.py families()), those around a real
``vmm.memory.GuestMemory`` -- no VM, no KVM.  Calls go through a ``HypercallTable``
as the transports' do (so errors come back as the guest's -errno), with the caller's
view of memory ``GuestAccess`` with paging off (gva == gpa).  The one stand-in is the
calling vCPU, of which a hypercall needs only ``.id`` on these paths."""

from __future__ import annotations

import pytest

from vmm import exitcodes
from vmm.locks import ordered_condition, ordered_lock
from vmm.memory import GuestMemory
from xen import abi
from xen.evtchn import ECS_FREE, ECS_INTERDOMAIN, ECS_IPI, ECS_UNBOUND, EventChannels
from xen.evtchn_2l import TwoLevelAbi
from xen.gnttab import GrantTable
from xen.guest_access import GuestAccess
from xen.hvm_params import HvmParams
from xen.hypercall import Hypercall, HypercallTable
from xen.ops.evtchn_op import EvtchnOps
from xen.ops.hvm_op import HvmOps
from xen.ops.memory_op import MemoryOps
from xen.ops.sched_op import SchedOps, Shutdown
from xen.ops.vcpu_op import VcpuOps
from xen.placement import PagePlacement
from xen.shared_info import LAYOUT, SharedInfo
from xen.time import MIN_PERIOD_NS, TimePublisher, Timers, XenTime
from xen.vcpus import XenVcpus

DOMID = 1
SI = 0x10000            # where the guest puts shared_info (RAM)
ARG = 0x20000           # hypercall argument structs
E = abi.XenErrno


class VcpuStandIn:
    """The calling vCPU: a Hypercall on these paths asks it only for its id."""

    def __init__(self, id: int):
        self.id = id


class Kit:
    """The subsystems of one domain, around guest memory only."""

    def __init__(self, nr_vcpus: int = 2, fifo: bool = True):
        self.mem = GuestMemory(16 << 20)
        self.ga = GuestAccess(self.mem, 0, 0, 0, 0, 0)         # paging off: gva == gpa
        self.lock = ordered_lock("xen.domain")
        self.shared = SharedInfo(self.mem)
        self.upcalls: list[int] = []
        self.shared.inject_upcall = self.upcalls.append
        self.evtchn = EventChannels(TwoLevelAbi(self.shared), self.shared, nr_vcpus, DOMID, wake=lambda: None)
        self.clock = XenTime(tsc_khz=2_000_000, tsc0=0)
        self.fired: list[int] = []
        self.timers = Timers(self.clock, self.fired.append)     # its thread is never started
        self.vcpus = XenVcpus([VcpuStandIn(i) for i in range(nr_vcpus)], self.clock)
        self.time = TimePublisher(self.clock, self.shared)
        self.exits: list[tuple[int, str]] = []
        self.shutdown = Shutdown(lambda code, why: self.exits.append((code, why)))
        self.callback_irq: list[int] = []
        self.params = HvmParams(self.lock, on_set={abi.HVM_PARAM_CALLBACK_IRQ: self.callback_irq.append})
        self.placement = PagePlacement(self.mem, lambda gpa: None, self._no_overlay, lambda gpa: None)
        self.gnttab = GrantTable(self.mem, self.placement)
        self.mapped: list[int] = []
        self.table = HypercallTable()
        for family in (EvtchnOps(self.evtchn, fifo=fifo), HvmOps(self.params, None, DOMID, nr_vcpus),
                       VcpuOps(self.vcpus, self.shared, self.timers, self.clock, self.time, self.mem, (4, 17),
                               self.shutdown),
                       SchedOps(self.shared, self.evtchn, None, self.vcpus, self.clock,
                                ordered_condition("xen.events"), lambda: True, self.shutdown, DOMID),
                       MemoryOps(self.mem, self.shared, self.placement, self.gnttab, self.lock,
                                 self.mapped.append, DOMID)):
            for nr, handler in family.handlers().items():
                self.table.register(nr, handler)

    @staticmethod
    def _no_overlay(gpa, size):
        raise AssertionError("no test here places a page outside RAM")

    def call(self, nr: int, *args: int, abi_: str = "64", vcpu: int = 0) -> int:
        """The hypercall's result as the guest sees it (negative: -errno)."""
        c = Hypercall(VcpuStandIn(vcpu), nr, tuple(args) + (0,) * (6 - len(args)), abi_, 0, self.mem, None,
                      mem=self.ga)
        r = self.table.dispatch(c)
        bits = 64 if abi_ == "64" else 32
        return r - (1 << bits) if r >> (bits - 1) else r

    def op(self, nr: int, cmd: int, struct, fields: dict, abi_: str = "64", vcpu: int = 0, extra=()):
        """Write ``fields`` as ``struct`` at ARG, make the call, return (result, struct read back)."""
        st = abi.layout(struct, abi_)
        self.ga.write_struct(st, ARG, fields)
        r = self.call(nr, cmd, *extra, ARG, abi_=abi_, vcpu=vcpu)
        return r, self.ga.read_struct(st, ARG)


@pytest.fixture
def kit():
    k = Kit()
    k.shared.map_at(SI)
    return k


# ---------------------------------------------------------------- event channels
EVTCHN = abi.Hypercall.event_channel_op
LAY = LAYOUT[False]


def pending_bit(k: Kit, port: int) -> bool:
    return bool(k.mem.read_u64(SI + LAY.pending + port // 64 * 8) >> port % 64 & 1)


def set_mask(k: Kit, port: int, masked: bool) -> None:
    addr = SI + LAY.mask + port // 64 * 8
    word = k.mem.read_u64(addr)
    k.mem.write_u64(addr, word | 1 << port % 64 if masked else word & ~(1 << port % 64))


def upcall_pending(k: Kit, vcpu: int) -> int:
    return k.mem.read(SI + vcpu * LAY.vcpu_info_size + LAY.upcall_pending, 1)[0]


def clear_upcall(k: Kit, vcpu: int) -> None:
    base = SI + vcpu * LAY.vcpu_info_size
    k.mem.write(base + LAY.upcall_pending, b"\0")
    k.mem.write_u64(base + LAY.pending_sel, 0)


def test_evtchn_alloc_bind_send_through_the_2l_bits(kit):
    r, a = kit.op(EVTCHN, abi.EVTCHNOP_alloc_unbound, abi.evtchn_alloc_unbound,
                  dict(dom=abi.DOMID_SELF, remote_dom=abi.DOMID_SELF, port=0))
    assert r == 0 and a.port == 1
    r, b = kit.op(EVTCHN, abi.EVTCHNOP_bind_interdomain, abi.evtchn_bind_interdomain,
                  dict(remote_dom=abi.DOMID_SELF, remote_port=1, local_port=0))
    assert r == 0 and b.local_port == 2
    # Xen marks the new local port pending at bind: bit, selector word 0, upcall_pending, one upcall
    assert pending_bit(kit, 2) and upcall_pending(kit, 0) == 1 and kit.upcalls == [0]
    assert kit.mem.read_u64(SI + LAY.pending_sel) == 1
    r, _ = kit.op(EVTCHN, abi.EVTCHNOP_send, abi.evtchn_send, dict(port=2))    # -> its peer, port 1
    assert r == 0 and pending_bit(kit, 1) and kit.upcalls == [0]           # upcall_pending was still set
    r, _ = kit.op(EVTCHN, abi.EVTCHNOP_bind_ipi, abi.evtchn_bind_ipi, dict(vcpu=1, port=0))
    r, ipi = kit.op(EVTCHN, abi.EVTCHNOP_status, abi.evtchn_status,
                    dict(dom=abi.DOMID_SELF, port=3, status=0, vcpu=0, u=dict(virq=0)))
    assert r == 0 and ipi.status == ECS_IPI and ipi.vcpu == 1
    kit.op(EVTCHN, abi.EVTCHNOP_send, abi.evtchn_send, dict(port=3))
    assert pending_bit(kit, 3) and kit.upcalls == [0, 1]                    # on vCPU 1's vcpu_info


def test_evtchn_masked_send_and_unmask_reraises(kit):
    _, a = kit.op(EVTCHN, abi.EVTCHNOP_bind_ipi, abi.evtchn_bind_ipi, dict(vcpu=0, port=0))
    set_mask(kit, a.port, True)
    kit.op(EVTCHN, abi.EVTCHNOP_send, abi.evtchn_send, dict(port=a.port))
    assert pending_bit(kit, a.port) and kit.upcalls == [] and upcall_pending(kit, 0) == 0
    r, _ = kit.op(EVTCHN, abi.EVTCHNOP_unmask, abi.evtchn_unmask, dict(port=a.port))
    assert r == 0 and kit.upcalls == [0] and upcall_pending(kit, 0) == 1
    assert not kit.mem.read_u64(SI + LAY.mask) >> a.port & 1
    # unmask of a port that isn't pending: nothing raised
    clear_upcall(kit, 0)
    kit.mem.write_u64(SI + LAY.pending, 0)
    set_mask(kit, a.port, True)
    kit.op(EVTCHN, abi.EVTCHNOP_unmask, abi.evtchn_unmask, dict(port=a.port))
    assert kit.upcalls == [0]


def test_evtchn_close_status_and_errors(kit):
    _, a = kit.op(EVTCHN, abi.EVTCHNOP_alloc_unbound, abi.evtchn_alloc_unbound,
                  dict(dom=abi.DOMID_SELF, remote_dom=0, port=0))
    _, s = kit.op(EVTCHN, abi.EVTCHNOP_status, abi.evtchn_status,
                  dict(dom=abi.DOMID_SELF, port=a.port, status=0, vcpu=0, u=dict(virq=0)))
    assert s.status == ECS_UNBOUND and s.u.unbound.dom == 0
    r, _ = kit.op(EVTCHN, abi.EVTCHNOP_send, abi.evtchn_send, dict(port=a.port))
    assert r == 0 and not pending_bit(kit, a.port)           # unbound: nobody listens, dropped
    r, _ = kit.op(EVTCHN, abi.EVTCHNOP_close, abi.evtchn_close, dict(port=a.port))
    assert r == 0
    _, s = kit.op(EVTCHN, abi.EVTCHNOP_status, abi.evtchn_status,
                  dict(dom=abi.DOMID_SELF, port=a.port, status=0, vcpu=0, u=dict(virq=0)))
    assert s.status == ECS_FREE
    assert kit.op(EVTCHN, abi.EVTCHNOP_close, abi.evtchn_close, dict(port=a.port))[0] == -E.EINVAL
    assert kit.op(EVTCHN, abi.EVTCHNOP_send, abi.evtchn_send, dict(port=4096))[0] == -E.EINVAL
    assert kit.op(EVTCHN, abi.EVTCHNOP_status, abi.evtchn_status,
                  dict(dom=5, port=1, status=0, vcpu=0, u=dict(virq=0)))[0] == -E.ESRCH
    assert kit.op(EVTCHN, abi.EVTCHNOP_bind_ipi, abi.evtchn_bind_ipi, dict(vcpu=2, port=0))[0] == -E.ENOENT
    # 2-level ports have no priority (evtchn_set_priority: the ABI has no hook)
    assert kit.op(EVTCHN, abi.EVTCHNOP_set_priority, abi.evtchn_set_priority,
                  dict(port=1, priority=0))[0] == -E.ENOSYS
    assert kit.call(EVTCHN, 99, ARG) == -E.ENOSYS


def test_fifo_offered_unless_turned_off(kit):
    """XenConfig.fifo / --xen-no-fifo: without it the FIFO sub-ops are -ENOSYS (QEMU's answer,
    Linux then stays 2-level); with it init_control switches the domain."""
    args = dict(control_gfn=(SI >> 12) + 8, offset=0, vcpu=0, link_bits=0)
    off = Kit(fifo=False)
    off.shared.map_at(SI)
    for cmd, struct, fields in ((abi.EVTCHNOP_init_control, abi.evtchn_init_control, args),
                                (abi.EVTCHNOP_expand_array, abi.evtchn_expand_array, dict(array_gfn=0)),
                                (abi.EVTCHNOP_set_priority, abi.evtchn_set_priority, dict(port=1, priority=0))):
        assert off.op(EVTCHN, cmd, struct, fields)[0] == -E.ENOSYS
    assert off.evtchn.port_abi.name == "2-level"
    r, a = kit.op(EVTCHN, abi.EVTCHNOP_init_control, abi.evtchn_init_control, args)
    assert r == 0 and a.link_bits == abi.EVTCHN_FIFO_LINK_BITS
    assert kit.evtchn.port_abi.name != "2-level"


def test_evtchn_port_limit_follows_the_latched_width(kit):
    """2-level: 1024 ports with the compat layout, 4096 with the 64-bit one."""
    assert kit.evtchn.nr_ports() == 4096
    kit.shared.latch_width(True)
    assert kit.evtchn.nr_ports() == 1024 and kit.shared.layout is LAYOUT[True]
    r, _ = kit.op(EVTCHN, abi.EVTCHNOP_send, abi.evtchn_send, dict(port=1024), abi_="32")
    assert r == -E.EINVAL


def test_interdomain_close_returns_the_peer_to_unbound(kit):
    _, a = kit.op(EVTCHN, abi.EVTCHNOP_alloc_unbound, abi.evtchn_alloc_unbound,
                  dict(dom=abi.DOMID_SELF, remote_dom=abi.DOMID_SELF, port=0))
    _, b = kit.op(EVTCHN, abi.EVTCHNOP_bind_interdomain, abi.evtchn_bind_interdomain,
                  dict(remote_dom=abi.DOMID_SELF, remote_port=a.port, local_port=0))
    _, s = kit.op(EVTCHN, abi.EVTCHNOP_status, abi.evtchn_status,
                  dict(dom=abi.DOMID_SELF, port=a.port, status=0, vcpu=0, u=dict(virq=0)))
    assert s.status == ECS_INTERDOMAIN and s.u.interdomain.port == b.local_port and s.u.interdomain.dom == DOMID
    kit.op(EVTCHN, abi.EVTCHNOP_close, abi.evtchn_close, dict(port=b.local_port))
    assert not pending_bit(kit, b.local_port)
    _, s = kit.op(EVTCHN, abi.EVTCHNOP_status, abi.evtchn_status,
                  dict(dom=abi.DOMID_SELF, port=a.port, status=0, vcpu=0, u=dict(virq=0)))
    assert s.status == ECS_UNBOUND


# ---------------------------------------------------------------- hvm_op params
HVM = abi.Hypercall.hvm_op


def hvm_param(kit, op, index, value=0, domid=abi.DOMID_SELF):
    return kit.op(HVM, op, abi.xen_hvm_param, dict(domid=domid, index=index, value=value))


def test_hvm_params_policy(kit):
    cb = abi.HVM_PARAM_CALLBACK_TYPE_VECTOR << 56 | 0xF3
    assert hvm_param(kit, abi.HVMOP_set_param, abi.HVM_PARAM_CALLBACK_IRQ, cb)[0] == 0
    assert kit.callback_irq == [cb]                          # the upcall is told
    r, p = hvm_param(kit, abi.HVMOP_get_param, abi.HVM_PARAM_CALLBACK_IRQ)
    assert r == 0 and p.value == cb
    assert hvm_param(kit, abi.HVMOP_get_param, abi.HVM_PARAM_CONSOLE_PFN, 77)[1].value == 0   # none: 0
    kit.params.provide(abi.HVM_PARAM_CONSOLE_PFN, 0x1234)
    assert hvm_param(kit, abi.HVMOP_get_param, abi.HVM_PARAM_CONSOLE_PFN)[1].value == 0x1234
    assert hvm_param(kit, abi.HVMOP_set_param, abi.HVM_PARAM_CONSOLE_PFN, 1)[0] == -E.EPERM   # the toolstack's
    assert hvm_param(kit, abi.HVMOP_get_param, abi.HVM_PARAM_IOREQ_PFN)[0] == -E.EPERM
    assert hvm_param(kit, abi.HVMOP_set_param, abi.HVM_PARAM_STORE_EVTCHN, 5)[0] == 0
    assert hvm_param(kit, abi.HVMOP_get_param, abi.HVM_PARAM_STORE_EVTCHN)[1].value == 5
    assert hvm_param(kit, abi.HVMOP_get_param, abi.HVM_NR_PARAMS)[0] == -E.EINVAL
    assert hvm_param(kit, abi.HVMOP_set_param, abi.HVM_PARAM_CALLBACK_IRQ, 0, domid=7)[0] == -E.ESRCH
    assert kit.callback_irq == [cb]
    assert kit.call(HVM, abi.HVMOP_pagetable_dying, ARG) == -E.ENOSYS


def test_hvm_upcall_vector_arguments(kit):
    r, _ = kit.op(HVM, abi.HVMOP_set_evtchn_upcall_vector, abi.xen_hvm_evtchn_upcall_vector,
                  dict(vcpu=0, vector=0x0F))
    assert r == -E.EINVAL
    r, _ = kit.op(HVM, abi.HVMOP_set_evtchn_upcall_vector, abi.xen_hvm_evtchn_upcall_vector,
                  dict(vcpu=2, vector=0xF3))
    assert r == -E.ENOENT


# ---------------------------------------------------------------- vcpu_op
VCPU = abi.Hypercall.vcpu_op


def vcpu_op(kit, cmd, vcpuid, struct=None, fields=None, vcpu=0, abi_="64"):
    if struct is None:
        return kit.call(VCPU, cmd, vcpuid, 0, vcpu=vcpu, abi_=abi_), None
    return kit.op(VCPU, cmd, struct, fields, abi_=abi_, vcpu=vcpu, extra=(vcpuid,))


def test_vcpu_op_timer_arguments(kit):
    per = abi.vcpu_set_periodic_timer
    assert vcpu_op(kit, abi.VCPUOP_set_periodic_timer, 1, per, dict(period_ns=MIN_PERIOD_NS - 1))[0] == -E.EINVAL
    assert vcpu_op(kit, abi.VCPUOP_set_periodic_timer, 1, per, dict(period_ns=1 << 62))[0] == -E.EINVAL
    assert vcpu_op(kit, abi.VCPUOP_set_periodic_timer, 1, per, dict(period_ns=MIN_PERIOD_NS))[0] == 0
    assert kit.timers.periodic[1][0] == MIN_PERIOD_NS
    assert vcpu_op(kit, abi.VCPUOP_stop_periodic_timer, 1)[0] == 0 and 1 not in kit.timers.periodic
    ss = abi.vcpu_set_singleshot_timer
    far = kit.clock.now() + 10**12
    assert vcpu_op(kit, abi.VCPUOP_set_singleshot_timer, 1, ss,
                   dict(timeout_abs_ns=far, flags=0), vcpu=0)[0] == -E.EINVAL      # another vCPU's
    assert vcpu_op(kit, abi.VCPUOP_set_singleshot_timer, 0, ss,
                   dict(timeout_abs_ns=1, flags=abi.VCPU_SSHOTTMR_future))[0] == -E.ETIME
    assert vcpu_op(kit, abi.VCPUOP_set_singleshot_timer, 0, ss, dict(timeout_abs_ns=far, flags=0))[0] == 0
    assert kit.timers.singleshot == {0: far}
    assert vcpu_op(kit, abi.VCPUOP_stop_singleshot_timer, 1, vcpu=0)[0] == -E.EINVAL
    assert vcpu_op(kit, abi.VCPUOP_stop_singleshot_timer, 0)[0] == 0 and kit.timers.singleshot == {}
    assert vcpu_op(kit, abi.VCPUOP_set_periodic_timer, 2, per, dict(period_ns=MIN_PERIOD_NS))[0] == -E.ENOENT
    assert vcpu_op(kit, abi.VCPUOP_initialise, 0)[0] == -E.ENOSYS                  # not for HVM
    # set_timer_op: 0 stops; a deadline ~13 days away becomes +100 ms
    assert kit.call(abi.Hypercall.set_timer_op, kit.clock.now() + (1 << 51)) == 0
    assert kit.timers.singleshot[0] - kit.clock.now() <= 100_000_000
    assert kit.call(abi.Hypercall.set_timer_op, 0) == 0 and kit.timers.singleshot == {}


def test_vcpu_op_runstate_area_and_info(kit):
    AREA = 0x30000
    r, _ = vcpu_op(kit, abi.VCPUOP_register_runstate_memory_area, 0,
                   abi.vcpu_register_runstate_memory_area, dict(addr=dict(v=AREA)))
    assert r == 0 and kit.vcpus[0].runstate_gva == AREA
    st = abi.layout(abi.vcpu_runstate_info, "64")
    info = kit.ga.read_struct(st, AREA)
    assert info.state == abi.RUNSTATE_running and info.state_entry_time & abi.XEN_RUNSTATE_UPDATE == 0
    kit.vcpus.set_runstate(0, abi.RUNSTATE_blocked, kit.ga)
    assert kit.ga.read_struct(st, AREA).state == abi.RUNSTATE_blocked
    r, _ = vcpu_op(kit, abi.VCPUOP_get_runstate_info, 1, abi.vcpu_runstate_info,
                   dict(state=9, state_entry_time=0, time=[0, 0, 0, 0]))
    assert r == 0 and kit.ga.read_struct(st, ARG).state == abi.RUNSTATE_running
    # a bad vcpu_info offset: -EINVAL on 4.17 (misaligned)
    r, _ = vcpu_op(kit, abi.VCPUOP_register_vcpu_info, 0, abi.vcpu_register_vcpu_info,
                   dict(mfn=0x40, offset=3, rsvd=0))
    assert r == -E.EINVAL and 0 not in kit.shared.vcpu_info_gpa


def test_vcpu_info_registration_latches_the_width(kit):
    r, _ = vcpu_op(kit, abi.VCPUOP_register_vcpu_info, 0, abi.vcpu_register_vcpu_info,
                   dict(mfn=0x40, offset=0x40, rsvd=0), abi_="32")
    assert r == 0 and kit.shared.compat and kit.shared.vcpu_info_gpa == {0: 0x40040}
    lay = LAYOUT[True]
    assert kit.mem.read(0x40040 + lay.upcall_pending, 1) == b"\1" and kit.upcalls == [0]   # all marked pending
    assert vcpu_op(kit, abi.VCPUOP_register_vcpu_info, 0, abi.vcpu_register_vcpu_info,
                   dict(mfn=0x41, offset=0, rsvd=0))[0] == -E.EINVAL                       # once only


# ---------------------------------------------------------------- sched_op shutdown
SCHED = abi.Hypercall.sched_op


def shutdown(kit, cmd, reason):
    return kit.op(SCHED, cmd, abi.sched_shutdown, dict(reason=reason))[0]


def test_sched_shutdown_reasons(kit):
    assert shutdown(kit, abi.SCHEDOP_shutdown, abi.SHUTDOWN_poweroff) == 0
    assert shutdown(kit, abi.SCHEDOP_shutdown, abi.SHUTDOWN_reboot) == 0
    assert shutdown(kit, abi.SCHEDOP_shutdown, 0x1FF) == 0                # (u8)reason: 0xFF, unknown
    assert [c for c, _ in kit.exits] == [exitcodes.GUEST_POWEROFF, exitcodes.GUEST_RESET, exitcodes.GUEST_FAILURE]
    assert "unknown reason 255" in kit.exits[2][1]
    assert shutdown(kit, abi.SCHEDOP_shutdown, abi.SHUTDOWN_suspend) == -E.EOPNOTSUPP
    assert len(kit.exits) == 3


def test_sched_shutdown_code_wins_and_remote_shutdown_is_refused(kit):
    assert shutdown(kit, abi.SCHEDOP_shutdown_code, abi.SHUTDOWN_crash) == 0
    assert shutdown(kit, abi.SCHEDOP_shutdown_code, abi.SHUTDOWN_reboot) == 0    # the first stays
    assert shutdown(kit, abi.SCHEDOP_shutdown, abi.SHUTDOWN_poweroff) == 0
    assert kit.exits == [(exitcodes.GUEST_FAILURE, "guest crashed (SCHEDOP_shutdown)")]
    rs = abi.sched_remote_shutdown
    assert kit.op(SCHED, abi.SCHEDOP_remote_shutdown, rs, dict(domain_id=abi.DOMID_SELF, reason=0))[0] == -E.EPERM
    assert kit.op(SCHED, abi.SCHEDOP_remote_shutdown, rs, dict(domain_id=9, reason=0))[0] == -E.ESRCH
    assert kit.call(SCHED, abi.SCHEDOP_yield) == 0 and kit.call(SCHED, 77) == -E.ENOSYS


# ---------------------------------------------------------------- memory_op add_to_physmap
MEMORY = abi.Hypercall.memory_op


def add_to_physmap(kit, space, idx, gpfn, domid=abi.DOMID_SELF, abi_="64"):
    return kit.op(MEMORY, abi.XENMEM_add_to_physmap, abi.xen_add_to_physmap,
                  dict(domid=domid, size=0, space=space, idx=idx, gpfn=gpfn), abi_=abi_)[0]


def test_add_to_physmap_validation():
    kit = Kit()
    assert add_to_physmap(kit, abi.XENMAPSPACE_shared_info, 1, 0x50) == -E.EINVAL         # idx 0 only
    assert add_to_physmap(kit, abi.XENMAPSPACE_shared_info, 0, 0x50, domid=3) == -E.ESRCH
    assert add_to_physmap(kit, abi.XENMAPSPACE_gmfn_foreign, 0, 0x50) == -E.ENOSYS        # batch op only
    assert add_to_physmap(kit, abi.XENMAPSPACE_gmfn_range, 0, 0x50) == -E.EOPNOTSUPP
    assert add_to_physmap(kit, abi.XENMAPSPACE_gmfn, 0, 0x50) == -E.EOPNOTSUPP
    assert add_to_physmap(kit, 99, 0, 0x50) == -E.EINVAL
    assert add_to_physmap(kit, abi.XENMAPSPACE_shared_info, 0, 0xFEC00) == -E.EINVAL      # the I/OAPIC..4G range
    assert add_to_physmap(kit, abi.XENMAPSPACE_grant_table, 64, 0x60) == -E.EINVAL        # >= MAX_FRAMES
    assert kit.shared.gpa is None and kit.mapped == [] and not kit.shared.compat


def test_add_to_physmap_shared_info_moves_and_latches():
    kit = Kit()
    mem, addr = kit.shared.si_at(LAY.wc_sec)                               # the shadow page, for now
    mem.write(addr, b"\x2a\0\0\0")
    assert add_to_physmap(kit, abi.XENMAPSPACE_shared_info, 0, 0x50, abi_="32") == 0
    assert kit.shared.gpa == 0x50000 and kit.shared.compat and kit.mapped == [0x50000]
    assert kit.mem.read(0x50000 + LAY.wc_sec, 4) == b"\x2a\0\0\0"          # the shadow was copied in
    assert add_to_physmap(kit, abi.XENMAPSPACE_shared_info, 0, 0x51) == 0  # moves along, 64-bit now
    assert kit.shared.gpa == 0x51000 and not kit.shared.compat
    assert kit.mem.read(0x51000 + LAY.wc_sec, 4) == b"\x2a\0\0\0"
    assert add_to_physmap(kit, abi.XENMAPSPACE_grant_table, 0, 0x60) == 0
    assert kit.gnttab.frame_gfn(0) == 0x60
