"""__HYPERVISOR_xen_version (public/version.h; xen/common/kernel.c do_xen_version).

XENVER_commandline and build_id are privileged (xsm_xen_version: XSM_PRIV):
a domU reads the commandline as "<denied>" (xen_deny()) and gets -EPERM for
the build id, as on Xen.
"""

from __future__ import annotations

from xen import abi
from xen.hypercall import Hypercall, XenError
from vmm.x86 import PAGE_SIZE

EXTRAVERSION = b".0-vmm"
CAPABILITIES = b"hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p"
CHANGESET = b"vmm (Python KVM microVMM)"
DENIED = b"<denied>\0"           # xen/common/version.c xen_deny()
HYPERVISOR_VIRT_START_64 = 0xFFFF800000000000
HYPERVISOR_COMPAT_VIRT_START = 0xF5800000

# The features we really implement (public/features.h).  hvm_pirqs: GSIs and MSIs
# can be mapped to event channels (xen/pirq.py; Xen: X86_EMU_USE_PIRQ).  No
# supervisor_mode_kernel (it makes lscpu report PVH).
FEATURES = ((1 << abi.XENFEAT_writable_page_tables) | (1 << abi.XENFEAT_writable_descriptor_tables)
            | (1 << abi.XENFEAT_auto_translated_physmap) | (1 << abi.XENFEAT_hvm_callback_vector)
            | (1 << abi.XENFEAT_hvm_safe_pvclock) | (1 << abi.XENFEAT_hvm_pirqs))


def _fixed(text: bytes, size: int) -> bytes:
    return text[:size - 1].ljust(size, b"\0")


class VersionOps:
    def __init__(self, version: tuple[int, int], handle: bytes):
        self.major, self.minor = version
        self.handle = handle          # xen_domain_handle_t (XENVER_guest_handle)

    def handlers(self) -> dict:
        return {abi.Hypercall.xen_version: self.xen_version}

    def xen_version(self, call: Hypercall) -> int:
        cmd, arg = call.args[0] & 0xFFFFFFFF, call.args[1]      # do_xen_version(int cmd, ...)
        call.tracing and call.note(f"cmd={abi.XENVER(cmd).name if cmd in abi.XENVER._value2member_map_ else cmd}")
        if cmd == abi.XENVER_version:
            return (self.major << 16) | self.minor
        if cmd == abi.XENVER_extraversion:
            call.mem.write(arg, _fixed(EXTRAVERSION, 16))
        elif cmd == abi.XENVER_compile_info:
            st = abi.layout(abi.xen_compile_info, call.abi)
            call.mem.write_struct(st, arg, dict(compiler="gcc", compile_by="vmm",
                                                compile_domain="localdomain", compile_date=""))
        elif cmd == abi.XENVER_capabilities:
            call.mem.write(arg, _fixed(CAPABILITIES, 1024))
        elif cmd == abi.XENVER_changeset:
            call.mem.write(arg, _fixed(CHANGESET, 64))
        elif cmd == abi.XENVER_platform_parameters:
            st = abi.layout(abi.xen_platform_parameters, call.abi)
            start = HYPERVISOR_COMPAT_VIRT_START if call.compat else HYPERVISOR_VIRT_START_64
            call.mem.write_struct(st, arg, dict(virt_start=start))
        elif cmd == abi.XENVER_get_features:
            st = abi.layout(abi.xen_feature_info, call.abi)
            fi = call.mem.read_struct(st, arg)
            if fi.submap_idx >= abi.XENFEAT_NR_SUBMAPS:
                raise XenError(abi.XenErrno.EINVAL, "submap_idx")
            fi.submap = FEATURES if fi.submap_idx == 0 else 0
            call.mem.write_struct(st, arg, fi)
        elif cmd == abi.XENVER_pagesize:
            if arg != 0:                     # do_xen_version: a non-NULL handle is -EINVAL
                raise XenError(abi.XenErrno.EINVAL, "pagesize takes no buffer")
            return PAGE_SIZE
        elif cmd == abi.XENVER_guest_handle:
            call.mem.write(arg, self.handle)
        elif cmd == abi.XENVER_commandline:
            call.mem.write(arg, DENIED)          # common/kernel.c: only strlen + 1 bytes
        elif cmd == abi.XENVER_build_id:
            raise XenError(abi.XenErrno.EPERM, "privileged")
        else:
            raise XenError(abi.XenErrno.ENOSYS, f"XENVER {cmd}")
        return 0
