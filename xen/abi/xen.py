"""public/xen.h with arch-x86/xen.h, arch-x86/xen-x86_64.h, arch-x86/xen-x86_32.h:
hypercall numbers, VIRQs, vm_assist, console_io, domain ids, vcpu_time_info,
vcpu_info, shared_info, multicall_entry."""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from ._layout import (ABIS, XenStruct, array, by_abi, c_names, exports, offset_of, raw,
                      reserved, s8, same_offset, u8, u32, u64, ulong, xen_pfn_t, xen_ulong_t)


class Hypercall(IntEnum):
    """__HYPERVISOR_* (xen.h).  Current names: 7 was dom0_op before interface
    0x00030204, 27 was acm_op, 39 was xc_reserved_op (now argo_op)."""
    set_trap_table = 0
    mmu_update = 1
    set_gdt = 2
    stack_switch = 3
    set_callbacks = 4
    fpu_taskswitch = 5
    sched_op_compat = 6                 # compat since 0x00030101
    platform_op = 7
    set_debugreg = 8
    get_debugreg = 9
    update_descriptor = 10
    memory_op = 12
    multicall = 13
    update_va_mapping = 14
    set_timer_op = 15
    event_channel_op_compat = 16        # compat since 0x00030202 (struct evtchn_op)
    xen_version = 17
    console_io = 18
    physdev_op_compat = 19              # compat since 0x00030202 (struct physdev_op)
    grant_table_op = 20
    vm_assist = 21
    update_va_mapping_otherdomain = 22
    iret = 23                           # x86 only
    vcpu_op = 24
    set_segment_base = 25               # x86/64 only
    mmuext_op = 26
    xsm_op = 27
    nmi_op = 28
    sched_op = 29
    callback_op = 30
    xenoprof_op = 31
    event_channel_op = 32
    physdev_op = 33
    hvm_op = 34
    sysctl = 35
    domctl = 36
    kexec_op = 37
    tmem_op = 38                        # still numbered; tmem was removed in Xen 4.13
    argo_op = 39
    xenpmu_op = 40
    dm_op = 41
    hypfs_op = 42
    arch_0 = 48                         # Architecture-specific hypercalls
    arch_1 = 49
    arch_2 = 50
    arch_3 = 51
    arch_4 = 52
    arch_5 = 53
    arch_6 = 54
    arch_7 = 55


#: hypercall number -> name (xen.h), for tracing.
HYPERCALL_NAMES: dict[int, str] = {int(h): h.name for h in Hypercall}


def hypercall_name(nr: int) -> str:
    return HYPERCALL_NAMES.get(nr, f"hypercall_{nr}")


# arch-x86/xen-x86_64.h, xen-x86_32.h "Hypercall interface": argument registers
# (number and result in rAX), and "call hypercall_page + hypercall-number * 32".
HYPERCALL_ARG_REGS = {
    "64": ("rdi", "rsi", "rdx", "r10", "r8", "r9"),     # arguments 1-6
    "32": ("ebx", "ecx", "edx", "esi", "edi"),          # arguments 1-5
}
HYPERCALL_STUB_SIZE = 32


class VIRQ(IntEnum):
    """VIRQ_* (xen.h).  'V.' per-vCPU, 'G.' global (bound on vCPU0 first).
    11 was VIRQ_XC_RESERVED before Argo."""
    TIMER = 0           # V. Timebase update, and/or requested timeout.
    DEBUG = 1           # V. Request guest to dump debug info.
    CONSOLE = 2         # G. (DOM0) Bytes received on emergency console.
    DOM_EXC = 3         # G. (DOM0) Exceptional event for some domain.
    TBUF = 4            # G. (DOM0) Trace buffer has records available.
    DEBUGGER = 6        # G. (DOM0) A domain has paused for debugging.
    XENOPROF = 7        # V. XenOprofile interrupt: new sample available
    CON_RING = 8        # G. (DOM0) Bytes received on console
    PCPU_STATE = 9      # G. (DOM0) PCPU state changed
    MEM_EVENT = 10      # G. (DOM0) A memory event has occurred
    ARGO = 11           # G. Argo interdomain message notification
    ENOMEM = 12         # G. (DOM0) Low on heap memory
    XENPMU = 13         # V.  PMC interrupt
    ARCH_0 = 16         # Architecture-specific VIRQs
    ARCH_1 = 17
    ARCH_2 = 18
    ARCH_3 = 19
    ARCH_4 = 20
    ARCH_5 = 21
    ARCH_6 = 22
    ARCH_7 = 23


NR_VIRQS = 24  # xen.h
# xen.h side comments: the per-vCPU ('V.') VIRQs.
VIRQ_PER_VCPU = frozenset({VIRQ.TIMER, VIRQ.DEBUG, VIRQ.XENOPROF, VIRQ.XENPMU})


class CONSOLEIO(IntEnum):
    """CONSOLEIO_* commands of HYPERVISOR_console_io(cmd, count, buffer) (xen.h)."""
    write = 0
    read = 1


class VMASST_CMD(IntEnum):
    """VMASST_CMD_* of HYPERVISOR_vm_assist(cmd, type) (xen.h)."""
    enable = 0
    disable = 1


class VMASST_TYPE(IntEnum):
    """VMASST_TYPE_* (xen.h).  (C names 4gb_* start with a digit.)"""
    _4gb_segments = 0           # x86/32 guests: simulate full 4GB segment limits
    _4gb_segments_notify = 1    # x86/32 guests: trap (vector 15) when the above is used
    writable_pagetables = 2
    pae_extended_cr3 = 3
    architectural_iopl = 4
    runstate_update_flag = 5    # all guests: XEN_RUNSTATE_UPDATE in vcpu_runstate_info
    m2p_strict = 32             # x86/64 guests: strictly hide M2P from user mode


# xen.h: domain ids.
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_IO = 0x7FF1
DOMID_XEN = 0x7FF2
DOMID_COW = 0x7FF3
DOMID_INVALID = 0x7FF4
DOMID_ANY = 0x7FF5          # xen.h: "no specific domain ID requested" (xenstore perms)
DOMID_IDLE = 0x7FFF
DOMID_MASK = 0x7FFF
# Not a header constant: domain 0, where Xen's backends (console, xenstore) live.  The VMM's
# own backends stand in for it as the remote end of their interdomain ports (xen/evtchn.py).
DOMID_BACKEND = 0

XEN_LEGACY_MAX_VCPUS = 32     # arch-x86/xen.h: vcpu_info slots in shared_info
XEN_DOMAIN_HANDLE_LEN = 16    # xen.h: typedef uint8_t xen_domain_handle_t[16];

# xen.h: vcpu_time_info.flags.
XEN_PVCLOCK_TSC_STABLE_BIT = 1 << 0
XEN_PVCLOCK_GUEST_STOPPED = 1 << 1

# xen.h: struct vcpu_time_info, 32 bytes.  "uint8_t flags; uint8_t pad1[2]" since
# interface 0x00040601 (before: "int8_t pad1[3]").
vcpu_time_info = XenStruct(
    "vcpu_time_info", "xen.h",
    "version" / u32,
    "pad0" / reserved(u32),
    "tsc_timestamp" / u64,          # TSC at last update of time vals
    "system_time" / u64,            # Time, in nanosecs, since boot
    "tsc_to_system_mul" / u32,
    "tsc_shift" / s8,
    "flags" / u8,                   # XEN_PVCLOCK_*
    "pad1" / reserved(raw(2)),
)

# arch-x86/xen-x86_64.h: {unsigned long cr2; unsigned long pad;}
# arch-x86/xen-x86_32.h: {unsigned long cr2; unsigned long pad[5];}
# ("sizeof(vcpu_info_t) == 64" on both).
arch_vcpu_info = XenStruct(
    "arch_vcpu_info", "arch-x86/xen-x86_64.h, arch-x86/xen-x86_32.h",
    "cr2" / ulong,
    "pad" / by_abi(reserved(ulong), reserved(array(ulong, 5))),
)

# xen.h: struct vcpu_info, 64 bytes on x86.  evtchn_upcall_mask (not pad0)
# because arch-x86/xen.h defines XEN_HAVE_PV_UPCALL_MASK.
vcpu_info = XenStruct(
    "vcpu_info", "xen.h",
    "evtchn_upcall_pending" / u8,
    "evtchn_upcall_mask" / u8,
    "evtchn_pending_sel" / xen_ulong_t,
    "arch" / arch_vcpu_info,
    "time" / vcpu_time_info,
)

# arch-x86/xen.h: struct arch_shared_info.  x86_32 appends wc_sec_hi ("There's
# no room for this field in the generic structure").
arch_shared_info = XenStruct(
    "arch_shared_info", "arch-x86/xen.h",
    "max_pfn" / ulong,
    "pfn_to_mfn_frame_list_list" / xen_pfn_t,
    "nmi_reason" / ulong,
    "p2m_cr3" / ulong,
    "p2m_vaddr" / ulong,
    "p2m_generation" / ulong,
    "wc_sec_hi" / by_abi(None, u32),
)

# xen.h: struct shared_info.  evtchn_pending/evtchn_mask are
# xen_ulong_t[sizeof(xen_ulong_t) * 8]; wc_sec_hi is here "#if !defined(__i386__)",
# in arch.wc_sec_hi otherwise (xen.h: xen_wc_sec_hi).
shared_info = XenStruct(
    "shared_info", "xen.h",
    "vcpu_info" / array(vcpu_info, XEN_LEGACY_MAX_VCPUS),
    "evtchn_pending" / by_abi(array(xen_ulong_t, 64), array(xen_ulong_t, 32)),
    "evtchn_mask" / by_abi(array(xen_ulong_t, 64), array(xen_ulong_t, 32)),
    "wc_version" / u32,             # Version counter: see vcpu_time_info_t
    "wc_sec" / u32,
    "wc_nsec" / u32,
    "wc_sec_hi" / by_abi(u32, None),
    "arch" / arch_shared_info,
)

# xen.h: struct multicall_entry {xen_ulong_t op, result; xen_ulong_t args[6];}
multicall_entry = XenStruct(
    "multicall_entry", "xen.h",
    "op" / xen_ulong_t,
    "result" / xen_ulong_t,
    "args" / array(xen_ulong_t, 6),
)


class VcpuInfoOffsets(NamedTuple):
    """Offsets inside struct vcpu_info (xen.h), for single-field guest updates."""
    evtchn_upcall_pending: int
    evtchn_upcall_mask: int
    evtchn_pending_sel: int
    time: int


class SharedInfoOffsets(NamedTuple):
    """Offsets inside struct shared_info (xen.h) and its size."""
    vcpu_info: int
    evtchn_pending: int
    evtchn_mask: int
    wc_version: int
    wc_sec: int
    wc_nsec: int
    wc_sec_hi: int      # x86_32: arch.wc_sec_hi
    arch: int
    size: int


def _shared_info_offsets(abi: str) -> SharedInfoOffsets:
    o = {f: offset_of(shared_info, f, abi) for f in SharedInfoOffsets._fields
         if f not in ("wc_sec_hi", "size")}
    o["wc_sec_hi"] = offset_of(shared_info, "wc_sec_hi" if abi == "64" else "arch.wc_sec_hi", abi)
    return SharedInfoOffsets(**o, size=shared_info.sizeof(abi))


#: Per-ABI offsets, derived from the Structs above.
VCPU_INFO_OFFSETS = {abi: VcpuInfoOffsets(*(offset_of(vcpu_info, f, abi)
                                            for f in VcpuInfoOffsets._fields)) for abi in ABIS}
SHARED_INFO_OFFSETS = {abi: _shared_info_offsets(abi) for abi in ABIS}

# Named offsets: no suffix = the same on both ABIs, or the 64-bit ABI's;
# _32 = the compat ABI's (_64 spelled out too where they differ).
VCPU_INFO_SIZE = vcpu_info.sizeof("64")                                      # 64
assert vcpu_info.sizeof("32") == VCPU_INFO_SIZE
VCPU_INFO_EVTCHN_UPCALL_PENDING = same_offset(vcpu_info, "evtchn_upcall_pending")  # 0
VCPU_INFO_EVTCHN_UPCALL_MASK = same_offset(vcpu_info, "evtchn_upcall_mask")        # 1
VCPU_INFO_TIME = same_offset(vcpu_info, "time")                                    # 32
VCPU_INFO_EVTCHN_PENDING_SEL = VCPU_INFO_EVTCHN_PENDING_SEL_64 = VCPU_INFO_OFFSETS["64"].evtchn_pending_sel
VCPU_INFO_EVTCHN_PENDING_SEL_32 = VCPU_INFO_OFFSETS["32"].evtchn_pending_sel       # 4

_si64, _si32 = SHARED_INFO_OFFSETS["64"], SHARED_INFO_OFFSETS["32"]
EVTCHN_PENDING_OFFSET = EVTCHN_PENDING_OFFSET_64 = _si64.evtchn_pending      # 0x800
EVTCHN_MASK_OFFSET = EVTCHN_MASK_OFFSET_64 = _si64.evtchn_mask               # 0xA00
WC_VERSION = WC_VERSION_64 = _si64.wc_version                                # 0xC00
WC_SEC = WC_SEC_64 = _si64.wc_sec                                            # 0xC04
WC_NSEC = WC_NSEC_64 = _si64.wc_nsec                                         # 0xC08
WC_SEC_HI = WC_SEC_HI_64 = _si64.wc_sec_hi                                   # 0xC0C
SHARED_INFO_SIZE = SHARED_INFO_SIZE_64 = _si64.size                          # 0xC40
EVTCHN_PENDING_OFFSET_32 = _si32.evtchn_pending                              # 0x800
EVTCHN_MASK_OFFSET_32 = _si32.evtchn_mask                                    # 0x880
WC_VERSION_32 = _si32.wc_version                                             # 0x900
WC_SEC_32 = _si32.wc_sec                                                     # 0x904
WC_NSEC_32 = _si32.wc_nsec                                                   # 0x908
WC_SEC_HI_32 = _si32.wc_sec_hi                                               # 0x924
SHARED_INFO_SIZE_32 = _si32.size                                             # 0x928

globals().update(c_names(VIRQ, "VIRQ_"))
globals().update(c_names(CONSOLEIO, "CONSOLEIO_"))
globals().update(c_names(VMASST_CMD, "VMASST_CMD_"))
globals().update(c_names(VMASST_TYPE, "VMASST_TYPE_"))

__all__ = exports(globals())
