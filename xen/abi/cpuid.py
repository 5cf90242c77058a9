"""public/arch-x86/cpuid.h: the Xen CPUID leaves (0x40000x00 ...)."""

from __future__ import annotations

import struct as _struct
from enum import IntFlag

from ._layout import c_names, exports

# arch-x86/cpuid.h: the leaves start at the first otherwise unused 0x100-aligned
# base from 0x40000000 (e.g. 0x40000100 when Viridian leaves are present).
XEN_CPUID_FIRST_LEAF = 0x40000000
XEN_CPUID_BASE_STEP = 0x100

# arch-x86/cpuid.h: leaf offsets from the base.  The names are ours; the header
# numbers them "Leaf 1 (0x40000x00)" ... "Leaf 6 (0x40000x05)".
XEN_CPUID_LEAF_SIGNATURE = 0    # EAX: largest leaf; EBX-EDX: "XenVMMXenVMM"
XEN_CPUID_LEAF_VERSION = 1      # EAX[31:16]: major, EAX[15:0]: minor
XEN_CPUID_LEAF_HYPERCALL = 2    # EAX: nr hypercall pages; EBX: MSR base; ECX/EDX: features
XEN_CPUID_LEAF_TIME = 3         # TSC mode/frequency (sub-leaves 0-2)
XEN_CPUID_LEAF_HVM = 4          # EAX: XEN_HVM_CPUID_*; EBX: vcpu id; ECX: domid
XEN_CPUID_LEAF_PV = 5           # PV-specific parameters

XEN_CPUID_MAX_NUM_LEAVES = 5    # arch-x86/cpuid.h: largest leaf offset in base+0 EAX

# arch-x86/cpuid.h: leaf 1 (base+0) EBX-EDX signature.
XEN_CPUID_SIGNATURE_EBX = 0x566E6558    # "XenV"
XEN_CPUID_SIGNATURE_ECX = 0x65584D4D    # "MMXe"
XEN_CPUID_SIGNATURE_EDX = 0x4D4D566E    # "nVMM"
XEN_CPUID_SIGNATURE = _struct.pack("<3I", XEN_CPUID_SIGNATURE_EBX, XEN_CPUID_SIGNATURE_ECX,
                                   XEN_CPUID_SIGNATURE_EDX)
assert XEN_CPUID_SIGNATURE == b"XenVMMXenVMM"

# arch-x86/cpuid.h: leaf 3 (base+2) ECX "Features 1".
XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD = 1 << 0

# arch-x86/cpuid.h: leaf 6 (base+5) EBX bits 0-7: max machine address width.
XEN_CPUID_MACHINE_ADDRESS_WIDTH_MASK = 0xFF


class XEN_HVM_CPUID(IntFlag):
    """XEN_HVM_CPUID_* flags in EAX of leaf 5 (base+4) (arch-x86/cpuid.h)."""
    APIC_ACCESS_VIRT = 1 << 0   # Virtualized APIC registers
    X2APIC_VIRT = 1 << 1        # Virtualized x2APIC accesses
    IOMMU_MAPPINGS = 1 << 2     # Memory mapped from other domains has valid IOMMU entries
    VCPU_ID_PRESENT = 1 << 3    # vcpu id is present in EBX
    DOMID_PRESENT = 1 << 4      # domid is present in ECX
    EXT_DEST_ID = 1 << 5        # 15-bit APIC destination IDs in IO-APIC RTE / MSI address
    UPCALL_VECTOR = 1 << 6      # per-vCPU upcall vectors work with PIRQs


globals().update(c_names(XEN_HVM_CPUID, "XEN_HVM_CPUID_"))

__all__ = exports(globals())
