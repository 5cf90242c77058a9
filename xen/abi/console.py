"""public/io/console.h: the PV console ring page shared by a guest and its console
backend (xenconsoled on Xen; the VMM here), and the HVM special-page layout the
toolstack puts it in (tools/include/xenguest.h, tools/libs/guest/xg_dom_x86.c)."""

from __future__ import annotations

from ._layout import XenStruct, c_names, exports, raw, u8, u32  # noqa: F401

# io/console.h: struct xencons_interface (no longs: the same on both ABIs).
# XENCONS_RING_IDX is uint32_t, free-running; MASK_XENCONS_IDX(idx, ring) = idx & (sizeof(ring) - 1).
xencons_interface = XenStruct(
    "xencons_interface", "io/console.h",
    "in" / raw(1024),                   # backend -> guest (keyboard)
    "out" / raw(2048),                  # guest -> backend (output)
    "in_cons" / u32,
    "in_prod" / u32,
    "out_cons" / u32,
    "out_prod" / u32,
    "connection" / u8,                  # XENCONSOLE_* (newer Xen: the backend says it serves)
)
XENCONS_IN_SIZE = 1024
XENCONS_OUT_SIZE = 2048
XENCONSOLE_CONNECTED = 0                # io/console.h: the backend serves the ring
XENCONSOLE_DISCONNECTED = 1

# tools/include/xenguest.h: the toolstack's HVM special pages end below 0xff000 (gfn),
# eight of them; tools/libs/guest/xg_dom_x86.c numbers them (special_pfn(x) =
# END - NR + x), and libxl_x86.c marks the region E820_RESERVED for PVH guests.
X86_HVM_NR_SPECIAL_PAGES = 8
X86_HVM_END_SPECIAL_REGION = 0xFF000    # a gfn
SPECIALPAGE_PAGING = 0
SPECIALPAGE_ACCESS = 1
SPECIALPAGE_SHARING = 2
SPECIALPAGE_BUFIOREQ = 3
SPECIALPAGE_XENSTORE = 4
SPECIALPAGE_IOREQ = 5
SPECIALPAGE_IDENT_PT = 6
SPECIALPAGE_CONSOLE = 7


def special_pfn(x: int) -> int:
    """xg_dom_x86.c special_pfn(x)."""
    return X86_HVM_END_SPECIAL_REGION - X86_HVM_NR_SPECIAL_PAGES + x


__all__ = exports(globals())
