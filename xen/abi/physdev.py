"""public/physdev.h: HYPERVISOR_physdev_op(cmd, arg) sub-ops and the PIRQ
argument structs."""

from __future__ import annotations

from enum import IntEnum

from ._layout import XenStruct, c_names, domid_t, exports, s32, u32, u64, xen_pfn_t


class PHYSDEVOP(IntEnum):
    """PHYSDEVOP_* (physdev.h).  22 is left free; IRQ_UNMASK_NOTIFY is obsolete
    since 0x00030202; PHYSDEVOP_pirq_eoi_gmfn means v2 from 0x00040200."""
    IRQ_UNMASK_NOTIFY = 4
    irq_status_query = 5        # physdev_irq_status_query
    set_iopl = 6
    set_iobitmap = 7
    apic_read = 8
    apic_write = 9
    alloc_irq_vector = 10
    free_irq_vector = 11
    eoi = 12                    # physdev_eoi
    map_pirq = 13               # physdev_map_pirq
    unmap_pirq = 14             # physdev_unmap_pirq
    manage_pci_add = 15
    manage_pci_remove = 16
    pirq_eoi_gmfn_v1 = 17       # physdev_pirq_eoi_gmfn (also auto-unmasks on EOI)
    restore_msi = 19
    manage_pci_add_ext = 20
    setup_gsi = 21
    get_free_pirq = 23          # physdev_get_free_pirq
    pci_mmcfg_reserved = 24
    pci_device_add = 25
    pci_device_remove = 26
    restore_msi_ext = 27
    pirq_eoi_gmfn_v2 = 28       # physdev_pirq_eoi_gmfn
    dbgp_op = 29
    prepare_msix = 30
    release_msix = 31
    pci_device_reset = 32       # post-4.18, hardware domain only


class MAP_PIRQ_TYPE(IntEnum):
    """MAP_PIRQ_TYPE_*, physdev_map_pirq.type / physdev_get_free_pirq.type (physdev.h)."""
    MSI = 0x0
    GSI = 0x1
    UNKNOWN = 0x2
    MSI_SEG = 0x3       # bus[31:16] holds the segment
    MULTI_MSI = 0x4


# physdev.h: physdev_irq_status_query.flags.
XENIRQSTAT_needs_eoi = 1 << 0   # Need to call PHYSDEVOP_eoi when the IRQ has been serviced?
XENIRQSTAT_shared = 1 << 1      # IRQ shared by multiple guests?

# physdev.h: struct physdev_eoi {uint32_t irq;}
physdev_eoi = XenStruct("physdev_eoi", "physdev.h", "irq" / u32)

# physdev.h: struct physdev_pirq_eoi_gmfn {xen_pfn_t gmfn;}
physdev_pirq_eoi_gmfn = XenStruct("physdev_pirq_eoi_gmfn", "physdev.h", "gmfn" / xen_pfn_t)

# physdev.h: struct physdev_irq_status_query.
physdev_irq_status_query = XenStruct(
    "physdev_irq_status_query", "physdev.h",
    "irq" / u32,                        # IN
    "flags" / u32,                      # OUT: XENIRQSTAT_*
)

# physdev.h: struct physdev_map_pirq.  40 bytes on x86_64 (table_base at 32
# after 4 bytes of padding); 36 on x86_32 (table_base at 28).
physdev_map_pirq = XenStruct(
    "physdev_map_pirq", "physdev.h",
    "domid" / domid_t,
    "type" / s32,                       # IN: MAP_PIRQ_TYPE_*
    "index" / s32,                      # IN (ignored for MULTI_MSI): GSI, or MSI-X entry
    "pirq" / s32,                       # IN or OUT
    "bus" / s32,                        # IN; high 16 bits: segment for MSI_SEG/MULTI_MSI
    "devfn" / s32,                      # IN
    "entry_nr" / s32,                   # IN (also OUT for MULTI_MSI)
    "table_base" / u64,                 # IN
)

# physdev.h: struct physdev_unmap_pirq.
physdev_unmap_pirq = XenStruct(
    "physdev_unmap_pirq", "physdev.h",
    "domid" / domid_t,
    "pirq" / s32,
)

# physdev.h: struct physdev_get_free_pirq.
physdev_get_free_pirq = XenStruct(
    "physdev_get_free_pirq", "physdev.h",
    "type" / s32,                       # IN: MAP_PIRQ_TYPE_GSI or _MSI
    "pirq" / u32,                       # OUT
)

globals().update(c_names(PHYSDEVOP, "PHYSDEVOP_"))
globals().update(c_names(MAP_PIRQ_TYPE, "MAP_PIRQ_TYPE_"))

__all__ = exports(globals())
