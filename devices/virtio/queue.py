"""Split virtqueues, the device's side (virtio 1.2 §2.7; Linux include/uapi/linux/virtio_ring.h).

Layout in guest memory, for a queue of ``size`` entries (a power of 2, at most 32768)::

    descriptor table  16 * size bytes, 16-aligned   le64 addr, le32 len, le16 flags, le16 next
    driver area       6 + 2 * size, 2-aligned       le16 flags, le16 idx, le16 ring[size], le16 used_event
    device area       6 + 8 * size, 4-aligned       le16 flags, le16 idx, {le32 id, le32 len}[size],
                                                    le16 avail_event

Everything the driver gives is checked, and a breach raises :class:`VirtqueueError`
(the transport then marks the device broken: DEVICE_NEEDS_RESET, §2.1.1):

* at enable (``Virtqueue.enable``): the size (a power of 2, 1..the device's maximum),
  the alignments of §2.7 and each ring lying entirely in guest RAM;
* per chain (``pop``): the avail index never more than ``size`` ahead of the
  device's (§2.7.6: the driver can't offer more than the ring holds), each head and
  ``next`` inside its table, a chain no longer than its table (a longer one loops),
  an indirect descriptor only with VIRTIO_F_INDIRECT_DESC, its table a non-empty
  multiple of 16 bytes in RAM, never nested (§2.7.5.3.1: "MUST NOT set the
  VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor") nor with NEXT set,
  device-readable buffers before device-writable ones (§2.7.4.2), every buffer in
  RAM, and the chain's total length below 4 GiB (a used length is 32-bit).

The rings' views are made once, at enable: guest RAM never moves while the VM runs.
Indices are read and written as single 16-bit loads and stores (a memoryview cast to
'H' copies the item with one native access), so a concurrent driver update is never
seen half-done.  x86 keeps loads ordered and stores ordered; the one store->load
ordering the protocol needs (publish the used index, then read ``used_event`` or the
avail flags; publish ``avail_event``, then re-read the avail index: §2.7.10, Linux's
virtio_mb) is a locked no-op read-modify-write on the used ring's first word.

Not thread-safe: the transport serialises a queue's users (its device lock).
"""

from __future__ import annotations

import struct

from devices.trace_events import (
    TP_VIRTIO_QUEUE_POP as TP_POP,
    TP_VIRTIO_QUEUE_PUSH as TP_PUSH,
)
from devices.virtio.abi import (
    VIRTIO_MSI_NO_VECTOR,
    VIRTQUEUE_MAX_SIZE,
    VRING_AVAIL_ALIGN_SIZE,
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_ALIGN_SIZE,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VRING_DESC_SIZE,
    VRING_USED_ALIGN_SIZE,
    VRING_USED_ELEM_SIZE,
)
from vmm.memory import GuestMemory

_DESC = struct.Struct("<QIHH")
MAX_CHAIN_BYTES = (1 << 32) - 1          # a used element's len is le32


class VirtqueueError(Exception):
    """The driver broke the virtqueue's rules: the device must be marked broken."""


def desc_table_size(size: int) -> int:
    return VRING_DESC_SIZE * size


def avail_ring_size(size: int) -> int:
    return 6 + 2 * size


def used_ring_size(size: int) -> int:
    return 6 + VRING_USED_ELEM_SIZE * size


def slice_views(views: list[memoryview], start: int, length: int) -> list[memoryview]:
    """The byte range [start, start + length) of the concatenation of ``views``."""
    out = []
    for v in views:
        n = len(v)
        if start >= n:
            start -= n
            continue
        take = min(n - start, length)
        if take > 0:
            out.append(v[start:start + take])
        length -= take
        start = 0
        if length <= 0:
            break
    return out


class Chain:
    """One descriptor chain popped from the avail ring: the device-readable buffers
    (``out``) and the device-writable ones (``in_``), as views of guest RAM."""
    __slots__ = ("head", "out", "in_", "ndesc", "out_len", "in_len")

    def __init__(self, head: int, out: list[memoryview], in_: list[memoryview], ndesc: int):
        self.head = head
        self.out = out
        self.in_ = in_
        self.ndesc = ndesc
        self.out_len = sum(len(v) for v in out)
        self.in_len = sum(len(v) for v in in_)

    def read(self, start: int, length: int) -> bytes:
        """Bytes [start, start + length) of the readable part (short if it ends first)."""
        return b"".join(bytes(v) for v in slice_views(self.out, start, length))

    def write(self, start: int, data: bytes) -> int:
        """Copy ``data`` into the writable part from ``start``; returns the bytes written."""
        done = 0
        for v in slice_views(self.in_, start, len(data)):
            n = len(v)
            v[:] = data[done:done + n]
            done += n
        return done

    def __repr__(self) -> str:
        return f"<Chain head={self.head} out={self.out_len} in={self.in_len} ndesc={self.ndesc}>"


# What a snapshot saves of a queue (Virtqueue.save): integer fields with their largest value,
# then the flags.  ``indirect``/``event_idx`` are the features as the queue was enabled with them.
_SAVED_INTS = {"size": 0xFFFF, "desc": (1 << 64) - 1, "driver": (1 << 64) - 1, "device": (1 << 64) - 1,
               "msix_vector": 0xFFFF, "last_avail": 0xFFFF, "used_idx": 0xFFFF, "signalled_used": 0xFFFF}
_SAVED_BOOLS = ("enabled", "reset_pending", "signalled_valid", "indirect", "event_idx")


def check_ints(state: dict, limits: dict[str, int], what: str) -> None:
    """A snapshot's saved registers: each of ``limits`` an int in 0..its limit (ValueError
    naming ``what`` otherwise; KeyError if missing).  bool is not an int here."""
    for k, top in limits.items():
        v = state[k]
        if type(v) is not int or not 0 <= v <= top:
            raise ValueError(f"{what}: saved {k} {v!r} is not an integer in 0..{top:#x}")


class Virtqueue:
    """One split virtqueue as the device sees it.  ``owner`` names it in traces
    (e.g. ``00:03.0``).  The transport keeps the driver-written configuration
    (``size``, ``desc``, ``driver``, ``device``, ``msix_vector``) here too."""

    def __init__(self, memory: GuestMemory, index: int, max_size: int, owner: str = "-"):
        if not 1 <= max_size <= VIRTQUEUE_MAX_SIZE or max_size & (max_size - 1):
            raise ValueError(f"virtqueue size {max_size} is not a power of 2 in 1..{VIRTQUEUE_MAX_SIZE}")
        self.memory = memory
        self.index = index
        self.max_size = max_size
        self.owner = owner
        self.reset()

    def reset(self) -> None:
        """Back to the state after a device reset (§4.1.4.3: queue_size reads the maximum)."""
        self.size = self.max_size
        self.desc = self.driver = self.device = 0
        self.msix_vector = VIRTIO_MSI_NO_VECTOR
        self.enabled = False
        self.reset_pending = False         # queue_reset reads 1 (VIRTIO_F_RING_RESET) until re-enabled
        self.last_avail = 0                # the next avail ring entry the device will take
        self.used_idx = 0                  # the device's used index (what it last published)
        self.signalled_used = 0            # the used index at the last notification (event idx)
        self.signalled_valid = False
        self.indirect = False              # VIRTIO_F_INDIRECT_DESC negotiated
        self.event_idx = False             # VIRTIO_F_EVENT_IDX negotiated
        self._desc_view = None
        self._avail16 = None
        self._used16 = None
        self._used32 = None

    # ------------------------------------------------------------ setup
    def enable(self, indirect: bool, event_idx: bool) -> None:
        """The driver wrote queue_enable = 1: check its configuration and map the rings."""
        self._map(indirect, event_idx)
        # §2.7: both indices start at 0 (a device reset or queue reset brought us here).
        self.last_avail = self.used_idx = 0
        self._used16[0] = self._used16[1] = 0
        self.signalled_used, self.signalled_valid = self.used_idx, False
        self.enabled = True
        self.reset_pending = False

    def _map(self, indirect: bool, event_idx: bool) -> None:
        """Check the rings' configuration (VirtqueueError) and make their views."""
        size, mem = self.size, self.memory
        if not 1 <= size <= self.max_size or size & (size - 1):
            raise VirtqueueError(f"queue {self.index}: size {size} is not a power of 2 in 1..{self.max_size}")
        for what, addr, align, length in (("descriptor table", self.desc, VRING_DESC_ALIGN_SIZE,
                                           desc_table_size(size)),
                                          ("driver area", self.driver, VRING_AVAIL_ALIGN_SIZE,
                                           avail_ring_size(size)),
                                          ("device area", self.device, VRING_USED_ALIGN_SIZE,
                                           used_ring_size(size))):
            if addr % align:
                raise VirtqueueError(f"queue {self.index}: {what} at {addr:#x} is not {align}-aligned")
            if not mem.is_ram(addr, length):
                raise VirtqueueError(f"queue {self.index}: {what} {addr:#x}+{length:#x} is not in guest RAM")
        self._desc_view = mem.view(self.desc, desc_table_size(size))
        self._avail16 = mem.view(self.driver, avail_ring_size(size)).cast("H")
        self._used16 = mem.view(self.device, used_ring_size(size)).cast("H")
        self._used32 = mem.view(self.device, used_ring_size(size) - 2).cast("I")
        self.indirect, self.event_idx = indirect, event_idx

    def disable(self) -> None:
        """Forget the rings (device reset, queue reset, or the device broke)."""
        self._desc_view = self._avail16 = self._used16 = self._used32 = None
        self.enabled = False

    # ------------------------------------------------------------ snapshot (ARCHITECTURE.md "Snapshots")
    def save(self) -> dict:
        """Primary: what the driver configured and what the device keeps outside guest memory
        (its indices and event-idx bookkeeping).  The rings themselves are guest memory."""
        return {k: getattr(self, k) for k in (*_SAVED_INTS, *_SAVED_BOOLS)}

    def restore(self, state: dict) -> None:
        """Put back ``save()``'s values, each checked for its type and range (ValueError: a
        snapshot this device can't hold).  The rings are not mapped here: ``remap`` (derived,
        after memory is loaded) checks them as ``enable`` does."""
        check_ints(state, _SAVED_INTS, f"queue {self.index}")
        for k in _SAVED_BOOLS:
            if type(state[k]) is not bool:
                raise ValueError(f"queue {self.index}: saved {k} {state[k]!r} is not a boolean")
        self.disable()
        for k in (*_SAVED_INTS, *_SAVED_BOOLS):
            setattr(self, k, state[k])

    def remap(self) -> None:
        """A restored enabled queue: its rings checked and mapped again as ``enable`` does, the
        indices kept (VirtqueueError: the transport marks the device broken)."""
        if self.enabled:
            self._map(self.indirect, self.event_idx)

    # ------------------------------------------------------------ the avail ring
    def avail_idx(self) -> int:
        return self._avail16[1]

    def has_work(self) -> bool:
        return self.enabled and self._avail16[1] != self.last_avail

    def pop(self) -> Chain | None:
        """The next available chain, or None.  Raises VirtqueueError on a broken rule."""
        avail = self._avail16[1]
        pending = (avail - self.last_avail) & 0xFFFF
        if not pending:
            return None
        if pending > self.size:
            raise VirtqueueError(f"queue {self.index}: avail idx {avail} is {pending} entries ahead of "
                                 f"the device's {self.last_avail}, beyond the queue size {self.size}")
        head = self._avail16[2 + self.last_avail % self.size]
        chain = self._walk(head)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if TP_POP.enabled:
            TP_POP.emit(owner=self.owner, queue=self.index, head=head, ndesc=chain.ndesc, outlen=chain.out_len,
                        inlen=chain.in_len, last_avail=self.last_avail)
        return chain

    def _buffer(self, addr: int, length: int, what: str) -> memoryview:
        if not self.memory.is_ram(addr, length):
            raise VirtqueueError(f"queue {self.index}: {what} {addr:#x}+{length:#x} is not in guest RAM")
        return self.memory.view(addr, length)

    def _walk(self, head: int) -> Chain:
        if head >= self.size:
            raise VirtqueueError(f"queue {self.index}: avail ring head {head} is beyond the queue size {self.size}")
        out: list[memoryview] = []
        in_: list[memoryview] = []
        table, entries, where = self._desc_view, self.size, "descriptor table"
        i, seen, ndesc, total, nested = head, 0, 0, 0, False
        while True:
            seen += 1
            if seen > entries:
                raise VirtqueueError(f"queue {self.index}: chain from head {head} is longer than its "
                                     f"{where} ({entries} entries): a loop")
            addr, length, flags, nxt = _DESC.unpack_from(table, VRING_DESC_SIZE * i)
            ndesc += 1
            if flags & VRING_DESC_F_INDIRECT:
                if not self.indirect:
                    raise VirtqueueError(f"queue {self.index}: indirect descriptor without VIRTIO_F_INDIRECT_DESC")
                if nested:
                    raise VirtqueueError(f"queue {self.index}: indirect descriptor inside an indirect table")
                if flags & VRING_DESC_F_NEXT:
                    raise VirtqueueError(f"queue {self.index}: indirect descriptor with NEXT set")
                if not length or length % VRING_DESC_SIZE or length // VRING_DESC_SIZE > VIRTQUEUE_MAX_SIZE:
                    raise VirtqueueError(f"queue {self.index}: indirect table of {length} bytes")
                table = self._buffer(addr, length, "indirect table")
                entries, where, i, seen, nested = length // VRING_DESC_SIZE, "indirect table", 0, 0, True
                continue
            view = self._buffer(addr, length, "buffer")
            if flags & VRING_DESC_F_WRITE:
                in_.append(view)
            elif in_:
                raise VirtqueueError(f"queue {self.index}: device-readable buffer after a device-writable one")
            else:
                out.append(view)
            total += length
            if total > MAX_CHAIN_BYTES:
                raise VirtqueueError(f"queue {self.index}: chain from head {head} is {total} bytes long")
            if not flags & VRING_DESC_F_NEXT:
                return Chain(head, out, in_, ndesc)
            if nxt >= entries:
                raise VirtqueueError(f"queue {self.index}: next {nxt} is beyond its {where} ({entries} entries)")
            i = nxt

    # ------------------------------------------------------------ the used ring
    def push(self, chain: Chain, written: int) -> None:
        """Return ``chain`` to the driver with ``written`` bytes written (§2.7.8)."""
        written = min(written, chain.in_len)
        slot = self.used_idx % self.size
        self._used32[1 + 2 * slot] = chain.head
        self._used32[2 + 2 * slot] = written
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self._used16[1] = self.used_idx            # the element is visible first (x86 stores in order)
        if TP_PUSH.enabled:
            TP_PUSH.emit(owner=self.owner, queue=self.index, head=chain.head, len=written, used=self.used_idx)

    def _mb(self) -> None:
        """A full barrier (store -> load), as Linux's virtio_mb: a locked no-op RMW."""
        self.memory.atomic_or32(self.device, 0)

    def needs_notification(self) -> bool:
        """After pushing: does the driver want a used buffer notification now?
        (§2.7.10: VRING_AVAIL_F_NO_INTERRUPT, or with VIRTIO_F_EVENT_IDX, used_event.)"""
        self._mb()
        if not self.event_idx:
            return not self._avail16[0] & VRING_AVAIL_F_NO_INTERRUPT
        old, new = self.signalled_used, self.used_idx
        valid = self.signalled_valid
        self.signalled_used, self.signalled_valid = new, True
        if not valid:
            return True
        used_event = self._avail16[2 + self.size]
        # vring_need_event(): the driver asked to be told once the used index passes used_event.
        return (new - used_event - 1) & 0xFFFF < (new - old) & 0xFFFF

    def publish_avail_event(self, idx: int | None = None) -> bool:
        """With VIRTIO_F_EVENT_IDX: ask for a notification once the driver passes ``idx``
        (default: what the device has taken; a device waiting for more than what is there
        passes the avail index it saw).  True if the avail index moved past ``idx`` already
        (look again: no notify comes for it)."""
        if idx is None:
            idx = self.last_avail
        if not self.event_idx:
            return self.enabled and self._avail16[1] != idx
        self._used16[2 + 4 * self.size] = idx
        self._mb()
        return self._avail16[1] != idx

    def unpop(self, n: int = 1) -> None:
        """Give back the last ``n`` chains popped and not pushed (a device that can't use
        them yet, as QEMU's virtqueue_unpop): the next pop walks them again."""
        self.last_avail = (self.last_avail - n) & 0xFFFF

    def pending(self) -> int:
        """Chains the driver made available that the device hasn't taken (VirtqueueError
        if the avail index is more than the ring ahead)."""
        n = (self._avail16[1] - self.last_avail) & 0xFFFF
        if n > self.size:
            raise VirtqueueError(f"queue {self.index}: avail idx {self._avail16[1]} is {n} entries ahead of "
                                 f"the device's {self.last_avail}, beyond the queue size {self.size}")
        return n


__all__ = ["Virtqueue", "VirtqueueError", "Chain", "check_ints", "slice_views", "MAX_CHAIN_BYTES",
           "desc_table_size", "avail_ring_size", "used_ring_size"]
