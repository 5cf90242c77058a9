"""public/memory.h: HYPERVISOR_memory_op(cmd, arg) sub-ops, map spaces and the
argument structs an HVM guest uses."""

from __future__ import annotations

from enum import IntEnum

from ._layout import (XenStruct, c_names, domid_t, exports, handle, u16, u32, u64, union,
                      xen_pfn_t, xen_ulong_t)


class XENMEM(IntEnum):
    """XENMEM_* (memory.h).  8 (translate_gpfn_list) was removed; 18-22 and
    24, 27 are tools-only ("#if defined(__XEN__) || defined(__XEN_TOOLS__)")."""
    increase_reservation = 0        # xen_memory_reservation
    decrease_reservation = 1        # xen_memory_reservation
    maximum_ram_page = 2            # arg == NULL
    current_reservation = 3         # xen_memory_domain (domid_t)
    maximum_reservation = 4         # xen_memory_domain (domid_t)
    machphys_mfn_list = 5
    populate_physmap = 6            # xen_memory_reservation
    add_to_physmap = 7              # xen_add_to_physmap
    memory_map = 9                  # xen_memory_map
    machine_memory_map = 10         # xen_memory_map
    exchange = 11                   # PV only
    machphys_mapping = 12
    set_memory_map = 13
    maximum_gpfn = 14               # xen_memory_domain (domid_t)
    remove_from_physmap = 15        # xen_remove_from_physmap
    set_pod_target = 16
    get_pod_target = 17
    get_sharing_freed_pages = 18
    get_sharing_shared_pages = 19
    paging_op = 20
    access_op = 21
    sharing_op = 22
    add_to_physmap_batch = 23       # xen_add_to_physmap_batch
    claim_pages = 24
    machphys_compat_mfn_list = 25
    get_vnumainfo = 26
    reserved_device_memory_map = 27
    acquire_resource = 28


class XENMAPSPACE(IntEnum):
    """XENMAPSPACE_*, source mapping space of add_to_physmap (memory.h)."""
    shared_info = 0     # shared info page
    grant_table = 1     # grant table page
    gmfn = 2            # GMFN
    gmfn_range = 3      # GMFN range, XENMEM_add_to_physmap only
    gmfn_foreign = 4    # GMFN from another dom, XENMEM_add_to_physmap_batch only
    dev_mmio = 5        # device mmio region, ARM only


# memory.h: the memory_op command word carries a continuation's start extent above these bits.
MEMOP_EXTENT_SHIFT = 6
MEMOP_CMD_MASK = (1 << MEMOP_EXTENT_SHIFT) - 1

# memory.h: xen_add_to_physmap.idx flag for XENMAPSPACE_grant_table.
XENMAPIDX_grant_table_status = 0x80000000

# memory.h: xen_memory_reservation.mem_flags (XENMEMF_*, interface >= 0x00030209).
XENMEMF_ADDRESS_BITS_MASK = 0xFF     # XENMEMF_address_bits(x) == x; get: x & 0xff
XENMEMF_NODE_SHIFT = 8               # XENMEMF_node(x) == (x + 1) << 8
XENMEMF_populate_on_demand = 1 << 16
XENMEMF_exact_node_request = 1 << 17
XENMEMF_vnode = 1 << 18

# memory.h: struct xen_memory_reservation (32 bytes on x86_64, 20 on x86_32).
xen_memory_reservation = XenStruct(
    "xen_memory_reservation", "memory.h",
    "extent_start" / handle,            # XEN_GUEST_HANDLE(xen_pfn_t)
    "nr_extents" / xen_ulong_t,
    "extent_order" / u32,
    "mem_flags" / u32,                  # XENMEMF_* (address_bits before 0x00030209)
    "domid" / domid_t,
)

# memory.h: struct xen_memory_domain {domid_t domid;}
xen_memory_domain = XenStruct("xen_memory_domain", "memory.h", "domid" / domid_t)

# memory.h: struct xen_add_to_physmap (24 bytes on x86_64, 16 on x86_32).
xen_add_to_physmap = XenStruct(
    "xen_add_to_physmap", "memory.h",
    "domid" / domid_t,
    "size" / u16,                       # Number of pages for gmfn_range
    "space" / u32,                      # XENMAPSPACE_*
    "idx" / xen_ulong_t,                # Index into space being mapped
    "gpfn" / xen_pfn_t,                 # GPFN where the page should appear
)

# memory.h: struct xen_add_to_physmap_batch (interface >= 0x00040700 layout).
xen_add_to_physmap_batch = XenStruct(
    "xen_add_to_physmap_batch", "memory.h",
    "domid" / domid_t,
    "space" / u16,                      # XENMAPSPACE_*
    "size" / u16,
    "u" / union("xen_add_to_physmap_batch_extra",
                "foreign_domid" / domid_t,      # gmfn_foreign
                "res0" / u16),                  # all other spaces: 0
    "idxs" / handle,                    # XEN_GUEST_HANDLE(xen_ulong_t)
    "gpfns" / handle,                   # XEN_GUEST_HANDLE(xen_pfn_t)
    "errs" / handle,                    # XEN_GUEST_HANDLE(int), OUT
)

# memory.h: struct xen_remove_from_physmap.
xen_remove_from_physmap = XenStruct(
    "xen_remove_from_physmap", "memory.h",
    "domid" / domid_t,
    "gpfn" / xen_pfn_t,
)

# memory.h: struct xen_memory_map (16 bytes on x86_64, 8 on x86_32).
xen_memory_map = XenStruct(
    "xen_memory_map", "memory.h",
    "nr_entries" / u32,                 # IN: capacity; OUT: entries stored
    "buffer" / handle,                  # XEN_GUEST_HANDLE(void): e820 entries
)

# memory.h: the buffer of XENMEM_memory_map holds entries "in the same format as
# returned by the BIOS INT 0x15 EAX=0xE820 call": packed {u64 addr; u64 size;
# u32 type;}, 20 bytes (Xen: "struct __packed e820entry" in
# xen/arch/x86/include/asm/e820.h, not a public header).
e820entry = XenStruct(
    "e820entry", "memory.h (BIOS E820 format)",
    "addr" / u64,
    "size" / u64,
    "type" / u32,
    packed=True,
)
# (The entry types are XEN_HVM_MEMMAP_TYPE_* of arch-x86/hvm/start_info.h: vmm/boot/pvh.py.)

globals().update(c_names(XENMEM, "XENMEM_"))
globals().update(c_names(XENMAPSPACE, "XENMAPSPACE_"))

__all__ = exports(globals())
