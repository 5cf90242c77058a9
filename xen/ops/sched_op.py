"""__HYPERVISOR_sched_op (public/sched.h; xen/common/sched/core.c do_sched_op).

block and poll park the calling vCPU's thread (it is not in KVM_RUN) on the
domain's event condition; every event-channel delivery and the VM's end wake
it, and it re-checks its condition.
"""

from __future__ import annotations

from vmm import exitcodes
from xen import abi
from xen.hypercall import Hypercall, XenError
from xen.ops import check_domid

MAX_POLL_PORTS = 128          # xen/common/sched/core.c do_poll: nr_ports > 128 -> -EINVAL
NSEC = 1_000_000_000

SHUTDOWN_EXIT = {
    abi.SHUTDOWN_poweroff: (exitcodes.GUEST_POWEROFF, "guest powered off (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_reboot: (exitcodes.GUEST_RESET, "guest rebooted (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_crash: (exitcodes.GUEST_FAILURE, "guest crashed (SCHEDOP_shutdown)"),
    abi.SHUTDOWN_watchdog: (exitcodes.GUEST_FAILURE, "guest watchdog fired (SCHEDOP_shutdown)"),
}


def handlers(domain):
    def wait(call: Hypercall, cond, deadline_ns: int | None) -> None:
        """Block until cond() or the deadline (system time) or the VM's end;
        the vCPU is RUNSTATE_blocked meanwhile (and its runstate area says so)."""
        domain.set_runstate(call.vcpu_id, abi.RUNSTATE_blocked, call.mem)
        try:
            _wait(cond, deadline_ns)
        finally:
            domain.set_runstate(call.vcpu_id, abi.RUNSTATE_running, call.mem)

    def _wait(cond, deadline_ns: int | None) -> None:
        with domain.events:
            while domain.running and not cond():
                if deadline_ns is not None:
                    left = deadline_ns - domain.clock.now()
                    if left <= 0:
                        return
                    domain.events.wait(min(left / NSEC, 0.05))
                else:
                    domain.events.wait(0.05)

    def sched_op(call: Hypercall) -> int:
        cmd, arg = call.args[0] & 0xFFFFFFFF, call.args[1]      # do_sched_op(int cmd, ...)
        call.tracing and call.note(f"cmd={abi.SCHEDOP(cmd).name if cmd in abi.SCHEDOP._value2member_map_ else cmd}")
        me = call.vcpu_id
        compat = domain.compat
        if cmd == abi.SCHEDOP_yield:
            return 0
        if cmd == abi.SCHEDOP_block:
            # Xen enables event delivery (upcall_mask = 0) and sleeps until one is pending.
            wait(call, lambda: domain.shared.upcall_pending(me, compat), None)
            return 0
        if cmd == abi.SCHEDOP_poll:
            st = abi.layout(abi.sched_poll, call.abi)
            p = call.mem.read_struct(st, arg)
            if p.nr_ports > MAX_POLL_PORTS:
                raise XenError(abi.XenErrno.EINVAL, f"{p.nr_ports} ports")
            ports = [int.from_bytes(call.mem.read(p.ports + 4 * i, 4), "little") for i in range(p.nr_ports)]
            nr = domain.evtchn.nr_ports(compat)
            if any(not 0 <= q < nr for q in ports):
                raise XenError(abi.XenErrno.EINVAL, "bad port")
            call.tracing and call.note(f"ports={ports} timeout={p.timeout}")
            ready = lambda: domain.evtchn.any_pending(ports, compat)  # noqa: E731
            if ready():
                return 0
            wait(call, ready, p.timeout if p.timeout else None)
            return 0
        if cmd == abi.SCHEDOP_shutdown:
            reason = call.mem.read_struct(abi.layout(abi.sched_shutdown, call.abi), arg).reason
            call.tracing and call.note(f"reason={reason}")
            if reason in SHUTDOWN_EXIT:
                # domain_shutdown(): a code set by SCHEDOP_shutdown_code wins over the reason.
                if domain.shutdown_code is not None and domain.shutdown_code in SHUTDOWN_EXIT:
                    reason = domain.shutdown_code
                code, why = SHUTDOWN_EXIT[reason]
                domain.vm.request_exit(code, why)
                return 0
            raise XenError(abi.XenErrno.EOPNOTSUPP, f"shutdown reason {reason}")   # suspend, soft_reset
        if cmd == abi.SCHEDOP_shutdown_code:
            reason = call.mem.read_struct(abi.layout(abi.sched_shutdown, call.abi), arg).reason
            if domain.shutdown_code is None:          # the first code set stays
                domain.shutdown_code = reason
            return 0
        if cmd == abi.SCHEDOP_remote_shutdown:
            r = call.mem.read_struct(abi.layout(abi.sched_remote_shutdown, call.abi), arg)
            check_domid(domain, r.domain_id)
            raise XenError(abi.XenErrno.EPERM, "remote_shutdown is privileged")
        raise XenError(abi.XenErrno.ENOSYS, f"SCHEDOP {cmd}")

    # sched_op_compat (6) is PV-only: not in the HVM hypercall table, so -ENOSYS.
    return {abi.Hypercall.sched_op: sched_op}
