"""__HYPERVISOR_sched_op (public/sched.h; xen/common/sched/core.c do_sched_op).

block and poll park the calling vCPU's thread (it is not in KVM_RUN) on the
domain's event condition; every event-channel delivery and the VM's end wake
it, and it re-checks its condition.  Every few ms it also runs the calls
other threads queued for this vCPU (Vcpu.service), and returns early (0, a spurious
wake-up, which Xen allows) if the vCPU is being paused, taken down or stopped.  Interrupts KVM
holds for the vCPU (LAPIC timer, IPIs) don't end the wait; on Xen they would.
"""

from __future__ import annotations

from vmm import exitcodes
from xen import abi
from xen.hypercall import Hypercall, XenError, signed
from xen.ops import check_domid

MAX_POLL_PORTS = 128          # xen/common/sched/core.c do_poll: nr_ports > 128 -> -EINVAL
NSEC = 1_000_000_000
SERVICE_S = 0.005             # how often a parked vCPU runs its queued requests

# SCHEDOP_shutdown: these end the VM with the VMM's exit code; suspend and soft_reset are
# refused (-EOPNOTSUPP: no save/restore yet); any other reason ends it as a failure (82).
SHUTDOWN_EXIT = {
    abi.SHUTDOWN_poweroff: (exitcodes.GUEST_POWEROFF, "guest powered off (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_reboot: (exitcodes.GUEST_RESET, "guest rebooted (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_crash: (exitcodes.GUEST_FAILURE, "guest crashed (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_watchdog: (exitcodes.GUEST_FAILURE, "guest watchdog fired (SCHEDOP_shutdown)"),
}


def shutdown(domain, reason: int) -> None:
    """common/domain.c domain_shutdown(): a code recorded by SCHEDOP_shutdown_code wins over
    the reason, whatever either is.  Raises XenError for what we can't do (suspend)."""
    if domain.shutdown_code is not None:
        reason = domain.shutdown_code
    if reason in SHUTDOWN_EXIT:
        domain.vm.request_exit(*SHUTDOWN_EXIT[reason])
    elif reason in (abi.SHUTDOWN_suspend, abi.SHUTDOWN_soft_reset):
        # Xen stops the domain for the toolstack to save or soft-reset it; we can't yet,
        # and say so rather than let the guest believe it was suspended.
        raise XenError(abi.XenErrno.EOPNOTSUPP, f"shutdown reason {reason}")
    else:   # any other reason also shuts the domain down on Xen; xl then destroys it
        domain.vm.request_exit(exitcodes.GUEST_FAILURE, f"guest shut down with unknown reason {reason}")


def handlers(domain):
    def wait(call: Hypercall, cond, deadline_ns: int | None) -> None:
        """Block until cond() or the deadline (system time) or the VM's end;
        the vCPU is RUNSTATE_blocked meanwhile (and its runstate area says so)."""
        domain.set_runstate(call.vcpu_id, abi.RUNSTATE_blocked, call.mem)
        try:
            _wait(call.vcpu, cond, deadline_ns)
        finally:
            if not call.vcpu.offline:     # taken down meanwhile: VCPUOP_down wrote "offline"
                domain.set_runstate(call.vcpu_id, abi.RUNSTATE_running, call.mem)

    def _wait(vcpu, cond, deadline_ns: int | None) -> None:
        while True:
            with domain.events:
                if not domain.running or cond():
                    return
                wait_s = SERVICE_S
                if deadline_ns is not None:
                    left = deadline_ns - domain.clock.now()
                    if left <= 0:
                        return
                    wait_s = min(left / NSEC, SERVICE_S)
                domain.events.wait(wait_s)
            if vcpu.service():           # outside the events lock: requests may deliver events
                return

    def sched_op(call: Hypercall) -> int:
        cmd, arg = call.args[0] & 0xFFFFFFFF, call.args[1]      # do_sched_op(int cmd, ...)
        call.tracing and call.note(f"cmd={abi.SCHEDOP(cmd).name if cmd in abi.SCHEDOP._value2member_map_ else cmd}")
        me = call.vcpu_id
        if cmd == abi.SCHEDOP_yield:
            return 0
        kicks = domain.upcall.kicks
        k0 = kicks[me]
        kicked = lambda: kicks[me] != k0                                      # noqa: E731
        # local_events_need_delivery() on HVM (hvm_local_events_need_delivery): an upcall
        # pending and deliverable, i.e. IF=1; evtchn_upcall_mask plays no part for HVM.
        deliverable = lambda: (call.vcpu.fd.run.if_flag                        # noqa: E731
                               and domain.shared.upcall_pending(me))
        if cmd == abi.SCHEDOP_block:
            # vcpu_block_enable_events: event delivery on (upcall_mask = 0), then sleep
            # until a kick.  Xen's vcpu_block returns at once only if the pending upcall
            # is deliverable (IF=1): with IF=0 and the event already in, it sleeps until
            # some *other* interrupt.  We return at once for any pending upcall: an early
            # return is allowed (callers re-check), a vCPU asleep for good is not.
            domain.shared.clear_upcall_mask(me)
            pending = lambda: domain.shared.upcall_pending(me)          # noqa: E731
            if not pending():
                wait(call, lambda: kicked() or pending(), None)
            return 0
        if cmd == abi.SCHEDOP_poll:
            st = abi.layout(abi.sched_poll, call.abi)
            p = call.mem.read_struct(st, arg)
            if p.nr_ports > MAX_POLL_PORTS:
                raise XenError(abi.XenErrno.EINVAL, f"{p.nr_ports} ports")
            ports = [int.from_bytes(call.mem.read(p.ports + 4 * i, 4), "little") for i in range(p.nr_ports)]
            nr = domain.evtchn.nr_ports()
            if any(not 0 <= q < nr for q in ports):
                raise XenError(abi.XenErrno.EINVAL, "bad port")
            call.tracing and call.note(f"ports={ports} timeout={p.timeout}")
            # do_poll: at once if a deliverable event or a polled port is pending; else
            # until a polled port fires (evtchn_check_pollers), a kick, or the timeout.
            if deliverable() or domain.evtchn.any_pending(ports):
                return 0
            wait(call, lambda: kicked() or domain.evtchn.any_pending(ports),
                 signed(p.timeout, 64) if p.timeout else None)      # set_timer(s_time_t)
            return 0
        if cmd == abi.SCHEDOP_shutdown:
            reason = call.mem.read_struct(abi.layout(abi.sched_shutdown, call.abi), arg).reason & 0xFF
            call.tracing and call.note(f"reason={reason}")    # domain_shutdown(d, (u8)reason)
            shutdown(domain, reason)
            return 0
        if cmd == abi.SCHEDOP_shutdown_code:
            reason = call.mem.read_struct(abi.layout(abi.sched_shutdown, call.abi), arg).reason & 0xFF
            if domain.shutdown_code is None:          # the first code set stays (as a u8)
                domain.shutdown_code = reason
            return 0
        if cmd == abi.SCHEDOP_remote_shutdown:
            r = call.mem.read_struct(abi.layout(abi.sched_remote_shutdown, call.abi), arg)
            check_domid(domain, r.domain_id)
            raise XenError(abi.XenErrno.EPERM, "remote_shutdown is privileged")
        raise XenError(abi.XenErrno.ENOSYS, f"SCHEDOP {cmd}")

    # sched_op_compat (6) is PV-only: not in the HVM hypercall table, so -ENOSYS.
    return {abi.Hypercall.sched_op: sched_op}
