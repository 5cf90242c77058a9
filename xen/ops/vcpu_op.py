"""__HYPERVISOR_vcpu_op (public/vcpu.h; xen/common/domain.c do_vcpu_op).

HVM guests get the subset of xen/arch/x86/hvm/hypercall.c hvm_vcpu_op:
runstate/time/vcpu_info registration, runstate info and the timers;
up/down/is_up/initialise answer -ENOSYS (HVM vCPUs start by INIT-SIPI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from xen import abi
from xen.guest_access import GuestFault
from xen.hypercall import Hypercall, XenError, signed
from xen.time import MIN_PERIOD_NS
from vmm.x86 import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from xen.ops.sched_op import Shutdown
    from xen.shared_info import SharedInfo
    from xen.time import Timers, TimePublisher, XenTime
    from xen.vcpus import XenVcpus

STIME_DELTA_MAX = (1 << 62) - 1
HUGE_TIMEOUT_BITS = 50              # do_set_timer_op: more than 2^50 ns (~13 days) ahead is "huge"
HUGE_TIMEOUT_FALLBACK_NS = 100_000_000   # ... and fires in 100 ms instead


class VcpuOps:
    """``accel``: KvmXenAccel when KVM has all of its Xen support (it may keep runstate
    areas and must learn where vcpu_infos are), else None."""

    def __init__(self, vcpus: "XenVcpus", shared: "SharedInfo", timers: "Timers", clock: "XenTime",
                 time: "TimePublisher", memory, version: tuple[int, int], shutdown: "Shutdown", accel=None):
        self.vcpus = vcpus
        self.shared = shared
        self.timers = timers
        self.clock = clock
        self.time = time
        self.memory = memory
        self.version = version
        self.shutdown = shutdown
        self.accel = accel
        # hvm_vcpu_op: what an HVM guest may use; the rest is -ENOSYS
        self.ops: dict[int, Callable] = {
            abi.VCPUOP_is_up: self.is_up, abi.VCPUOP_up: self.up, abi.VCPUOP_down: self.down,
            abi.VCPUOP_register_vcpu_info: self.register_vcpu_info,
            abi.VCPUOP_register_runstate_memory_area: self.register_runstate_memory_area,
            abi.VCPUOP_register_vcpu_time_memory_area: self.register_vcpu_time_memory_area,
            abi.VCPUOP_get_runstate_info: self.get_runstate_info,
            abi.VCPUOP_set_periodic_timer: self.set_periodic_timer,
            abi.VCPUOP_stop_periodic_timer: self.stop_periodic_timer,
            abi.VCPUOP_set_singleshot_timer: self.set_singleshot_timer,
            abi.VCPUOP_stop_singleshot_timer: self.stop_singleshot_timer,
        }

    def handlers(self) -> dict:
        return {abi.Hypercall.vcpu_op: self.vcpu_op, abi.Hypercall.set_timer_op: self.set_timer_op}

    def vcpu_op(self, call: Hypercall) -> int:
        cmd, vcpuid, arg = call.args[0] & 0xFFFFFFFF, call.args[1] & 0xFFFFFFFF, call.args[2]   # (int, unsigned int, ...)
        call.tracing and call.note(f"cmd={abi.VCPUOP(cmd).name if cmd in abi.VCPUOP._value2member_map_ else cmd} vcpu={vcpuid}")
        op = self.ops.get(cmd)
        if op is None:
            raise XenError(abi.XenErrno.ENOSYS, f"VCPUOP {cmd} (not for HVM)")
        if not 0 <= vcpuid < len(self.vcpus):
            raise XenError(abi.XenErrno.ENOENT, f"vcpu {vcpuid}")
        return op(call, vcpuid, arg)

    # ------------------------------------------------------------ up / down
    def is_up(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        return int(self.vcpus.is_up(vcpuid, call.vcpu_id))

    def up(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        # do_vcpu_op: clear _VPF_down and wake it.  A vCPU never started by INIT/SIPI
        # stays for INIT/SIPI to start (HVM), as an up on it has nothing to resume.
        if self.vcpus.up(vcpuid):
            return 0
        if self.vcpus.is_up(vcpuid, call.vcpu_id):
            return 0
        raise XenError(abi.XenErrno.EINVAL, "start HVM vCPUs with INIT/SIPI")

    def down(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        me = call.vcpu_id
        if not any(self.vcpus.is_up(v, me) for v in range(len(self.vcpus)) if v != vcpuid):
            # common_vcpu_op: "Last vcpu going down?" -> domain_shutdown(SHUTDOWN_poweroff)
            self.shutdown(abi.SHUTDOWN_poweroff)
            return 0
        self.vcpus.down(vcpuid)          # vcpu_sleep_nosync: it stops before its next entry
        return 0

    # ------------------------------------------------------------ registered areas
    def register_vcpu_info(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        st = abi.layout(abi.vcpu_register_vcpu_info, call.abi)
        r = call.mem.read_struct(st, arg)
        size = abi.layout(abi.vcpu_info, call.abi).sizeof()
        gpa = (r.mfn << PAGE_SHIFT) + r.offset
        # common/domain.c map_vcpu_info.  Xen 4.18 made a bad offset -ENXIO and added the
        # alignment check; we need the alignment on every version (the event bits are
        # atomic RMWs on guest memory), so 4.17 gets -EINVAL for it.
        bad_offset = abi.XenErrno.ENXIO if self.version >= (4, 18) else abi.XenErrno.EINVAL
        if r.offset > PAGE_SIZE - size or r.offset & (call.compat and 3 or 7):
            raise XenError(bad_offset, f"vcpu_info offset {r.offset:#x}")
        if not self.memory.check(gpa, size):
            raise XenError(abi.XenErrno.EINVAL, f"vcpu_info at {r.mfn:#x}:{r.offset:#x}")
        if vcpuid != call.vcpu_id and self.vcpus.is_up(vcpuid, call.vcpu_id):
            raise XenError(abi.XenErrno.EINVAL, "another vCPU's vcpu_info while it runs")
        if vcpuid in self.shared.vcpu_info_gpa:
            raise XenError(abi.XenErrno.EINVAL, "vcpu_info already registered")
        self.shared.latch_width(call.compat)       # KVM's layout follows the latch
        self.shared.register_vcpu_info(vcpuid, gpa)
        if self.accel is not None:
            self.accel.vcpu_info(vcpuid, gpa)
        self.time.publish(vcpuid)
        call.tracing and call.note(f"vcpu_info -> {gpa:#x}")
        return 0

    def _area_gva(self, call: Hypercall, struct, arg: int) -> int:
        return call.mem.read_struct(abi.layout(struct, call.abi), arg).addr.v   # union {h; v}: the address

    def register_runstate_memory_area(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        gva = self._area_gva(call, abi.vcpu_register_runstate_memory_area, arg)
        xv = self.vcpus[vcpuid]
        xv.runstate_gva, xv.runstate_abi = (gva or None), call.abi
        xv.runstate_kvm, xv.runstate_gpa = False, None
        if gva and self.accel is not None and vcpuid == call.vcpu_id:
            # KVM takes a guest-physical address; Xen keeps the virtual one.  Only
            # while it fits in one page (KVM 6.1 maps one page).
            size = abi.layout(abi.vcpu_runstate_info, call.abi).sizeof()
            try:
                gpa = call.mem.translate(gva, write=True)
            except GuestFault:
                gpa = None        # unmapped now: ours to (try to) update, as Xen's
            if gpa is not None and gva % PAGE_SIZE + size <= PAGE_SIZE:
                xv.runstate_kvm = self.accel.runstate_area(vcpuid, gpa)
                xv.runstate_gpa = gpa if xv.runstate_kvm else None
        if gva and not xv.runstate_kvm:
            try:
                self.vcpus.write_runstate(vcpuid, call.mem)
            except GuestFault:
                pass      # Xen ignores this copy's result: the area is registered, 0
        return 0

    def register_vcpu_time_memory_area(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        gva = self._area_gva(call, abi.vcpu_register_time_memory_area, arg)
        self.vcpus[vcpuid].time_area_gva = gva or None
        if gva:
            try:
                self.vcpus.write_time_area(vcpuid, call.mem)
            except GuestFault:
                pass      # force_update_vcpu_system_time: no error either
        return 0

    def get_runstate_info(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        st = abi.layout(abi.vcpu_runstate_info, call.abi)
        call.mem.write_struct(st, arg, self.vcpus.runstate(vcpuid))
        return 0

    # ------------------------------------------------------------ timers
    def set_periodic_timer(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        period = call.mem.read_struct(abi.layout(abi.vcpu_set_periodic_timer, call.abi), arg).period_ns
        if period < MIN_PERIOD_NS or period > STIME_DELTA_MAX:
            raise XenError(abi.XenErrno.EINVAL, f"period {period}")
        self.timers.set_periodic(vcpuid, period)
        return 0

    def stop_periodic_timer(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        self.timers.stop_periodic(vcpuid)
        return 0

    def set_singleshot_timer(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        if vcpuid != call.vcpu_id:
            raise XenError(abi.XenErrno.EINVAL, "singleshot timers are per calling vCPU")
        t = call.mem.read_struct(abi.layout(abi.vcpu_set_singleshot_timer, call.abi), arg)
        call.tracing and call.note(f"timeout={t.timeout_abs_ns} flags={t.flags:#x}")
        if t.flags & abi.VCPU_SSHOTTMR_future and t.timeout_abs_ns < self.clock.now():
            raise XenError(abi.XenErrno.ETIME, "in the past")
        # set_timer() takes an s_time_t: from 2^63 on the deadline is negative, i.e. past.
        self.timers.set_singleshot(vcpuid, signed(t.timeout_abs_ns, 64))
        return 0

    def stop_singleshot_timer(self, call: Hypercall, vcpuid: int, arg: int) -> int:
        if vcpuid != call.vcpu_id:
            raise XenError(abi.XenErrno.EINVAL, "singleshot timers are per calling vCPU")
        self.timers.stop_singleshot(vcpuid)
        return 0

    def set_timer_op(self, call: Hypercall) -> int:
        """set_timer_op(timeout): a singleshot timer on the caller; 0 stops it.
        (The 32-bit ABI passes the 64-bit value in two registers, lo then hi.)"""
        timeout = signed(call.args[0] if not call.compat else (call.args[0] | call.args[1] << 32), 64)
        call.tracing and call.note(f"timeout={timeout}")
        if timeout == 0:
            self.timers.stop_singleshot(call.vcpu_id)
            return 0
        now = self.clock.now()
        offset = timeout - now
        if timeout < 0 or (offset > 0 and offset >> HUGE_TIMEOUT_BITS):
            # xen/common/sched/core.c do_set_timer_op: wrapped or ~13 days away (Linux jiffy
            # wrap, or "no timer at all" from old guests) -> a timer event in 100 ms.
            call.tracing and call.note("huge: +100 ms")
            timeout = now + HUGE_TIMEOUT_FALLBACK_NS
        self.timers.set_singleshot(call.vcpu_id, timeout)
        return 0
