"""The 2-level event-channel ABI (xen/common/event_2l.c), a ``PortAbi``.

* set_pending: test_and_set the port's bit in shared_info.evtchn_pending; if it
  was clear and the port is unmasked, test_and_set its word's bit in the notified
  vCPU's vcpu_info.evtchn_pending_sel; if that was clear, mark events pending on
  the vCPU (evtchn_upcall_pending, and the upcall if *that* was clear);
* unmask: clear the mask bit; if the port is pending, do the selector and upcall
  half of set_pending.

The bitmaps hold word_bits**2 ports: 4096 in the 64-bit layout, 1024 in the compat
one (the width SharedInfo latched).  A guest may bind ports above 1024 in 64-bit
mode and then latch the compat layout (XENMEM_add_to_physmap(shared_info) or
HVM_PARAM_CALLBACK_IRQ from 32-bit mode: hvm.c hvm_latch_shinfo_size, which
converts nothing).  Xen keeps those ports valid (port_is_valid checks
d->valid_evtchns, which never shrinks) but no longer allocates there
(max_evtchns), and its 2-level ops treat them as masked and never pending
(evtchn_2l_is_masked/is_pending: port >= max_ports).  So here a port beyond the
layout's bitmaps is all-or-nothing *nothing*: no bit is touched (Xen's set_pending
would write past evtchn_pending, into evtchn_mask).

All bit updates are atomic RMWs on guest memory (the guest clears bits
concurrently with lock-prefixed instructions), through the addresses SharedInfo
gives (``si_at``, ``vcpu_info_at``): shared_info may move, so they are asked for
at every access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmm.memory import GuestMemoryError
from xen import abi
from xen.hypercall import XenError

if TYPE_CHECKING:
    from xen.evtchn import Channel
    from xen.shared_info import SharedInfo


def _or(mem, addr: int, value: int, word: int) -> int:
    return mem.atomic_or64(addr, value) if word == 8 else mem.atomic_or32(addr, value)


def _and(mem, addr: int, value: int, word: int) -> int:
    return mem.atomic_and64(addr, value) if word == 8 else mem.atomic_and32(addr, value)


class TwoLevelAbi:
    name = "2-level"

    def __init__(self, shared: "SharedInfo"):
        self.shared = shared

    def max_ports(self) -> int:
        bits = self.shared.layout.word * 8
        return bits * bits

    def _bit(self, lay, base: int, port: int) -> tuple:
        """(memory, address, bit) of ``port``'s bit in the bitmap at shared_info ``base``."""
        w, b = divmod(port, lay.word * 8)
        mem, addr = self.shared.si_at(base + w * lay.word)
        return mem, addr, b

    def _test(self, lay, base: int, port: int) -> bool:
        mem, addr, b = self._bit(lay, base, port)
        return bool(_or(mem, addr, 0, lay.word) >> b & 1)

    def set_pending(self, port: int, ch: "Channel") -> str:
        lay = self.shared.layout
        bits = lay.word * 8
        if port >= bits * bits:
            return "dropped: beyond the layout's 2-level ports (masked)"
        try:
            mem, addr, b = self._bit(lay, lay.pending, port)
            if _or(mem, addr, 1 << b, lay.word) >> b & 1:
                return "already pending"
            if self._test(lay, lay.mask, port):
                return "masked"
            return self._select(lay, port // bits, ch.vcpu)
        except GuestMemoryError as e:          # shared_info/vcpu_info moved out of RAM
            return f"lost ({e})"

    def _select(self, lay, word_index: int, vcpu: int) -> str:
        at = self.shared.vcpu_info_at(vcpu, lay.pending_sel)
        if at is None:
            return "no vcpu_info"
        if _or(at[0], at[1], 1 << word_index, lay.word) >> word_index & 1:
            return "selector already set"
        return self.shared.mark_events_pending(vcpu)

    def clear_pending(self, port: int, ch: "Channel") -> None:
        lay = self.shared.layout
        if port >= self.max_ports():
            return
        try:
            mem, addr, b = self._bit(lay, lay.pending, port)
            _and(mem, addr, ~(1 << b) & ((1 << lay.word * 8) - 1), lay.word)
        except GuestMemoryError:
            pass

    def is_pending(self, port: int) -> bool:
        lay = self.shared.layout
        if port >= self.max_ports():
            return False
        try:
            return self._test(lay, lay.pending, port)
        except GuestMemoryError:
            return False

    def is_masked(self, port: int) -> bool:
        lay = self.shared.layout
        if port >= self.max_ports():
            return True                    # evtchn_2l_is_masked
        try:
            return self._test(lay, lay.mask, port)
        except GuestMemoryError:
            return True

    def is_busy(self, port: int) -> bool:
        return False                       # event_2l.c has no is_busy

    def unmask(self, port: int, ch: "Channel") -> bool:
        lay = self.shared.layout
        if port >= self.max_ports():
            return False                   # stays masked (evtchn_2l_is_masked)
        try:
            mem, addr, b = self._bit(lay, lay.mask, port)
            old = _and(mem, addr, ~(1 << b) & ((1 << lay.word * 8) - 1), lay.word)
            if old >> b & 1 and self._test(lay, lay.pending, port):
                return self._select(lay, port // (lay.word * 8), ch.vcpu) == "upcall"
        except GuestMemoryError:
            pass
        return False

    def set_priority(self, port: int, ch: "Channel", priority: int) -> None:
        raise XenError(abi.XenErrno.ENOSYS, "priorities are FIFO's")   # evtchn_port_set_priority: no op

    def bound(self, port: int, ch: "Channel") -> None:
        pass                               # 2-level has no per-port state to prepare
