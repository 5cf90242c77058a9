"""The event-channel port ABI: how a port's pending/mask state lives in guest memory.

Xen's ``struct evtchn_port_ops`` (xen/include/xen/event.h): the port table
(xen/evtchn.py EventChannels) is the same for every ABI; what "pending" and
"masked" mean, and how an event raises the upcall, is the ABI's.  Two exist:
2-level (xen/evtchn_2l.py, bitmaps in shared_info) and FIFO (xen/evtchn_fifo.py,
event words in guest pages, installed by EVTCHNOP_init_control through
``EventChannels.switch_abi``).

Every method runs under the port lock (``EventChannels.lock``).  Raising the
upcall goes through ``SharedInfo.mark_events_pending(vcpu)`` (vcpu_info's
evtchn_upcall_pending, for both ABIs).  ``ch`` is the port's
``xen.evtchn.Channel``: its notify vCPU, and FIFO's priority/queue fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from xen.evtchn import Channel


class PortAbi(Protocol):
    name: str               # "2-level" | "FIFO" (as Linux's dmesg names them; trace words)

    def max_ports(self) -> int:
        """Ports this ABI can address now (2-level: 4096 or 1024 by the latched width;
        FIFO: 2^17, Xen's max_evtchns — a port beyond the event array may be bound, and
        Linux binds first, then expands the array to cover it).  Ports are allocated below
        it and below the port table's size."""

    def set_pending(self, port: int, ch: "Channel") -> str:
        """Xen's evtchn_port_set_pending.  Returns a trace word ("upcall", "masked",
        "already pending", ...)."""

    def clear_pending(self, port: int, ch: "Channel") -> None:
        """The port is closed (or its pending state moves elsewhere)."""

    def unmask(self, port: int, ch: "Channel") -> bool:
        """EVTCHNOP_unmask; True if an upcall was raised."""

    def is_pending(self, port: int) -> bool:
        """SCHEDOP_poll's test (masked or not)."""

    def is_masked(self, port: int) -> bool: ...

    def is_busy(self, port: int) -> bool:
        """Xen's evtchn_is_busy: a free port the guest still holds (FIFO: LINKED on a queue)
        is not allocated again.  2-level: never."""

    def set_priority(self, port: int, ch: "Channel", priority: int) -> None:
        """EVTCHNOP_set_priority; 2-level raises XenError(ENOSYS)."""

    def bound(self, port: int, ch: "Channel") -> None:
        """Xen's evtchn_port_init: a port was bound (FIFO prepares its event word)."""
