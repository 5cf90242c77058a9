"""shared_info and vcpu_info: where event bits, pvclock and wallclock live.

SharedInfo owns their placement, the layout width the guest latched
(``latch_width``, the one place it is set) and vcpu_info's upcall flags; what
lives in them is written by their users through ``si_at``/``vcpu_info_at``:
the 2-level event bits (xen/evtchn_2l.py), pvclock and wallclock (xen/time.py).

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

from dataclasses import dataclass
from typing import Callable

from vmm.memory import GuestMemoryError, HostPage
from vmm.locks import ordered_lock
from vmm.x86 import PAGE_SIZE
from xen import abi


@dataclass(frozen=True)
class Layout:
    """Offsets in shared_info for one guest width."""
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
    """The shared_info page and the vcpu_infos: where they are, the layout width the
    guest latched, and raw access for the event ABIs (xen/evtchn_2l.py) and time
    (xen/time.py).  ``inject_upcall(vcpu)`` is how "events pending" reaches the vCPU
    (Upcall.inject; set once by the domain: Upcall itself reads upcall_pending here)."""

    def __init__(self, mem):
        self.mem = mem
        self.lock = ordered_lock("xen.shared_info")          # placement only; bit updates are atomic RMWs
        self.gpa: int | None = None
        self._shadow = HostPage(PAGE_SIZE)
        # per-vCPU explicit vcpu_info gpa (VCPUOP_register_vcpu_info)
        self.vcpu_info_gpa: dict[int, int] = {}
        self.compat = False                 # the latched width (latch_width)
        self.layout = LAYOUT[False]         # LAYOUT[compat]: kept as a plain attribute for the hot path
        self.inject_upcall: Callable[[int], None] = _no_upcall
        self.width_listeners: list[Callable[[bool], None]] = []

    # ------------------------------------------------------------ width
    def latch_width(self, compat: bool) -> None:
        """The one place the shared_info layout's width is set: XENMEM_add_to_physmap
        (shared_info) and VCPUOP_register_vcpu_info latch the caller's mode (Xen:
        hvm_latch_shinfo_size).  Nothing is converted.  Listeners (KVM's long-mode flag)
        are told every time, as Xen re-latches every time."""
        self.compat = compat
        self.layout = LAYOUT[compat]
        for fn in self.width_listeners:
            fn(compat)

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Primary: where shared_info and each vcpu_info are, the latched width, and the shadow
        page while shared_info is unplaced (once placed, its content is guest memory)."""
        with self.lock:
            return {"gpa": self.gpa, "vcpu_info_gpa": {str(k): v for k, v in self.vcpu_info_gpa.items()},
                    "compat": self.compat, "shadow": self._shadow.read(0, PAGE_SIZE) if self.gpa is None else None}

    def restore(self, state: dict) -> None:
        with self.lock:
            self.gpa = state["gpa"]
            self.vcpu_info_gpa = {int(k): v for k, v in state["vcpu_info_gpa"].items()}
            if state["shadow"] is not None:
                self._shadow.write(0, state["shadow"])
        self.compat = state["compat"]
        self.layout = LAYOUT[self.compat]

    def rebuilt(self) -> None:
        """Derived: the width's listeners (KVM's long-mode flag) hear the latch again."""
        for fn in self.width_listeners:
            fn(self.compat)

    # ------------------------------------------------------------ placement
    def map_at(self, gpa: int) -> None:
        """XENMEM_add_to_physmap(shared_info): the page at ``gpa`` becomes shared_info."""
        with self.lock:
            if self.gpa == gpa:
                return
            current = self._shadow.read(0, PAGE_SIZE) if self.gpa is None else self.mem.read(self.gpa, PAGE_SIZE)
            self.mem.write(gpa, current)
            self.gpa = gpa

    def register_vcpu_info(self, vcpu: int, gpa: int) -> None:
        lay = self.layout
        with self.lock:
            old = self._vcpu_info_gpa(vcpu)
            if old is None:
                data = bytes(lay.vcpu_info_size)
            else:
                mem, addr = self.si_at(old[1]) if isinstance(old, tuple) else (self.mem, old)
                data = mem.read(addr, lay.vcpu_info_size)
            self.mem.write(gpa, data)
            self.vcpu_info_gpa[vcpu] = gpa
        # Xen (map_vcpu_info): mark everything pending so nothing is lost;
        # the guest copes with a spurious upcall.
        mem, addr = self.mem, gpa + lay.pending_sel
        all_ones = (1 << lay.word * 8) - 1
        mem.atomic_or64(addr, all_ones) if lay.word == 8 else mem.atomic_or32(addr, all_ones)
        self.mark_events_pending(vcpu)

    def _vcpu_info_gpa(self, vcpu: int):
        """Where vcpu's vcpu_info is: its explicit gpa, else ("si", offset) of the legacy
        slot, else None."""
        g = self.vcpu_info_gpa.get(vcpu)
        if g is not None:
            return g
        if vcpu < abi.XEN_LEGACY_MAX_VCPUS:
            return ("si", vcpu * self.layout.vcpu_info_size)
        return None

    def default_vcpu_info_gpas(self, vcpus) -> dict[int, int]:
        """Guest-physical addresses of the legacy vcpu_info slots of ``vcpus`` that have no
        explicit one (for KVM, once shared_info is placed)."""
        if self.gpa is None:
            return {}
        size = self.layout.vcpu_info_size
        return {v: self.gpa + v * size for v in vcpus
                if v < abi.XEN_LEGACY_MAX_VCPUS and v not in self.vcpu_info_gpa}

    # ------------------------------------------------------------ raw access
    def si_at(self, offset: int):
        """(memory, address) of ``offset`` into shared_info: the guest page, or the shadow
        before the guest placed it; both memories have the same access methods and
        atomics (vmm.memory.AtomicAccess)."""
        if self.gpa is None:
            return self._shadow, offset
        return self.mem, self.gpa + offset

    def vcpu_info_at(self, vcpu: int, offset: int):
        """(memory, address) of ``offset`` into vcpu's vcpu_info, or None (it has none)."""
        loc = self._vcpu_info_gpa(vcpu)
        if loc is None:
            return None
        if isinstance(loc, tuple):
            return self.si_at(loc[1] + offset)
        return self.mem, loc + offset

    # ------------------------------------------------------------ vcpu_info flags
    def mark_events_pending(self, vcpu: int) -> str:
        """vcpu_mark_events_pending: evtchn_upcall_pending xchg 1; if it was 0, raise the
        upcall.  Returns a trace word.  (Both event ABIs end here.)"""
        at = self.vcpu_info_at(vcpu, self.layout.upcall_pending)
        if at is None:
            return "no vcpu_info"
        if at[0].atomic_xchg8(at[1], 1):
            return "upcall already pending"
        self.inject_upcall(vcpu)
        return "upcall"

    def upcall_pending(self, vcpu: int) -> bool:
        at = self.vcpu_info_at(vcpu, self.layout.upcall_pending)
        if at is None:
            return False
        try:
            return at[0].view(at[1], 1)[0] != 0
        except GuestMemoryError:
            return False

    def clear_upcall_mask(self, vcpu: int) -> None:
        """vcpu_block_enable_events: SCHEDOP_block turns event delivery on first."""
        at = self.vcpu_info_at(vcpu, self.layout.upcall_mask)
        if at is not None:
            try:
                at[0].view(at[1], 1)[0] = 0
            except GuestMemoryError:
                pass


def _no_upcall(vcpu: int) -> None:
    raise RuntimeError("SharedInfo.inject_upcall was not set")
