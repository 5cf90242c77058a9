"""Where Xen's own pages go in the guest's physical address space.

XENMEM_add_to_physmap puts a Xen page (shared_info, a grant frame) at a gpfn of
the guest's choosing.  In RAM, that RAM page becomes it.  Elsewhere -- an HVM
Linux puts its grant frames in the platform device's BAR, a PVH one in
"unpopulated" address space above RAM -- the page is backed with an overlay
memory slot (``Vm.map_overlay``), as Xen's p2m would.  Not over the
I/OAPIC/LAPIC/firmware range below 4 GiB, nor beyond the guest's address
width, nor over another device's MMIO (a slot there would hide it).
"""

from __future__ import annotations

from typing import Callable

from vmm.locks import ordered_lock
from vmm.memory import IOAPIC_BASE, GuestMemoryError
from vmm.x86 import PAGE_SIZE
from xen import abi
from xen.hypercall import XenError

MAX_PLACED_GPA = 1 << 39          # within any x86-64 host's guest physical address width
PLATFORM_MMIO_BAR = "xen-platform.bar1"   # where Linux HVM places its grant frames


class PagePlacement:
    """The placed pages, by gpa.  ``mmio_find(gpa)`` names the MMIO mapping there (a
    ``vmm.bus.Mapping``, or None); ``map_overlay``/``unmap_overlay`` are the Vm's."""

    def __init__(self, memory, mmio_find: Callable[[int], object], map_overlay: Callable[[int, int], object],
                 unmap_overlay: Callable[[int], None]):
        self.memory = memory
        self._mmio_find = mmio_find
        self._map_overlay = map_overlay
        self._unmap_overlay = unmap_overlay
        self._lock = ordered_lock("xen.pages")   # below the GrantTable/SharedInfo locks
        self._placed: dict[int, object] = {}    # overlay gpa -> the Xen page placed there

    @classmethod
    def for_vm(cls, vm) -> "PagePlacement":
        return cls(vm.memory, vm.mmio_bus.find, vm.map_overlay, vm.unmap_overlay)

    def place_page(self, gpa: int, owner) -> None:
        """``owner`` (e.g. "shared_info", ("grant", idx)) goes to ``gpa``: RAM as it is, or
        an overlay.  XenError(EINVAL) where no page can go."""
        with self._lock:
            if self.memory.is_ram(gpa, PAGE_SIZE):
                return
            if gpa in self._placed:
                if self._placed[gpa] == owner:
                    return
                # Xen would let the new page replace the old one there; we refuse rather
                # than leave shared_info or a grant frame pointing at a page it lost.
                raise XenError(abi.XenErrno.EINVAL, f"gpfn {gpa >> 12:#x} holds {self._placed[gpa]}")
            if IOAPIC_BASE <= gpa < 1 << 32 or gpa + PAGE_SIZE > MAX_PLACED_GPA:
                raise XenError(abi.XenErrno.EINVAL, f"gpfn {gpa >> 12:#x}: no page can be placed there")
            m = self._mmio_find(gpa)
            if m is not None and m.name != PLATFORM_MMIO_BAR:
                # a memory slot there would hide the device from the guest
                raise XenError(abi.XenErrno.EINVAL, f"gpfn {gpa >> 12:#x} is {m.name}'s MMIO")
            try:
                self._map_overlay(gpa, PAGE_SIZE)
            except GuestMemoryError as e:
                raise XenError(abi.XenErrno.EINVAL, str(e)) from None
            self._placed[gpa] = owner

    # snapshot: which overlay gpa holds which Xen page (the pages' content is saved as memory)
    def save(self) -> dict:
        with self._lock:
            return {"placed": [[gpa, owner if isinstance(owner, str) else list(owner)]
                               for gpa, owner in self._placed.items()]}

    def restore(self, state: dict) -> None:
        with self._lock:
            self._placed = {gpa: owner if isinstance(owner, str) else tuple(owner) for gpa, owner in state["placed"]}

    def rebuilt(self) -> None:
        """Derived: the overlay memory slots of the placed pages (before memory is loaded)."""
        with self._lock:
            for gpa in self._placed:
                try:
                    self._map_overlay(gpa, PAGE_SIZE)
                except GuestMemoryError as e:
                    raise XenError(abi.XenErrno.EINVAL, f"cannot place gpfn {gpa >> 12:#x} again: {e}") from None

    def release_page(self, gpa: int, owner) -> None:
        """``owner`` moved away from ``gpa``: drop the overlay there if it is still its."""
        with self._lock:
            if self._placed.get(gpa) == owner:
                del self._placed[gpa]
                self._unmap_overlay(gpa)
