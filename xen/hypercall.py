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
from dataclasses import dataclass, field
from typing import Callable

from vmm.trace import tracepoint
from xen.abi import HYPERCALL_NAMES, XenErrno
from xen.guest_access import GuestAccess, GuestFault

TP_HCALL = tracepoint("xen.hcall", "{name}({args}) = {result}")


class XenError(Exception):
    """Raise from a handler to return -errno to the guest."""

    def __init__(self, errno: int, why: str = ""):
        super().__init__(why or XenErrno(errno).name)
        self.errno = int(errno)


@dataclass
class Hypercall:
    vcpu: object                 # vmm.vcpu.Vcpu
    nr: int
    args: tuple[int, ...]        # raw register values, already truncated for the 32-bit ABI
    abi: str                     # "64" or "32"
    cpl: int
    mem: GuestAccess
    detail: list[str] = field(default_factory=list)   # decoded arguments, for the trace

    @property
    def vcpu_id(self) -> int:
        return self.vcpu.id

    @property
    def compat(self) -> bool:
        return self.abi == "32"

    def note(self, text: str) -> None:
        """Add a decoded detail to this call's trace line (cheap when tracing is off)."""
        if TP_HCALL.enabled:
            self.detail.append(text)


Handler = Callable[[Hypercall], int]


def signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class HypercallTable:
    def __init__(self) -> None:
        self.handlers: dict[int, Handler] = {}
        self.counts: Counter[str] = Counter()
        self.count_enabled = False
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def register(self, nr: int, handler: Handler) -> None:
        if nr in self.handlers:
            raise ValueError(f"hypercall {HYPERCALL_NAMES.get(nr, nr)} registered twice")
        self.handlers[nr] = handler

    def dispatch(self, call: Hypercall) -> int:
        """Run one hypercall; returns the value for RAX (two's complement, ABI width)."""
        name = HYPERCALL_NAMES.get(call.nr, f"hypercall_{call.nr}")
        if self.count_enabled:
            with self._lock:
                self.counts[name] += 1
        if call.cpl != 0:
            result = -XenErrno.EPERM
        else:
            handler = self.handlers.get(call.nr)
            if handler is None:
                result = -XenErrno.ENOSYS
            else:
                try:
                    result = handler(call)
                except GuestFault as e:
                    call.note(f"fault: {e}")
                    result = -XenErrno.EFAULT
                except XenError as e:
                    result = -e.errno
                except Exception:  # noqa: BLE001 - a VMM bug must not kill the vCPU
                    if name not in self._warned:
                        self._warned.add(name)
                        sys.stderr.write(f"vmm: internal error in hypercall {name}:\n{traceback.format_exc()}")
                    result = -XenErrno.EINVAL
        if TP_HCALL.enabled:
            shown = ", ".join(f"{a:#x}" for a in call.args[:5])
            if call.detail:
                shown += " [" + "; ".join(call.detail) + "]"
            TP_HCALL.emit(call.vcpu.id, name=name, args=shown, result=_errstr(result))
        bits = 64 if call.abi == "64" else 32
        return result & ((1 << bits) - 1)


def _errstr(result: int) -> str:
    if result < 0:
        try:
            return f"-{XenErrno(-result).name}"
        except ValueError:
            return str(result)
    return f"{result:#x}" if result > 9 else str(result)
