"""public/sched.h: HYPERVISOR_sched_op(cmd, arg) sub-ops, shutdown reasons and
argument structs."""

from __future__ import annotations

from enum import IntEnum

from ._layout import XenStruct, c_names, domid_t, exports, handle, s32, u32, u64

# sched.h: SCHEDOP_*.  Functional syntax because "yield" is a Python keyword:
# SCHEDOP["yield"], SCHEDOP.block, ...
SCHEDOP = IntEnum("SCHEDOP", [
    ("yield", 0),               # arg == NULL
    ("block", 1),               # arg == NULL
    ("shutdown", 2),            # sched_shutdown
    ("poll", 3),                # sched_poll
    ("remote_shutdown", 4),     # sched_remote_shutdown
    ("shutdown_code", 5),       # sched_shutdown
    ("watchdog", 6),            # sched_watchdog
    ("pin_override", 7),        # sched_pin_override
], module=__name__)
SCHEDOP.__doc__ = "SCHEDOP_* (sched.h)."


class SHUTDOWN(IntEnum):
    """SHUTDOWN_* reasons, sched_shutdown.reason (sched.h)."""
    poweroff = 0        # Domain exited normally. Clean up and kill.
    reboot = 1          # Clean up, kill, and then restart.
    suspend = 2         # Clean up, save suspend info, kill.
    crash = 3           # Tell controller we've crashed.
    watchdog = 4        # Restart because watchdog time expired.
    soft_reset = 5      # Reset Xen state, keep memory and vCPU contexts.


SHUTDOWN_MAX = 5  # sched.h: Maximum valid shutdown reason.

# sched.h: struct sched_shutdown {unsigned int reason;}
sched_shutdown = XenStruct("sched_shutdown", "sched.h", "reason" / u32)

# sched.h: struct sched_poll (24 bytes on x86_64: pad after nr_ports; 16 on x86_32).
sched_poll = XenStruct(
    "sched_poll", "sched.h",
    "ports" / handle,                   # XEN_GUEST_HANDLE(evtchn_port_t)
    "nr_ports" / u32,
    "timeout" / u64,
)

# sched.h: struct sched_remote_shutdown.
sched_remote_shutdown = XenStruct(
    "sched_remote_shutdown", "sched.h",
    "domain_id" / domid_t,
    "reason" / u32,
)

# sched.h: struct sched_watchdog.
sched_watchdog = XenStruct("sched_watchdog", "sched.h", "id" / u32, "timeout" / u32)

# sched.h: struct sched_pin_override {int32_t pcpu;}
sched_pin_override = XenStruct("sched_pin_override", "sched.h", "pcpu" / s32)

globals().update(c_names(SCHEDOP, "SCHEDOP_"))
globals().update(c_names(SHUTDOWN, "SHUTDOWN_"))

__all__ = exports(globals())
