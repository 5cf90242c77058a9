"""shared_info and vcpu_info: where event bits, pvclock and wallclock live.

**Placement.**  In Xen the shared_info frame belongs to the hypervisor and
XENMEM_add_to_physmap(XENMAPSPACE_shared_info) maps it at a gpfn of the
guest's choosing.  We keep it *in that guest RAM page*: before the guest maps
it, the state lives in a VMM-side shadow page; the mapping copies the shadow
in and from then on the guest page is the live shared_info (a remap copies it
along).  KVM's own Xen support (kernel transport) is pointed at the same gfn.
Differences from Xen, invisible to the guests we know: the old gpfn of a
remap keeps its (stale) RAM instead of becoming a hole.

**vcpu_info.**  vCPUs < 32 default to shared_info.vcpu_info[id];
VCPUOP_register_vcpu_info moves one (once) to any page-contained guest
location.  A vCPU with no vcpu_info yet gets no event bits (as Xen, where
such a vCPU >= 32 cannot receive events).

Offsets come from the construct layouts in xen/abi (64- and 32-bit).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmm.memory import GuestMemoryError, HostPage
from vmm.locks import ordered_lock
from vmm.x86 import PAGE_SIZE
from xen import abi

if TYPE_CHECKING:
    from xen.domain import XenDomain


@dataclass(frozen=True)
class Layout:
    word: int                 # bytes per evtchn word (xen_ulong_t)
    pending: int              # shared_info.evtchn_pending
    mask: int                 # shared_info.evtchn_mask
    wc_version: int
    wc_sec: int
    wc_nsec: int
    wc_sec_hi: int | None
    vcpu_info_size: int
    upcall_pending: int       # offsets inside vcpu_info
    upcall_mask: int
    pending_sel: int
    time: int


def _layout(which: str) -> Layout:
    si = abi.layout(abi.shared_info, which)
    vi = abi.layout(abi.vcpu_info, which)
    return Layout(
        word=8 if which == "64" else 4,
        pending=abi.offset_of(si, "evtchn_pending"),
        mask=abi.offset_of(si, "evtchn_mask"),
        wc_version=abi.offset_of(si, "wc_version"),
        wc_sec=abi.offset_of(si, "wc_sec"),
        wc_nsec=abi.offset_of(si, "wc_nsec"),
        wc_sec_hi=abi.offset_of(si, "wc_sec_hi") if which == "64" else None,
        vcpu_info_size=vi.sizeof(),
        upcall_pending=abi.offset_of(vi, "evtchn_upcall_pending"),
        upcall_mask=abi.offset_of(vi, "evtchn_upcall_mask"),
        pending_sel=abi.offset_of(vi, "evtchn_pending_sel"),
        time=abi.offset_of(vi, "time"),
    )


LAYOUT = {False: _layout("64"), True: _layout("32")}


class SharedInfo:
    def __init__(self, domain: "XenDomain"):
        self.domain = domain
        self.mem = domain.vm.memory
        self.lock = ordered_lock("xen.shared_info")          # placement only; bit updates are atomic RMWs
        self.gpa: int | None = None
        self._shadow = HostPage(PAGE_SIZE)
        # per-vCPU explicit vcpu_info gpa (VCPUOP_register_vcpu_info)
        self.vcpu_info_gpa: dict[int, int] = {}

    # ------------------------------------------------------------ placement
    def map_at(self, gpa: int) -> None:
        """XENMEM_add_to_physmap(shared_info): the page at ``gpa`` becomes shared_info."""
        with self.lock:
            if self.gpa == gpa:
                return
            current = self._shadow.read(0, PAGE_SIZE) if self.gpa is None else self.mem.read(self.gpa, PAGE_SIZE)
            self.mem.write(gpa, current)
            self.gpa = gpa

    def register_vcpu_info(self, vcpu: int, gpa: int, compat: bool) -> None:
        lay = LAYOUT[compat]
        with self.lock:
            old = self._vcpu_info_gpa(vcpu, compat)
            data = self.read_raw(old, lay.vcpu_info_size) if old is not None else bytes(lay.vcpu_info_size)
            self.mem.write(gpa, data)
            self.vcpu_info_gpa[vcpu] = gpa
        # Xen (map_vcpu_info): mark everything pending so nothing is lost;
        # the guest copes with a spurious upcall.
        self._or(gpa, lay.pending_sel, (1 << lay.word * 8) - 1, lay.word)
        self._mark_events_pending(vcpu, compat)

    def _vcpu_info_gpa(self, vcpu: int, compat: bool) -> int | None:
        """Address of vcpu's vcpu_info: explicit, else the legacy slot (gpa or shadow offset)."""
        g = self.vcpu_info_gpa.get(vcpu)
        if g is not None:
            return g
        if vcpu < abi.XEN_LEGACY_MAX_VCPUS:
            return ("si", vcpu * LAYOUT[compat].vcpu_info_size)  # type: ignore[return-value]
        return None

    def vcpu_info_location(self, vcpu: int, compat: bool) -> int | None:
        """Guest-physical address of vcpu_info, or None (not placed in guest memory yet)."""
        loc = self._vcpu_info_gpa(vcpu, compat)
        if isinstance(loc, tuple):
            return None if self.gpa is None else self.gpa + loc[1]
        return loc

    # ------------------------------------------------------------ raw access
    def _at(self, where, offset: int):
        """(memory, address) of ``offset`` into shared_info (``where`` = "si": the guest
        page, or the shadow before the guest placed it) or past a gpa; both memories
        have the same access methods and atomics (vmm.memory.AtomicAccess)."""
        if where == "si":
            if self.gpa is None:
                return self._shadow, offset
            return self.mem, self.gpa + offset
        return self.mem, where + offset

    def read_raw(self, loc, n: int) -> bytes:
        mem, addr = self._at("si", loc[1]) if isinstance(loc, tuple) else self._at(loc, 0)
        return mem.read(addr, n)

    def _or(self, where, offset: int, value: int, word: int) -> int:
        mem, addr = self._at(where, offset)
        return mem.atomic_or64(addr, value) if word == 8 else mem.atomic_or32(addr, value)

    def _and(self, where, offset: int, value: int, word: int) -> int:
        mem, addr = self._at(where, offset)
        return mem.atomic_and64(addr, value) if word == 8 else mem.atomic_and32(addr, value)

    def _test(self, offset: int, bit: int, word: int) -> bool:
        return bool(self._or("si", offset, 0, word) >> bit & 1)

    def _vi(self, vcpu: int, compat: bool):
        """(where, base offset) of a vCPU's vcpu_info for _at, or None."""
        loc = self._vcpu_info_gpa(vcpu, compat)
        if loc is None:
            return None
        if isinstance(loc, tuple):
            return "si", loc[1]
        return loc, 0

    # ------------------------------------------------------------ 2-level protocol (event_2l.c)
    # The bitmaps hold word_bits**2 ports: 4096 in the 64-bit layout, 1024 in the compat one.
    # A guest may bind ports above 1024 in 64-bit mode and then latch the compat layout
    # (XENMEM_add_to_physmap(shared_info) or HVM_PARAM_CALLBACK_IRQ from 32-bit mode:
    # hvm.c hvm_latch_shinfo_size, which converts nothing).  Xen keeps those ports valid
    # (port_is_valid checks d->valid_evtchns, which never shrinks) but no longer allocates
    # there (max_evtchns), and its 2-level ops treat them as masked and never pending
    # (event_2l.c evtchn_2l_is_masked/is_pending: port >= max_ports).  So here a port
    # beyond the layout's bitmaps is all-or-nothing *nothing*: no bit is touched (Xen's
    # set_pending would write past evtchn_pending, into evtchn_mask).
    @staticmethod
    def nr_ports(compat: bool) -> int:
        bits = LAYOUT[compat].word * 8
        return bits * bits

    def set_pending(self, port: int, vcpu: int, compat: bool) -> str:
        lay = LAYOUT[compat]
        bits = lay.word * 8
        if port >= self.nr_ports(compat):
            return "dropped: beyond the layout's 2-level ports (masked)"
        w, b = divmod(port, bits)
        try:
            old = self._or("si", lay.pending + w * lay.word, 1 << b, lay.word)
            if old >> b & 1:
                return "already pending"
            if self._test(lay.mask + w * lay.word, b, lay.word):
                return "masked"
            return self._select(w, vcpu, compat)
        except GuestMemoryError as e:          # shared_info/vcpu_info moved out of RAM
            return f"lost ({e})"

    def _select(self, word_index: int, vcpu: int, compat: bool) -> str:
        lay = LAYOUT[compat]
        vi = self._vi(vcpu, compat)
        if vi is None:
            return "no vcpu_info"
        where, base = vi
        old = self._or(where, base + lay.pending_sel, 1 << word_index, lay.word)
        if old >> word_index & 1:
            return "selector already set"
        return self._mark_events_pending(vcpu, compat)

    def _mark_events_pending(self, vcpu: int, compat: bool) -> str:
        lay = LAYOUT[compat]
        vi = self._vi(vcpu, compat)
        if vi is None:
            return "no vcpu_info"
        where, base = vi
        mem, addr = self._at(where, base + lay.upcall_pending)
        if mem.atomic_xchg8(addr, 1):
            return "upcall already pending"
        self.domain.upcall.inject(vcpu)
        return "upcall"

    def clear_pending(self, port: int, compat: bool) -> None:
        lay = LAYOUT[compat]
        if port >= self.nr_ports(compat):
            return
        w, b = divmod(port, lay.word * 8)
        try:
            self._and("si", lay.pending + w * lay.word, ~(1 << b) & ((1 << lay.word * 8) - 1), lay.word)
        except GuestMemoryError:
            pass

    def is_pending(self, port: int, compat: bool) -> bool:
        lay = LAYOUT[compat]
        if port >= self.nr_ports(compat):
            return False
        w, b = divmod(port, lay.word * 8)
        try:
            return self._test(lay.pending + w * lay.word, b, lay.word)
        except GuestMemoryError:
            return False

    def unmask(self, port: int, vcpu: int, compat: bool) -> bool:
        lay = LAYOUT[compat]
        if port >= self.nr_ports(compat):
            return False                   # stays masked (evtchn_2l_is_masked)
        w, b = divmod(port, lay.word * 8)
        try:
            old = self._and("si", lay.mask + w * lay.word, ~(1 << b) & ((1 << lay.word * 8) - 1), lay.word)
            if old >> b & 1 and self._test(lay.pending + w * lay.word, b, lay.word):
                return self._select(w, vcpu, compat) == "upcall"
        except GuestMemoryError:
            pass
        return False

    def upcall_pending(self, vcpu: int, compat: bool) -> bool:
        vi = self._vi(vcpu, compat)
        if vi is None:
            return False
        where, base = vi
        try:
            mem, addr = self._at(where, base + LAYOUT[compat].upcall_pending)
            return mem.view(addr, 1)[0] != 0
        except GuestMemoryError:
            return False

    def clear_upcall_mask(self, vcpu: int, compat: bool) -> None:
        """vcpu_block_enable_events: SCHEDOP_block turns event delivery on first."""
        vi = self._vi(vcpu, compat)
        if vi is not None:
            where, base = vi
            try:
                mem, addr = self._at(where, base + LAYOUT[compat].upcall_mask)
                mem.view(addr, 1)[0] = 0
            except GuestMemoryError:
                pass

    # ------------------------------------------------------------ plain field writes (time)
    def write_field(self, where, offset: int, data: bytes) -> None:
        mem, addr = self._at(where, offset)
        mem.write(addr, data)
