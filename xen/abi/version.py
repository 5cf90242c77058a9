"""public/version.h: HYPERVISOR_xen_version(cmd, arg) sub-ops and buffers
(the XENVER_get_features bits are in features.py)."""

from __future__ import annotations

from enum import IntEnum

from ._layout import XenStruct, c_names, chars, exports, flex, u32, xen_ulong_t


class XENVER(IntEnum):
    """XENVER_* (version.h).  All return 0 on success except version, pagesize
    and build_id (and the *2 ops), which return a value/length."""
    version = 0                 # arg == NULL; returns major:minor (16:16)
    extraversion = 1            # xen_extraversion_t
    compile_info = 2            # xen_compile_info
    capabilities = 3            # xen_capabilities_info_t
    changeset = 4               # xen_changeset_info_t
    platform_parameters = 5     # xen_platform_parameters
    get_features = 6            # xen_feature_info
    pagesize = 7                # arg == NULL; returns host page size
    guest_handle = 8            # xen_domain_handle_t (16 bytes)
    commandline = 9             # xen_commandline_t
    build_id = 10               # xen_build_id / xen_varbuf
    # Post-4.17 non-truncating variants (arg == xen_varbuf; NULL asks the size):
    extraversion2 = 11
    capabilities2 = 12
    changeset2 = 13
    commandline2 = 14


# version.h: fixed-size char buffers (sizeof of the typedefs).
XEN_EXTRAVERSION_LEN = 16           # typedef char xen_extraversion_t[16]
XEN_CAPABILITIES_INFO_LEN = 1024    # typedef char xen_capabilities_info_t[1024]
XEN_CHANGESET_INFO_LEN = 64         # typedef char xen_changeset_info_t[64]
XEN_COMMANDLINE_LEN = 1024          # typedef char xen_commandline_t[1024] (no _LEN macro in the header)

# version.h: struct xen_compile_info (144 bytes).
xen_compile_info = XenStruct(
    "xen_compile_info", "version.h",
    "compiler" / chars(64),
    "compile_by" / chars(16),
    "compile_domain" / chars(32),
    "compile_date" / chars(32),
)

# version.h: struct xen_platform_parameters {xen_ulong_t virt_start;}
xen_platform_parameters = XenStruct(
    "xen_platform_parameters", "version.h",
    "virt_start" / xen_ulong_t,
)

# version.h: struct xen_feature_info.
xen_feature_info = XenStruct(
    "xen_feature_info", "version.h",
    "submap_idx" / u32,                 # IN: which 32-bit submap to return
    "submap" / u32,                     # OUT: 32-bit submap
)

# version.h: struct xen_build_id {uint32_t len; unsigned char buf[];} (sizeof 4).
xen_build_id = XenStruct("xen_build_id", "version.h", "len" / u32, "buf" / flex())

# version.h: struct xen_varbuf {uint32_t len; unsigned char buf[];} (post-4.17).
xen_varbuf = XenStruct("xen_varbuf", "version.h", "len" / u32, "buf" / flex())

globals().update(c_names(XENVER, "XENVER_"))

__all__ = exports(globals())
