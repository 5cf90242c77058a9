"""public/event_channel.h: HYPERVISOR_event_channel_op(cmd, arg) sub-ops and
their argument structs, the legacy multiplexed struct evtchn_op, 2-level and
FIFO ABI constants.  All these structs are the same on both ABIs."""

from __future__ import annotations

from enum import IntEnum

from ._layout import (CType, XenStruct, array, c_names, domid_t, evtchn_port_t, exports, raw,
                      reserved, sizeof_ulong, u8, u32, u64, union)


class EVTCHNOP(IntEnum):
    """EVTCHNOP_* (event_channel.h)."""
    bind_interdomain = 0
    bind_virq = 1
    bind_pirq = 2
    close = 3
    send = 4
    status = 5
    alloc_unbound = 6
    bind_ipi = 7
    bind_vcpu = 8
    unmask = 9
    reset = 10
    init_control = 11       # FIFO ABI
    expand_array = 12       # FIFO ABI
    set_priority = 13       # FIFO ABI
    reset_cont = 14         # "#ifdef __XEN__": Xen-internal continuation, not a guest op


class EVTCHNSTAT(IntEnum):
    """EVTCHNSTAT_*, evtchn_status.status (event_channel.h)."""
    closed = 0          # Channel is not in use.
    unbound = 1         # Channel is waiting interdom connection.
    interdomain = 2     # Channel is connected to remote domain.
    pirq = 3            # Channel is bound to a phys IRQ line.
    virq = 4            # Channel is bound to a virtual IRQ line
    ipi = 5             # Channel is bound to a virtual IPI line


BIND_PIRQ__WILL_SHARE = 1   # event_channel.h: evtchn_bind_pirq.flags

# event_channel.h: EVTCHN_2L_NR_CHANNELS = sizeof(xen_ulong_t) * sizeof(xen_ulong_t) * 64.
EVTCHN_2L_NR_CHANNELS = EVTCHN_2L_NR_CHANNELS_64 = sizeof_ulong("64") ** 2 * 64   # 4096
EVTCHN_2L_NR_CHANNELS_32 = sizeof_ulong("32") ** 2 * 64                          # 1024

# event_channel.h: FIFO ABI.
EVTCHN_FIFO_PRIORITY_MAX = 0
EVTCHN_FIFO_PRIORITY_DEFAULT = 7
EVTCHN_FIFO_PRIORITY_MIN = 15
EVTCHN_FIFO_MAX_QUEUES = EVTCHN_FIFO_PRIORITY_MIN + 1
EVTCHN_FIFO_PENDING = 31        # bit numbers in an event_word_t
EVTCHN_FIFO_MASKED = 30
EVTCHN_FIFO_LINKED = 29
EVTCHN_FIFO_BUSY = 28
EVTCHN_FIFO_LINK_BITS = 17
EVTCHN_FIFO_LINK_MASK = (1 << EVTCHN_FIFO_LINK_BITS) - 1
EVTCHN_FIFO_NR_CHANNELS = 1 << EVTCHN_FIFO_LINK_BITS
event_word_t = CType("event_word_t", u32.layout)      # typedef uint32_t event_word_t;

# event_channel.h: struct evtchn_alloc_unbound (IN dom, remote_dom; OUT port).
evtchn_alloc_unbound = XenStruct(
    "evtchn_alloc_unbound", "event_channel.h",
    "dom" / domid_t,
    "remote_dom" / domid_t,
    "port" / evtchn_port_t,
)

# event_channel.h: struct evtchn_bind_interdomain.
evtchn_bind_interdomain = XenStruct(
    "evtchn_bind_interdomain", "event_channel.h",
    "remote_dom" / domid_t,
    "remote_port" / evtchn_port_t,
    "local_port" / evtchn_port_t,       # OUT
)

# event_channel.h: struct evtchn_bind_virq.
evtchn_bind_virq = XenStruct(
    "evtchn_bind_virq", "event_channel.h",
    "virq" / u32,                       # enum virq
    "vcpu" / u32,
    "port" / evtchn_port_t,             # OUT
)

# event_channel.h: struct evtchn_bind_pirq.
evtchn_bind_pirq = XenStruct(
    "evtchn_bind_pirq", "event_channel.h",
    "pirq" / u32,
    "flags" / u32,                      # BIND_PIRQ__*
    "port" / evtchn_port_t,             # OUT
)

# event_channel.h: struct evtchn_bind_ipi.
evtchn_bind_ipi = XenStruct(
    "evtchn_bind_ipi", "event_channel.h",
    "vcpu" / u32,
    "port" / evtchn_port_t,             # OUT
)

# event_channel.h: struct evtchn_close / evtchn_send / evtchn_unmask {evtchn_port_t port;}
evtchn_close = XenStruct("evtchn_close", "event_channel.h", "port" / evtchn_port_t)
evtchn_send = XenStruct("evtchn_send", "event_channel.h", "port" / evtchn_port_t)
evtchn_unmask = XenStruct("evtchn_unmask", "event_channel.h", "port" / evtchn_port_t)

# event_channel.h: struct evtchn_status; union u listed largest member first.
evtchn_status = XenStruct(
    "evtchn_status", "event_channel.h",
    "dom" / domid_t,
    "port" / evtchn_port_t,
    "status" / u32,                     # OUT: EVTCHNSTAT_*
    "vcpu" / u32,                       # OUT: VCPU to which this channel is bound
    "u" / union(
        "evtchn_status.u",
        "interdomain" / XenStruct("evtchn_status.interdomain", "event_channel.h",
                                  "dom" / domid_t, "port" / evtchn_port_t),
        "unbound" / XenStruct("evtchn_status.unbound", "event_channel.h", "dom" / domid_t),
        "pirq" / u32,
        "virq" / u32,
    ),
)

# event_channel.h: struct evtchn_bind_vcpu.
evtchn_bind_vcpu = XenStruct(
    "evtchn_bind_vcpu", "event_channel.h",
    "port" / evtchn_port_t,
    "vcpu" / u32,
)

# event_channel.h: struct evtchn_reset {domid_t dom;}
evtchn_reset = XenStruct("evtchn_reset", "event_channel.h", "dom" / domid_t)

# event_channel.h: struct evtchn_init_control (FIFO).
evtchn_init_control = XenStruct(
    "evtchn_init_control", "event_channel.h",
    "control_gfn" / u64,
    "offset" / u32,
    "vcpu" / u32,
    "link_bits" / u8,                   # OUT
    "_pad" / reserved(raw(7)),
)

# event_channel.h: struct evtchn_expand_array {uint64_t array_gfn;}
evtchn_expand_array = XenStruct("evtchn_expand_array", "event_channel.h", "array_gfn" / u64)

# event_channel.h: struct evtchn_set_priority.
evtchn_set_priority = XenStruct(
    "evtchn_set_priority", "event_channel.h",
    "port" / evtchn_port_t,
    "priority" / u32,
)

# event_channel.h: struct evtchn_op, the argument of the legacy
# HYPERVISOR_event_channel_op_compat(struct evtchn_op *op) (hypercall 16).
# Union listed largest member (status) first.
evtchn_op = XenStruct(
    "evtchn_op", "event_channel.h",
    "cmd" / u32,                        # enum event_channel_op
    "u" / union(
        "evtchn_op.u",
        "status" / evtchn_status,
        "alloc_unbound" / evtchn_alloc_unbound,
        "bind_interdomain" / evtchn_bind_interdomain,
        "bind_virq" / evtchn_bind_virq,
        "bind_pirq" / evtchn_bind_pirq,
        "bind_ipi" / evtchn_bind_ipi,
        "close" / evtchn_close,
        "send" / evtchn_send,
        "bind_vcpu" / evtchn_bind_vcpu,
        "unmask" / evtchn_unmask,
    ),
)

#: EVTCHNOP -> its argument struct (for decoding event_channel_op and evtchn_op.u).
EVTCHNOP_ARG = {
    EVTCHNOP.bind_interdomain: evtchn_bind_interdomain,
    EVTCHNOP.bind_virq: evtchn_bind_virq,
    EVTCHNOP.bind_pirq: evtchn_bind_pirq,
    EVTCHNOP.close: evtchn_close,
    EVTCHNOP.send: evtchn_send,
    EVTCHNOP.status: evtchn_status,
    EVTCHNOP.alloc_unbound: evtchn_alloc_unbound,
    EVTCHNOP.bind_ipi: evtchn_bind_ipi,
    EVTCHNOP.bind_vcpu: evtchn_bind_vcpu,
    EVTCHNOP.unmask: evtchn_unmask,
    EVTCHNOP.reset: evtchn_reset,
    EVTCHNOP.init_control: evtchn_init_control,
    EVTCHNOP.expand_array: evtchn_expand_array,
    EVTCHNOP.set_priority: evtchn_set_priority,
}

# event_channel.h: struct evtchn_fifo_control_block.
evtchn_fifo_control_block = XenStruct(
    "evtchn_fifo_control_block", "event_channel.h",
    "ready" / u32,
    "_rsvd" / reserved(u32),
    "head" / array(u32, EVTCHN_FIFO_MAX_QUEUES),
)

globals().update(c_names(EVTCHNOP, "EVTCHNOP_"))
globals().update(c_names(EVTCHNSTAT, "EVTCHNSTAT_"))

__all__ = exports(globals())
