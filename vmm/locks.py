"""The lock order, declared once, and a checker for it.

ARCHITECTURE.md ("Lock order") explains each place; this table is the order
itself, outermost first.  A thread holding a lock may only take locks that
come *later* here.  Every long-lived lock of vmm/, devices/ and xen/ is made
with :func:`ordered_lock` (or ``ordered_rlock``/``ordered_condition``) under one
of these names.

With ``VMM_LOCK_CHECK=1`` in the environment (the test suite sets it) each such
lock records, per thread, what is held, and taking a lock that is not below
everything held is reported as an internal error (vmm/errors.py) -- which
fails the run -- naming both locks.  Without it the factories return plain
``threading`` locks: no cost.
"""

from __future__ import annotations

import os
import threading

from vmm.errors import internal_error

LOCK_ORDER: tuple[str, ...] = (
    "vm.control",       # Machine._control_lock: the control API's pause/resume/snapshot, one at a time; held
                        # while a snapshot pauses the vCPUs and reads every part's state (their locks are below)
    "vm.coalesced",     # CoalescedWrites._lock (vmm/coalesced.py): replaying KVM's coalesced ring; the
                        # port handlers run under it, as in an exit, so it comes before all they take
    "vm.exit",          # Vm._exit_lock: the exit code only; nothing is called under it
    "xen.xenstore",     # XenstoreDaemon.lock: the store, connections, rings; taken with no xen lock held,
                        # calls nothing of xen's (it returns "notify" and the caller kicks the port)
    "xen.domain",       # XenDomain.lock: HVM params, the console line, shared_info moves
    "xen.kvm_timer",    # KvmTimers._lock (xen/kvm_timer.py): which vCPU timers KVM runs; reads the
                        # port table under the port lock, moves a deadline under the timer lock
    "xen.ports",        # EventChannels.lock: the port table; set_pending/unmask decisions
    "xen.fifo",         # FifoAbi._lock: FIFO queues' tails and last-queue records (upcall raised after it)
    "xen.shared_info",  # SharedInfo.lock: placement only (bits are atomic RMWs)
    "xen.gnttab",       # GrantTable.lock
    "xen.pages",        # PagePlacement._lock (xen/placement.py): placed pages
    "vm.overlay",       # Vm._overlay_lock: overlay memory slots
    "xen.upcall",       # Upcall._lock: the callback line's level
    "xen.kvm_accel",    # KvmXenAccel._lock: KVM's long-mode latch; one ioctl under it
    "pci.config",       # PciBus._config_lock: config cycles, BAR (re)mapping (re-entrant)
    "xen.pvconsole",    # PvConsole.lock: ring indices and the input backlog; a leaf (notify after)
    "device",           # a device's own lock (Serial, PCI devices, the Xen platform device)
    "pci.msi",          # an MSI/MSI-X capability's state (devices/msi.py)
    "pci.intx",         # PciBus._intx_lock: the OR of INTx pins per GSI
    "irqchip.line",     # IrqChip._line_lock: a GSI's sources ORed and diverted-or-driven
    "irqchip",          # IrqChip._lock: routes, EOI listeners, MSI vectors and their irqfds
    "xen.pirq",         # PirqTable.lock: the PIRQ table, consulted by the diverter (a leaf)
    "ioapic",           # IoApic._lock (reached through the line lock)
    "pic",              # Pic._lock (devices/pic.py): reached through the line lock, or from a port or the
                        # ExtINT injector with nothing held; takes nothing (INT and EOIs are told after it)
    "xen.timers",       # Timers._cv: released before a VIRQ is delivered
    "xen.events",       # XenDomain.events: a leaf Condition, notify only
    "vm.coalesced_zone",  # Zone._lock: one (un)register ioctl, on the coalesced-flush thread (a leaf)
    "virtio.hold",      # ServiceHold._cv (devices/virtio/hold.py): a snapshot's hold of a virtio device thread; a leaf
                        # (the thread takes it with nothing held, between its service steps)
    "vcpu.state",       # Vcpu._cond: a vCPU's state and control flags; a leaf (calls run outside it)
)
RANK = {name: i for i, name in enumerate(LOCK_ORDER)}

CHECKING = os.environ.get("VMM_LOCK_CHECK") == "1"

_held = threading.local()
_reported: set[tuple[str, str]] = set()


def _stack() -> list:
    s = getattr(_held, "stack", None)
    if s is None:
        s = _held.stack = []
    return s


class CheckedLock:
    """A lock that checks the order of acquisition against LOCK_ORDER."""

    def __init__(self, name: str, reentrant: bool = False):
        if name not in RANK:
            raise ValueError(f"lock {name!r} has no place in vmm.locks.LOCK_ORDER")
        self.name = name
        self.rank = RANK[name]
        self._lock = threading.RLock() if reentrant else threading.Lock()
        self._reentrant = reentrant

    def _check(self, stack: list) -> None:
        if self._reentrant and any(h is self for h in stack):
            return
        worst = max(stack, key=lambda h: h.rank, default=None)
        if worst is not None and worst.rank >= self.rank:
            key = (worst.name, self.name)
            if key not in _reported:
                _reported.add(key)
                internal_error("lock order", detail=f"took {self.name!r} while holding {worst.name!r} "
                                                    f"(held: {[h.name for h in stack]}); see vmm/locks.py")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        stack = _stack()
        self._check(stack)
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            stack.append(self)
        return ok

    def release(self) -> None:
        stack = _stack()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                del stack[i]
                break
        self._lock.release()

    def _is_owned(self) -> bool:          # threading.Condition uses it
        return any(h is self for h in _stack())

    def locked(self) -> bool:
        return self._lock.locked() if hasattr(self._lock, "locked") else self._is_owned()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<CheckedLock {self.name}>"


def ordered_lock(name: str):
    """A mutex with its place ``name`` in LOCK_ORDER."""
    return CheckedLock(name) if CHECKING else _plain(name, threading.Lock)


def ordered_rlock(name: str):
    return CheckedLock(name, reentrant=True) if CHECKING else _plain(name, threading.RLock)


def ordered_condition(name: str) -> threading.Condition:
    return threading.Condition(ordered_lock(name))


def _plain(name: str, factory):
    if name not in RANK:
        raise ValueError(f"lock {name!r} has no place in vmm.locks.LOCK_ORDER")
    return factory()


__all__ = ["LOCK_ORDER", "RANK", "CHECKING", "CheckedLock", "ordered_lock", "ordered_rlock", "ordered_condition"]
