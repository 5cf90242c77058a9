"""public/grant_table.h: HYPERVISOR_grant_table_op(cmd, args, count) sub-ops,
status codes and the table-management argument structs."""

from __future__ import annotations

from enum import IntEnum

from ._layout import XenStruct, c_names, domid_t, exports, handle, reserved, s16, u16, u32


class GNTTABOP(IntEnum):
    """GNTTABOP_* (grant_table.h); 8-12 need interface >= 0x0003020a."""
    map_grant_ref = 0
    unmap_grant_ref = 1
    setup_table = 2             # gnttab_setup_table
    dump_table = 3
    transfer = 4                # PV only
    copy = 5
    query_size = 6              # gnttab_query_size
    unmap_and_replace = 7
    set_version = 8             # gnttab_set_version
    get_status_frames = 9       # gnttab_get_status_frames
    get_version = 10            # gnttab_get_version
    swap_grant_ref = 11
    cache_flush = 12


class GNTST(IntEnum):
    """GNTST_* status values, all errors negative (grant_table.h)."""
    okay = 0
    general_error = -1
    bad_domain = -2
    bad_gntref = -3
    bad_handle = -4
    bad_virt_addr = -5
    bad_dev_addr = -6
    no_device_space = -7
    permission_denied = -8
    bad_page = -9
    bad_copy_arg = -10
    address_too_big = -11
    eagain = -12
    no_space = -13


# grant_table.h: struct gnttab_setup_table (24 bytes on x86_64, 16 on x86_32).
gnttab_setup_table = XenStruct(
    "gnttab_setup_table", "grant_table.h",
    "dom" / domid_t,
    "nr_frames" / u32,
    "status" / s16,                     # OUT: GNTST_*
    "frame_list" / handle,              # XEN_GUEST_HANDLE(xen_pfn_t) (ulong before 0x00040300)
)

# grant_table.h: struct gnttab_query_size.
gnttab_query_size = XenStruct(
    "gnttab_query_size", "grant_table.h",
    "dom" / domid_t,
    "nr_frames" / u32,                  # OUT
    "max_nr_frames" / u32,              # OUT
    "status" / s16,                     # OUT: GNTST_*
)

# grant_table.h: struct gnttab_set_version {uint32_t version;} (IN/OUT: 1 or 2).
gnttab_set_version = XenStruct("gnttab_set_version", "grant_table.h", "version" / u32)

# grant_table.h: struct gnttab_get_version.
gnttab_get_version = XenStruct(
    "gnttab_get_version", "grant_table.h",
    "dom" / domid_t,
    "pad" / reserved(u16),
    "version" / u32,                    # OUT
)

# grant_table.h: struct gnttab_get_status_frames.
gnttab_get_status_frames = XenStruct(
    "gnttab_get_status_frames", "grant_table.h",
    "nr_frames" / u32,
    "dom" / domid_t,
    "status" / s16,                     # OUT: GNTST_*
    "frame_list" / handle,              # XEN_GUEST_HANDLE(uint64_t)
)

globals().update(c_names(GNTTABOP, "GNTTABOP_"))
globals().update(c_names(GNTST, "GNTST_"))

__all__ = exports(globals())
