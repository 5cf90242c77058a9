"""The Xen CPUID leaves (public/arch-x86/cpuid.h), at base 0x40000000.

Linux scans 0x40000000..0x4000ff00 and takes the highest base with the
signature; we replace KVM's own leaves there, so the guest sees only Xen.
"""

from __future__ import annotations

from xen import abi
from xen.transport import HYPERCALL_MSR

BASE = 0x40000000


def _sig(text: bytes) -> tuple[int, int, int]:
    return (int.from_bytes(text[0:4], "little"), int.from_bytes(text[4:8], "little"),
            int.from_bytes(text[8:12], "little"))


def xen_leaves(vcpu_id: int, version: tuple[int, int], domid: int,
               tsc_khz: int, apic_virt: bool = False) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    major, minor = version
    ebx, ecx, edx = _sig(abi.XEN_CPUID_SIGNATURE)
    flags = abi.XEN_HVM_CPUID_VCPU_ID_PRESENT | abi.XEN_HVM_CPUID_DOMID_PRESENT
    if apic_virt:
        # Xen sets these when the CPU virtualizes APIC accesses / x2APIC MSRs
        # (xen/arch/x86/traps.c cpuid_hypervisor_leaves); Linux then prefers native MSIs
        # to PIRQs (arch/x86/pci/xen.c xen_hvm_msi_init).  KVM's LAPIC is in the kernel
        # either way, so this is a choice (XenConfig.apic_virt), not a fact we detect.
        flags |= abi.XEN_HVM_CPUID_APIC_ACCESS_VIRT | abi.XEN_HVM_CPUID_X2APIC_VIRT
    if version >= (4, 17):
        flags |= abi.XEN_HVM_CPUID_UPCALL_VECTOR     # HVMOP_set_evtchn_upcall_vector is available
    return {
        (BASE, 0): (BASE + 4, ebx, ecx, edx),                 # max leaf, "XenVMMXenVMM"
        (BASE + 1, 0): ((major << 16) | minor, 0, 0, 0),      # version
        (BASE + 2, 0): (1, HYPERCALL_MSR, 0, 0),              # 1 hypercall page, its MSR
        # TSC leaf: sub-leaf 0 ecx = guest TSC kHz, 2 eax = host TSC kHz (same here)
        (BASE + 3, 0): (0, 0, tsc_khz, 0),
        (BASE + 3, 1): (0, 0, 0, 0),
        (BASE + 3, 2): (tsc_khz, 0, 0, 0),
        (BASE + 4, 0): (flags, vcpu_id, domid, 0),            # HVM leaf: vCPU id, domid
    }
