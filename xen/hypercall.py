"""Hypercall dispatch: one table, two transports.

A transport (xen/transport.py) turns an exit into a ``Hypercall``: number,
six raw arguments, the ABI (64- or 32-bit, from CS.L at the time of the
call) and the caller's CPL, plus a ``GuestAccess`` for its pointers.  The
dispatcher checks the CPL, finds the family handler, and turns every failure
into the Xen errno the guest would get from Xen:

* CPL > 0                     -> -EPERM (xen/arch/x86/hvm/hypercall.c)
* no handler                  -> -ENOSYS
* a bad guest pointer         -> -EFAULT (GuestFault)
* ``XenError(errno)``         -> -errno
* an unexpected exception     -> logged once per hypercall name, -EINVAL;
                                 the VMM keeps running (guests are hostile).
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import Counter
from typing import Callable

from vmm.errors import internal_error
from vmm.trace import now
from vmm.x86 import PAGE_SIZE
from xen.abi import HYPERCALL_NAMES, HYPERCALL_STUB_SIZE, XenErrno
from xen.guest_access import GuestAccess, GuestFault
from xen.trace_events import TP_XEN_HCALL as TP_HCALL

HYPERCALL_PAGE_ENTRIES = PAGE_SIZE // HYPERCALL_STUB_SIZE     # the hypercall page's 128 stubs


class XenError(Exception):
    """Raise from a handler to return -errno to the guest."""

    def __init__(self, errno: int, why: str = ""):
        super().__init__(why or XenErrno(errno).name)
        self.errno = int(errno)


class Hypercall:
    """One hypercall in flight.  ``mem`` (the caller's view of memory) is built
    on first use: most calls never touch a pointer."""
    __slots__ = ("vcpu", "nr", "args", "abi", "cpl", "_sregs", "_memory", "_mem", "detail", "tracing")

    def __init__(self, vcpu, nr: int, args: tuple, abi: str, cpl: int, memory, sregs,
                 mem: GuestAccess | None = None):
        self.vcpu = vcpu                 # vmm.vcpu.Vcpu
        self.nr = nr
        self.args = args                 # raw register values, truncated for the 32-bit ABI
        self.abi = abi                   # "64" or "32"
        self.cpl = cpl
        self._memory = memory
        self._sregs = sregs              # the caller's sregs at the exit (for page walks)
        self._mem = mem                  # given: the caller's view is known already (unit tests)
        self.detail: list[str] | None = None    # made by note(), only when tracing
        self.tracing = TP_HCALL.enabled  # guard expensive decoding: `call.tracing and call.note(...)`

    @property
    def mem(self) -> GuestAccess:
        if self._mem is None:
            self._mem = GuestAccess.from_sregs(self._memory, self._sregs)
        return self._mem

    @property
    def vcpu_id(self) -> int:
        return self.vcpu.id

    @property
    def compat(self) -> bool:
        return self.abi == "32"

    def note(self, text: str) -> None:
        """Add a decoded detail to this call's trace line."""
        if self.detail is None:
            self.detail = []
        self.detail.append(text)


Handler = Callable[[Hypercall], int]
MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


def signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class HypercallTable:
    def __init__(self) -> None:
        self.handlers: dict[int, Handler] = {}
        self.counts: Counter[str] = Counter()
        self.count_enabled = False
        self._lock = threading.Lock()

    def register(self, nr: int, handler: Handler) -> None:
        if nr in self.handlers:
            raise ValueError(f"hypercall {HYPERCALL_NAMES.get(nr, nr)} registered twice")
        self.handlers[nr] = handler

    def dispatch(self, call: Hypercall) -> int:
        """Run one hypercall; returns the value for RAX (two's complement, ABI width)."""
        t0 = now() if call.tracing else None        # the call becomes a span (a Perfetto slice)
        if self.count_enabled:
            with self._lock:
                self.counts[_count_name(call.nr)] += 1
        handler = self.handlers.get(call.nr)
        if handler is None or call.cpl:
            result = -XenErrno.EPERM if call.cpl else -XenErrno.ENOSYS
        else:
            try:
                result = handler(call)
            except GuestFault as e:
                call.tracing and call.note(f"fault: {e}")
                result = -XenErrno.EFAULT
            except XenError as e:
                call.tracing and call.note(f"error: {e}")
                result = -e.errno
            except Exception as e:  # noqa: BLE001 - a VMM bug must not kill the vCPU
                # Reported (and the run's exit status says so): never silently an errno.
                internal_error(f"hypercall {HYPERCALL_NAMES.get(call.nr, call.nr)}", e)
                result = -XenErrno.EINVAL
        if call.tracing:
            name = HYPERCALL_NAMES.get(call.nr, f"hypercall_{call.nr}")
            shown = ", ".join(f"{a:#x}" for a in call.args[:5])
            if call.detail:
                shown += " [" + "; ".join(call.detail) + "]"
            TP_HCALL.emit(call.vcpu.id, since=t0, name=name, args=shown, result=_errstr(result))
        return result & (MASK64 if call.abi == "64" else MASK32)


def _count_name(nr: int) -> str:
    """The --stats bucket of hypercall ``nr``.  EAX is the guest's to choose (any 32-bit
    value reaches us, xen_fuzz enters the stub after its `mov`): numbers past the page's
    entries share one bucket, or a guest could grow the table by a key per call."""
    name = HYPERCALL_NAMES.get(nr)
    if name is None:
        name = f"hypercall_{nr}" if nr < HYPERCALL_PAGE_ENTRIES else "hypercall_beyond_page"
    return name


def _errstr(result: int) -> str:
    if result < 0:
        try:
            return f"-{XenErrno(-result).name}"
        except ValueError:
            return str(result)
    return f"{result:#x}" if result > 9 else str(result)
