"""Cached port reads: a guest's IN from a published port costs no Python.

Polling a status register is the other half of a console byte (after the write
that coalescing takes off the exit path, vmm/coalesced.py): Linux reads the
16550's LSR before every byte it prints.  A device whose register can be read
without side effect publishes its current value here (``CachedRead.set``; None
when a read would have one, e.g. LSR with an overrun flagged, which the read
clears), and the vCPU loop runs the guest through ``vmm_kvm_run_cached``
(kvm_bindings), which answers a 1-byte IN from such a port in C and resumes the
guest: the exit still happens in KVM, but returns to Python only for other exits,
or when the coalesced ring is half full (its writes are replayed then, and at the
next exit Python sees).

The contract a publishing device keeps: the value is its register's value now and
stays so until the device changes it under its own lock; it doesn't depend on any
write still queued in the coalesced ring (the 16550's LSR doesn't depend on THR
writes while they are coalesced: no loopback).  The answer is read without a lock,
so a change racing a read is the read happening a moment earlier.

Not used while `vcpu.exit.io` is traced (every exit then goes through Python);
``--stats`` counts the answered reads as the exits they are (``io:<device>``).
"""

from __future__ import annotations

from collections import Counter

from kvm_bindings import ffi

SLOTS = 8                                   # struct vmm_port_cache's arrays


class CachedRead:
    def __init__(self, table, slot: int):
        self._table, self._slot = table, slot

    def set(self, value: int | None) -> None:
        """The byte a read of the port gives now, or None: Python answers (side effects)."""
        self._table.value[self._slot] = -1 if value is None else value & 0xFF


class PortReadCache:
    def __init__(self):
        self.table = ffi.new("struct vmm_port_cache *")
        self.names: list[str] = []

    def entry(self, port: int, name: str) -> CachedRead | None:
        """A slot for ``port`` (reads of it answered once the device sets a value), or
        None when the table is full (the port exits to Python as before)."""
        i = self.table.n
        if i >= SLOTS:
            return None
        self.table.port[i] = port
        self.table.value[i] = -1
        self.names.append(name)
        self.table.n = i + 1
        return CachedRead(self.table, i)

    def counters(self):
        """A vCPU's array of answered reads, one per slot."""
        return ffi.new("__u64[]", SLOTS)

    def stats(self, counters) -> Counter[str]:
        out: Counter[str] = Counter()
        for i, name in enumerate(self.names):
            n = int(counters[i])
            if n:
                out["io:" + name] += n
                out["io"] += n
                out["exits"] += n
        return out
