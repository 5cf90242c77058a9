"""HVM params (public/hvm/params.h): the table of what a guest may set or read of
itself, what we answer and why.

Xen decides it in hvm.c hvm_allow_set_param / hvm_allow_get_param; a param not in
``PARAMS`` is the toolstack's (-EPERM to the guest).  The VMM is the toolstack: at build
(``xen/toolstack.py``) it provides the PV console's and xenstore's page and port, as
libxl does (CONSOLE_PFN/EVTCHN, STORE_PFN/EVTCHN: the special pages and backend ports);
a param nobody provided reads as 0 with success, as on Xen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from xen import abi
from xen.hypercall import XenError


@dataclass(frozen=True)
class Param:
    """What a guest may do with one HVM parameter, and why."""
    guest_sets: bool
    guest_reads: bool
    why: str


PARAMS: dict[int, Param] = {
    abi.HVM_PARAM_CALLBACK_IRQ: Param(True, True, "how the guest wants its upcall (xen/upcall.py)"),
    abi.HVM_PARAM_STORE_EVTCHN: Param(True, True, "xenstore's port (the toolstack's backend port); the guest may set it, as on Xen"),
    abi.HVM_PARAM_CONSOLE_EVTCHN: Param(True, True, "the PV console's port (the toolstack's backend port); the guest may set it, as on Xen"),
    abi.HVM_PARAM_X87_FIP_WIDTH: Param(True, True, "stored and read back; the FPU state itself is KVM's"),
    abi.HVM_PARAM_STORE_PFN: Param(False, True, "xenstore's page: SPECIALPAGE_XENSTORE, set by the toolstack only"),
    abi.HVM_PARAM_CONSOLE_PFN: Param(False, True, "the PV console's page: SPECIALPAGE_CONSOLE, set by the toolstack only"),
    abi.HVM_PARAM_ALTP2M: Param(False, True, "0: no alternate p2m (Linux reads it)"),
}


class HvmParams:
    """The params' values (0 until set), under ``lock`` (the domain lock).  ``on_set``:
    index -> what a guest's set does besides storing (run after the lock is released)."""

    def __init__(self, lock, on_set: dict[int, Callable[[int], None]] | None = None):
        self.lock = lock
        self.values: dict[int, int] = {}
        self.on_set = dict(on_set or {})

    def save(self) -> dict:
        with self.lock:
            return {str(k): v for k, v in self.values.items()}

    def restore(self, state: dict) -> None:
        """The values only: the hooks' effects (the callback via) are Upcall's own state."""
        with self.lock:
            self.values = {int(k): v for k, v in state.items()}

    @staticmethod
    def _param(index: int) -> Param | None:
        if not 0 <= index < abi.HVM_NR_PARAMS:
            raise XenError(abi.XenErrno.EINVAL, f"param {index}")
        return PARAMS.get(index)

    def guest_set(self, index: int, value: int) -> None:
        """HVMOP_set_param by the guest on itself."""
        p = self._param(index)
        if p is None or not p.guest_sets:
            raise XenError(abi.XenErrno.EPERM, f"param {index} is the toolstack's")
        with self.lock:
            self.values[index] = value
        hook = self.on_set.get(index)
        if hook is not None:
            hook(value)

    def guest_get(self, index: int) -> int:
        """HVMOP_get_param by the guest on itself."""
        p = self._param(index)
        if p is None or not p.guest_reads:
            raise XenError(abi.XenErrno.EPERM, f"param {index} is the toolstack's")
        with self.lock:
            return self.values.get(index, 0)

    def provide(self, index: int, value: int) -> None:
        """The VMM (as the toolstack) sets a param, e.g. the console's page and port."""
        self._param(index)
        with self.lock:
            self.values[index] = value
