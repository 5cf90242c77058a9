"""public/features.h: the XENFEAT_* bits reported by XENVER_get_features."""

from __future__ import annotations

from enum import IntEnum

from ._layout import c_names, exports


class XENFEAT(IntEnum):
    """XENFEAT_* bit numbers (features.h); submap = bits [32*idx, 32*idx+31].
    12 (grant_map_identity) is deprecated and commented out in the header."""
    writable_page_tables = 0
    writable_descriptor_tables = 1
    auto_translated_physmap = 2
    supervisor_mode_kernel = 3
    pae_pgdir_above_4gb = 4
    mmu_pt_update_preserve_ad = 5
    highmem_assist = 6
    gnttab_map_avail_bits = 7
    hvm_callback_vector = 8         # x86: HVM_PARAM_CALLBACK_TYPE_VECTOR available
    hvm_safe_pvclock = 9            # x86: pvclock algorithm is safe to use on HVM
    hvm_pirqs = 10                  # x86: pirq can be used by HVM guests
    dom0 = 11
    memory_op_vnode_supported = 13
    ARM_SMCCC_supported = 14
    linux_rsdp_unrestricted = 15
    not_direct_mapped = 16
    direct_mapped = 17
    runstate_phys_area = 18         # VCPUOP_register_runstate_phys_area (4.18+)
    vcpu_time_phys_area = 19        # VCPUOP_register_vcpu_time_phys_area (4.18+)
    dm_msix_all_writes = 20         # post-4.18; relevant to device models only


XENFEAT_NR_SUBMAPS = 1  # features.h

globals().update(c_names(XENFEAT, "XENFEAT_"))

__all__ = exports(globals())
