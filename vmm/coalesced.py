"""Coalesced port writes: a guest's OUT to a registered port costs no exit.

KVM (KVM_REGISTER_COALESCED_MMIO with ``pio``; Documentation/virt/kvm/api.rst)
appends such a write to a ring page shared by the VM's vCPUs and resumes the
guest at once; the VMM replays the writes later, in order, through the port bus.
That is only correct where nothing the guest can observe depends on *when* the
write is handled, so a device turns its zone on and off as its state says
(``Zone.want``): the 16550's THR, written once per console byte, is coalesced
while THRE interrupts and loopback are off (devices/serial.py), and every LSR
read the guest polls in between is an exit that replays the ring first.

Replaying (``drain``) happens, in ring order, under ``vm.coalesced``:
* at the start of every exit a vCPU handles (vmm/vcpu.py), so an exit never
  sees device state older than a write the guest made before it;
* by the ``coalesced-flush`` thread every 50 ms, so the output of a guest that
  writes and then halts in the kernel (no exit) still shows;
* before a snapshot's save, and when the VM ends.
A full ring is KVM's to handle: the write then exits as usual, after the ring is
replayed.  Tracing: ``vcpu.coalesced`` per replayed write, ``vm.coalesced_zone``
per zone change; ``--stats`` counts ``coalesced`` and ``coalesced:<device>``.
"""

from __future__ import annotations

import struct
import threading
from collections import Counter

from kvm_bindings import KvmError, consts, ffi
from vmm.locks import ordered_lock
from vmm.trace_events import TP_VCPU_COALESCED, TP_VM_COALESCED_ZONE

FLUSH_PERIOD_S = 0.05
# struct kvm_coalesced_mmio: phys_addr, len, pio, data[8] (read as one little-endian u64)
ENTRY = struct.Struct("<QIIQ")
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF}


class Zone:
    """One port range a device may coalesce.  ``want(on)`` says what the device wants now;
    the ``coalesced-flush`` thread registers or unregisters the zone with KVM, then
    replays the ring.  Never the device's (vCPU) thread: KVM's (un)register waits for an
    SRCU grace period, which a vCPU blocked in KVM's own SCHEDOP_poll holds off, and that
    vCPU may be spinning in the guest for a lock the calling vCPU holds (a 2-vCPU Xen
    Linux stopped for good at its reboot that way).  Until the change is made, writes go
    on as before: a THR write coalesced after the guest enabled THRE interrupts is
    replayed (and its interrupt raised) when the zone comes off, as a real UART raises
    THRE only once the byte has left."""

    def __init__(self, ring: "CoalescedWrites", port: int, size: int, name: str):
        self.ring, self.port, self.size, self.name = ring, port, size, name
        self.on = False                  # registered with KVM (changed by the flush thread only)
        self.wanted = False
        self._lock = ordered_lock("vm.coalesced_zone")

    @property
    def write_many(self):
        return self.ring.batched.get(self.port)

    @write_many.setter
    def write_many(self, fn) -> None:
        """Optional: the device's handler for a run of 1-byte writes to ``port`` replayed
        together (one call instead of one per write); else its bus handler, per write."""
        self.ring.batched[self.port] = fn

    def want(self, on: bool) -> None:
        """Any thread, any lock held: only a flag and a wake-up."""
        if on != self.wanted:
            self.wanted = on
            self.ring.wake()

    def apply(self) -> bool:
        """Make KVM's registration what the device wants (the flush thread, or before the
        vCPUs run).  True if it changed."""
        with self._lock:
            on = self.wanted
            if on == self.on or self.ring.closed:
                return False
            try:
                self.ring.vm_fd.coalesced_zone(self.port, self.size, pio=True, register=on)
            except KvmError:
                return False                      # stays as it was: writes exit, or are replayed
            self.on = on
        if TP_VM_COALESCED_ZONE.enabled:
            TP_VM_COALESCED_ZONE.emit(what=self.name, port=self.port, on=on)
        return True


class CoalescedWrites:
    """The VM's ring and its replay.  ``ring`` is None on a KVM without coalesced PIO;
    then ``zone`` gives None and devices exit as before."""

    def __init__(self, vm_fd, kvm, vcpu_fd, pio_handlers: dict):
        self.vm_fd = vm_fd
        self.handlers = pio_handlers                 # PioBus.handlers: port -> (read, write, offset, name)
        self.ring = None
        self.entries = 0
        self.indices = None          # the ring's first/last as a u32 memoryview: [0] != [1] = writes queued
        self._page = None
        self.closed = False
        self.stats: Counter[str] = Counter()      # device name -> writes replayed
        self._lock = ordered_lock("vm.coalesced")
        self._zones: list[Zone] = []
        self.batched: dict = {}                  # port -> a zone's write_many
        self._flusher: threading.Thread | None = None
        self._mapping = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        page = kvm.check_extension(consts.KVM_CAP_COALESCED_MMIO)
        if page and kvm.check_extension(consts.KVM_CAP_COALESCED_PIO):
            self.ring, self.entries = vcpu_fd.coalesced_ring(page)
            # Plain memoryviews of the page: cheaper per access than the cffi struct's fields.
            self._page = memoryview(ffi.buffer(self.ring, ffi.sizeof("struct kvm_coalesced_mmio_ring")
                                               + self.entries * ENTRY.size))
            self.indices = self._page[:8].cast("I")
            # Our own reference to the vCPU's mapping (a buffer export): closing that vCPU
            # can't unmap the ring under a thread still replaying it.
            self._mapping = vcpu_fd.run_buffer

    def zone(self, port: int, size: int, name: str) -> Zone | None:
        if self.ring is None:
            return None
        z = Zone(self, port, size, name)
        self._zones.append(z)
        return z



    def pending(self) -> bool:
        idx = self.indices
        return idx is not None and idx[0] != idx[1]

    def drain(self) -> int:
        """Replay every queued write, oldest first; the number replayed.  Each entry is
        consumed (``first`` moved) only after its write was handled, so a vCPU that saw
        the ring non-empty waits on the lock until the writes before its exit are in."""
        idx = self.indices
        if idx is None or idx[0] == idx[1]:
            return 0
        n = 0
        stats = self.stats
        with self._lock:
            entries, handlers, page, unpack = self.entries, self.handlers, self._page, ENTRY.unpack_from
            batched = self.batched
            first, last = idx[0], idx[1]
            while first != last:
                port, size, _pio, data = unpack(page, 8 + first * ENTRY.size)
                many = batched.get(port) if size == 1 else None
                if many is not None:
                    # A run of 1-byte writes to this port, up to the last entry seen: one call.
                    run, nxt = [data & 0xFF], (first + 1) % entries
                    while nxt != last:
                        p2, s2, _pio, d2 = unpack(page, 8 + nxt * ENTRY.size)
                        if p2 != port or s2 != 1:
                            break
                        run.append(d2 & 0xFF)
                        nxt = (nxt + 1) % entries
                    many(run)
                    dev = handlers[port][3] if port in handlers else "unassigned"
                    if TP_VCPU_COALESCED.enabled:
                        for v in run:
                            TP_VCPU_COALESCED.emit(port=port, size=1, value=v, dev=dev)
                    stats[dev] += len(run)
                    n += len(run)
                    first = nxt
                    idx[0] = first                 # consumed once handled (see the docstring)
                    if first == last:
                        last = idx[1]
                    continue
                mask = _MASK.get(size)
                h = handlers.get(port)
                if h is not None and mask is not None:
                    h[1](h[2], size, data & mask)
                dev = h[3] if h is not None else "unassigned"
                stats[dev] += 1
                if TP_VCPU_COALESCED.enabled:
                    TP_VCPU_COALESCED.emit(port=port, size=size, value=data & (mask or 0), dev=dev)
                first = (first + 1) % entries
                idx[0] = first
                n += 1
                if first == last:
                    last = idx[1]
        return n

    def collect_stats(self) -> Counter[str]:
        """For --stats: ``coalesced`` and ``coalesced:<device>`` (writes that cost no exit)."""
        out: Counter[str] = Counter({"coalesced:" + dev: n for dev, n in self.stats.items()})
        if out:
            out["coalesced"] = sum(self.stats.values())
        return out

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        """Zones as their devices want them (no vCPU runs yet), then the flush thread:
        zone changes, and the safety net of a replay every FLUSH_PERIOD_S."""
        if self.ring is None or not self._zones:
            return
        for z in self._zones:
            z.apply()
        self._flusher = threading.Thread(target=self._flush_loop, name="coalesced-flush", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        from vmm.errors import internal_error
        while not self._stop.is_set():
            self._wake.wait(FLUSH_PERIOD_S)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                for z in self._zones:
                    z.apply()
                self.drain()                          # (after a zone came off: the writes it took)
            except Exception as e:                   # noqa: BLE001  a device's bug: reported, not fatal here
                internal_error("coalesced-flush", e)

    def close(self) -> None:
        """The VM ended: what the guest wrote last is replayed (its console output)."""
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(1.0)
        self.drain()
        self.closed = True

    def __repr__(self) -> str:
        return f"<CoalescedWrites {'on' if self.ring is not None else 'unsupported'} zones={len(self._zones)}>"
