"""public/vcpu.h: HYPERVISOR_vcpu_op(cmd, vcpuid, arg) sub-ops, runstates and
argument structs."""

from __future__ import annotations

from enum import IntEnum

from ._layout import XenStruct, array, c_names, exports, handle, reserved, s32, u32, u64, union


class VCPUOP(IntEnum):
    """VCPUOP_* (vcpu.h)."""
    initialise = 0                          # HVM: arg is a vcpu_hvm_context
    up = 1
    down = 2
    is_up = 3                               # returns 1 if up
    get_runstate_info = 4                   # vcpu_runstate_info
    register_runstate_memory_area = 5       # vcpu_register_runstate_memory_area
    set_periodic_timer = 6                  # vcpu_set_periodic_timer
    stop_periodic_timer = 7                 # arg == NULL
    set_singleshot_timer = 8                # vcpu_set_singleshot_timer
    stop_singleshot_timer = 9               # arg == NULL
    register_vcpu_info = 10                 # vcpu_register_vcpu_info
    send_nmi = 11                           # arg == NULL
    get_physid = 12                         # vcpu_get_physid
    register_vcpu_time_memory_area = 13     # vcpu_register_time_memory_area
    # Xen 4.18+: same structs, but addr.p is a guest *physical* address
    # (gated by XENFEAT_runstate_phys_area / XENFEAT_vcpu_time_phys_area).
    register_runstate_phys_area = 14
    register_vcpu_time_phys_area = 15


class RUNSTATE(IntEnum):
    """RUNSTATE_*, vcpu_runstate_info.state (vcpu.h)."""
    running = 0     # VCPU is currently running on a physical CPU.
    runnable = 1    # VCPU is runnable, but not currently scheduled.
    blocked = 2     # VCPU is blocked (a.k.a. idle).
    offline = 3     # VCPU is not runnable, but it is not blocked.


# vcpu.h: set in state_entry_time while Xen updates a guest-mapped
# vcpu_runstate_info (when VMASST_TYPE_runstate_update_flag is on).
XEN_RUNSTATE_UPDATE = 1 << 63

# vcpu.h: vcpu_set_singleshot_timer.flags: "Require the timeout to be in the
# future (return -ETIME if it's passed)".
VCPU_SSHOTTMR_future = 1 << 0

# vcpu.h: struct vcpu_runstate_info.  48 bytes on x86_64; 44 on x86_32, where
# state_entry_time sits at offset 4.
vcpu_runstate_info = XenStruct(
    "vcpu_runstate_info", "vcpu.h",
    "state" / s32,                      # RUNSTATE_*
    "state_entry_time" / u64,           # ns; bit 63 = XEN_RUNSTATE_UPDATE
    "time" / array(u64, 4),             # ns spent in each RUNSTATE_*
)


def _addr_union(cname: str):
    # vcpu.h: union { XEN_GUEST_HANDLE(...) h; struct ... *v; uint64_t p; } addr;
    return union(cname, "p" / u64, "h" / handle, "v" / handle)


# vcpu.h: struct vcpu_register_runstate_memory_area.
vcpu_register_runstate_memory_area = XenStruct(
    "vcpu_register_runstate_memory_area", "vcpu.h",
    "addr" / _addr_union("vcpu_register_runstate_memory_area.addr"),
)

# vcpu.h: struct vcpu_set_periodic_timer.
vcpu_set_periodic_timer = XenStruct("vcpu_set_periodic_timer", "vcpu.h", "period_ns" / u64)

# vcpu.h: struct vcpu_set_singleshot_timer (16 bytes on x86_64, 12 on x86_32).
vcpu_set_singleshot_timer = XenStruct(
    "vcpu_set_singleshot_timer", "vcpu.h",
    "timeout_abs_ns" / u64,             # Absolute system time value in nanoseconds
    "flags" / u32,                      # VCPU_SSHOTTMR_*
)

# vcpu.h: struct vcpu_register_vcpu_info.
vcpu_register_vcpu_info = XenStruct(
    "vcpu_register_vcpu_info", "vcpu.h",
    "mfn" / u64,                        # mfn of page to place vcpu_info
    "offset" / u32,                     # offset within page
    "rsvd" / reserved(u32),             # unused
)

# vcpu.h: struct vcpu_get_physid (x86: id[31:0]=apic_id, id[63:32]=acpi_id).
vcpu_get_physid = XenStruct("vcpu_get_physid", "vcpu.h", "phys_id" / u64)

# vcpu.h: struct vcpu_register_time_memory_area.
vcpu_register_time_memory_area = XenStruct(
    "vcpu_register_time_memory_area", "vcpu.h",
    "addr" / _addr_union("vcpu_register_time_memory_area.addr"),
)

globals().update(c_names(VCPUOP, "VCPUOP_"))
globals().update(c_names(RUNSTATE, "RUNSTATE_"))

__all__ = exports(globals())
