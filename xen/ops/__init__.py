"""Hypercall families, one module each, registered into the domain's table.

Each handler takes a ``xen.hypercall.Hypercall`` and returns the value for
RAX; raising ``XenError`` or ``GuestFault`` gives the guest the errno.
Which sub-ops an HVM guest may use follows xen/arch/x86/hvm/hypercall.c.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xen import abi
from xen.hypercall import XenError

if TYPE_CHECKING:
    from xen.domain import XenDomain


def check_domid(domain: "XenDomain", domid: int) -> None:
    """Only our own domain can be named (as DOMID_SELF or its id)."""
    if domid not in (abi.DOMID_SELF, domain.domid):
        raise XenError(abi.XenErrno.ESRCH, f"domain {domid:#x}")


def register_all(domain: "XenDomain") -> None:
    from xen.ops import evtchn_op, hvm_op, memory_op, misc, physdev_op, sched_op, vcpu_op, version
    for mod in (version, memory_op, hvm_op, vcpu_op, sched_op, evtchn_op, physdev_op, misc):
        for nr, handler in mod.handlers(domain).items():
            domain.hypercalls.register(nr, handler)
