"""The toolstack's HVM special pages: where the guest finds its console and xenstore rings.

Xen's toolstack (tools/libs/guest/xg_dom_x86.c) populates eight pages just below
gfn 0xff000 (``abi.special_pfn(SPECIALPAGE_*)``), clears them, and publishes the
console and xenstore ones through HVM_PARAM_CONSOLE_PFN / HVM_PARAM_STORE_PFN;
libxl reports the region E820_RESERVED so the guest's allocator leaves it alone.
We do the same: one VMM-backed overlay slot for the region (it is outside RAM:
between the LAPIC and 4 GiB, where our memory map has nothing), reserved in the
E820 map the loaders hand the guest.  The pages are ordinary memory to the guest
(Linux's hvc_xen maps the console with xen_remap, an ioremap).
"""

from __future__ import annotations

from vmm.x86 import PAGE_SHIFT, PAGE_SIZE
from xen import abi

BASE = abi.special_pfn(0) << PAGE_SHIFT
SIZE = abi.X86_HVM_NR_SPECIAL_PAGES * PAGE_SIZE


class SpecialPages:
    def __init__(self, vm):
        vm.map_overlay(BASE, SIZE)
        vm.memory.mark_reserved(BASE, SIZE)

    @staticmethod
    def gpa(which: int) -> int:
        """Guest-physical address of special page ``which`` (abi.SPECIALPAGE_*)."""
        return abi.special_pfn(which) << PAGE_SHIFT

    @staticmethod
    def pfn(which: int) -> int:
        return abi.special_pfn(which)
