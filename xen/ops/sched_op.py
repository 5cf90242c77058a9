"""__HYPERVISOR_sched_op (public/sched.h; xen/common/sched/core.c do_sched_op).

block and poll park the calling vCPU's thread (it is not in KVM_RUN) on the
domain's event condition; every event-channel delivery and the VM's end wake
it, and it re-checks its condition.  Every few ms it also runs the calls
other threads queued for this vCPU (Vcpu.service), and returns early (0, a spurious
wake-up, which Xen allows) if the vCPU is being paused, taken down or stopped.  Interrupts KVM
holds for the vCPU (LAPIC timer, IPIs) don't end the wait; on Xen they would.  The one
exception: the vCPU's singleshot timer when KVM runs it (xen/kvm_timer.py) ends the wait at
its deadline, and KVM injects VIRQ_TIMER as the vCPU re-enters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vmm import exitcodes
from xen import abi
from xen.hypercall import Hypercall, XenError, signed
from xen.ops import check_domid

if TYPE_CHECKING:
    from xen.evtchn import EventChannels
    from xen.kvm_timer import KvmTimers
    from xen.shared_info import SharedInfo
    from xen.time import XenTime
    from xen.upcall import Upcall
    from xen.vcpus import XenVcpus

MAX_POLL_PORTS = 128          # xen/common/sched/core.c do_poll: nr_ports > 128 -> -EINVAL
NSEC = 1_000_000_000
SERVICE_S = 0.005             # how often a parked vCPU runs its queued requests
# KVM's timer (xen/kvm_timer.py) fires on the host's clock; the wait ends this long after its
# deadline on ours, so that KVM has noted the expiry and injects it before the guest runs
# (vcpu_run: KVM_REQ_UNBLOCK keeps the vCPU out of the guest until the timer IRQ is in).
KVM_TIMER_MARGIN_NS = 100_000

# SCHEDOP_shutdown: these end the VM with the VMM's exit code; suspend and soft_reset are
# refused (-EOPNOTSUPP: no save/restore yet); any other reason ends it as a failure (82).
SHUTDOWN_EXIT = {
    abi.SHUTDOWN_poweroff: (exitcodes.GUEST_POWEROFF, "guest powered off (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_reboot: (exitcodes.GUEST_RESET, "guest rebooted (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_crash: (exitcodes.GUEST_FAILURE, "guest crashed (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_watchdog: (exitcodes.GUEST_FAILURE, "guest watchdog fired (SCHEDOP_shutdown)"),
}


class Shutdown:
    """common/domain.c domain_shutdown(), with SCHEDOP_shutdown_code's code.
    ``request_exit(code, why)`` ends the VM (Vm.request_exit)."""

    def __init__(self, request_exit: Callable[[int, str], None]):
        self.request_exit = request_exit
        self.code: int | None = None          # SCHEDOP_shutdown_code: the first one set stays

    def set_code(self, reason: int) -> None:
        if self.code is None:
            self.code = reason

    def __call__(self, reason: int) -> None:
        """A code recorded by SCHEDOP_shutdown_code wins over the reason, whatever either
        is.  Raises XenError for what we can't do (suspend)."""
        if self.code is not None:
            reason = self.code
        if reason in SHUTDOWN_EXIT:
            self.request_exit(*SHUTDOWN_EXIT[reason])
        elif reason in (abi.SHUTDOWN_suspend, abi.SHUTDOWN_soft_reset):
            # Xen stops the domain for the toolstack to save or soft-reset it; we can't yet,
            # and say so rather than let the guest believe it was suspended.
            raise XenError(abi.XenErrno.EOPNOTSUPP, f"shutdown reason {reason}")
        else:   # any other reason also shuts the domain down on Xen; xl then destroys it
            self.request_exit(exitcodes.GUEST_FAILURE, f"guest shut down with unknown reason {reason}")


class SchedOps:
    """``events``: the domain's condition every delivery notifies; ``is_running()``: False
    once the VM ends (a blocked vCPU returns)."""

    def __init__(self, shared: "SharedInfo", evtchn: "EventChannels", upcall: "Upcall", vcpus: "XenVcpus",
                 clock: "XenTime", events, is_running: Callable[[], bool], shutdown: Shutdown, domid: int,
                 kvm_timers: "KvmTimers | None" = None):
        self.shared = shared
        self.evtchn = evtchn
        self.upcall = upcall
        self.vcpus = vcpus
        self.clock = clock
        self.events = events
        self.is_running = is_running
        self.shutdown = shutdown
        self.domid = domid
        self.kvm_timers = kvm_timers
        self.ops = {abi.SCHEDOP_yield: self.yield_, abi.SCHEDOP_block: self.block, abi.SCHEDOP_poll: self.poll,
                    abi.SCHEDOP_shutdown: self.shutdown_op, abi.SCHEDOP_shutdown_code: self.shutdown_code,
                    abi.SCHEDOP_remote_shutdown: self.remote_shutdown}

    def handlers(self) -> dict:
        # sched_op_compat (6) is PV-only: not in the HVM hypercall table, so -ENOSYS.
        return {abi.Hypercall.sched_op: self.sched_op}

    def sched_op(self, call: Hypercall) -> int:
        cmd, arg = call.args[0] & 0xFFFFFFFF, call.args[1]      # do_sched_op(int cmd, ...)
        call.tracing and call.note(f"cmd={abi.SCHEDOP(cmd).name if cmd in abi.SCHEDOP._value2member_map_ else cmd}")
        op = self.ops.get(cmd)
        if op is None:
            raise XenError(abi.XenErrno.ENOSYS, f"SCHEDOP {cmd}")
        return op(call, arg)

    # ------------------------------------------------------------ waiting
    def wait(self, call: Hypercall, cond, deadline_ns: int | None) -> None:
        """Block until cond() or the deadline (system time) or the VM's end;
        the vCPU is RUNSTATE_blocked meanwhile (and its runstate area says so)."""
        self.vcpus.set_runstate(call.vcpu_id, abi.RUNSTATE_blocked, call.mem)
        try:
            self._wait(call.vcpu, cond, deadline_ns)
        finally:
            if not call.vcpu.offline:     # taken down meanwhile: VCPUOP_down wrote "offline"
                self.vcpus.set_runstate(call.vcpu_id, abi.RUNSTATE_running, call.mem)

    def _wait(self, vcpu, cond, deadline_ns: int | None) -> None:
        events = self.events
        while True:
            until = deadline_ns
            if self.kvm_timers is not None:       # KVM's timer for this vCPU: read each round
                kvm = self.kvm_timers.deadline(vcpu)   # (a move to KVM may run in service())
                if kvm is not None and (until is None or kvm + KVM_TIMER_MARGIN_NS < until):
                    until = kvm + KVM_TIMER_MARGIN_NS
            with events:
                if not self.is_running() or cond():
                    return
                wait_s = SERVICE_S
                if until is not None:
                    left = until - self.clock.now()
                    if left <= 0:
                        return
                    wait_s = min(left / NSEC, SERVICE_S)
                events.wait(wait_s)
            if vcpu.service():           # outside the events lock: requests may deliver events
                return

    def _kicked(self, me: int):
        """A test for "an upcall was raised for ``me`` since now" (Xen's vcpu_kick)."""
        kicks = self.upcall.kicks
        k0 = kicks[me]
        return lambda: kicks[me] != k0

    # ------------------------------------------------------------ sub-ops
    def yield_(self, call: Hypercall, arg: int) -> int:
        return 0

    def block(self, call: Hypercall, arg: int) -> int:
        # vcpu_block_enable_events: event delivery on (upcall_mask = 0), then sleep
        # until a kick.  Xen's vcpu_block returns at once only if the pending upcall
        # is deliverable (IF=1): with IF=0 and the event already in, it sleeps until
        # some *other* interrupt.  We return at once for any pending upcall: an early
        # return is allowed (callers re-check), a vCPU asleep for good is not.
        me = call.vcpu_id
        kicked = self._kicked(me)
        self.shared.clear_upcall_mask(me)
        pending = lambda: self.shared.upcall_pending(me)          # noqa: E731
        if not pending():
            self.wait(call, lambda: kicked() or pending(), None)
        return 0

    def poll(self, call: Hypercall, arg: int) -> int:
        me = call.vcpu_id
        kicked = self._kicked(me)
        st = abi.layout(abi.sched_poll, call.abi)
        p = call.mem.read_struct(st, arg)
        if p.nr_ports > MAX_POLL_PORTS:
            raise XenError(abi.XenErrno.EINVAL, f"{p.nr_ports} ports")
        ports = [int.from_bytes(call.mem.read(p.ports + 4 * i, 4), "little") for i in range(p.nr_ports)]
        nr = self.evtchn.nr_ports()
        if any(not 0 <= q < nr for q in ports):
            raise XenError(abi.XenErrno.EINVAL, "bad port")
        call.tracing and call.note(f"ports={ports} timeout={p.timeout}")
        # do_poll: at once if a deliverable event or a polled port is pending; else
        # until a polled port fires (evtchn_check_pollers), a kick, or the timeout.
        # local_events_need_delivery() on HVM (hvm_local_events_need_delivery): an upcall
        # pending and deliverable, i.e. IF=1; evtchn_upcall_mask plays no part for HVM.
        if (call.vcpu.fd.run.if_flag and self.shared.upcall_pending(me)) or self.evtchn.any_pending(ports):
            return 0
        self.wait(call, lambda: kicked() or self.evtchn.any_pending(ports),
                  signed(p.timeout, 64) if p.timeout else None)      # set_timer(s_time_t)
        return 0

    def shutdown_op(self, call: Hypercall, arg: int) -> int:
        reason = call.mem.read_struct(abi.layout(abi.sched_shutdown, call.abi), arg).reason & 0xFF
        call.tracing and call.note(f"reason={reason}")    # domain_shutdown(d, (u8)reason)
        self.shutdown(reason)
        return 0

    def shutdown_code(self, call: Hypercall, arg: int) -> int:
        reason = call.mem.read_struct(abi.layout(abi.sched_shutdown, call.abi), arg).reason & 0xFF
        self.shutdown.set_code(reason)                    # the first code set stays (as a u8)
        return 0

    def remote_shutdown(self, call: Hypercall, arg: int) -> int:
        r = call.mem.read_struct(abi.layout(abi.sched_remote_shutdown, call.abi), arg)
        check_domid(r.domain_id, self.domid)
        raise XenError(abi.XenErrno.EPERM, "remote_shutdown is privileged")
