"""Hypercall families, one class each, wired into the domain's table.

Each family is constructed with the subsystems it acts on (never the domain) and
exposes ``handlers() -> {hypercall number: bound method}``; a handler takes a
``xen.hypercall.Hypercall`` and returns the value for RAX; raising ``XenError``
or ``GuestFault`` gives the guest the errno.  ``register_all`` is the one place
that knows the domain.  Which sub-ops an HVM guest may use follows
xen/arch/x86/hvm/hypercall.c.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xen import abi
from xen.hypercall import XenError

if TYPE_CHECKING:
    from xen.domain import XenDomain


def check_domid(domid: int, own: int) -> None:
    """Only our own domain (``own``) can be named (as DOMID_SELF or its id)."""
    if domid not in (abi.DOMID_SELF, own):
        raise XenError(abi.XenErrno.ESRCH, f"domain {domid:#x}")


def families(d: "XenDomain") -> list:
    """The domain's hypercall families, each handed what it needs."""
    from xen.ops.evtchn_op import EvtchnOps
    from xen.ops.hvm_op import HvmOps
    from xen.ops.memory_op import MemoryOps
    from xen.ops.misc import ConsoleOps, GrantTableOps, PrivilegedOps, VmAssistOps
    from xen.ops.physdev_op import PhysdevOps
    from xen.ops.sched_op import SchedOps
    from xen.ops.vcpu_op import VcpuOps
    from xen.ops.version import VersionOps
    accel = d.accel if d.accel_full else None
    return [
        VersionOps(d.config.version, d.handle),
        MemoryOps(d.vm.memory, d.shared, d.placement, d.gnttab, d.lock, d.shared_info_mapped, d.domid),
        HvmOps(d.hvm_params, d.upcall, d.domid, len(d.vcpus)),
        VcpuOps(d.vcpus, d.shared, d.timers, d.clock, d.time, d.vm.memory, d.config.version, d.shutdown, accel),
        SchedOps(d.shared, d.evtchn, d.upcall, d.vcpus, d.clock, d.events, lambda: d.running, d.shutdown, d.domid,
                 d.kvm_timers),
        EvtchnOps(d.evtchn, fifo=d.fifo),
        PhysdevOps(d.pirqs, d.upcall, d.domid),
        ConsoleOps(d.console_out, d.lock, d.domid),
        VmAssistOps(d.vcpus),
        GrantTableOps(d.gnttab, d.domid),
        PrivilegedOps(),
    ]


def register_all(domain: "XenDomain") -> None:
    for family in families(domain):
        for nr, handler in family.handlers().items():
            domain.hypercalls.register(nr, handler)
