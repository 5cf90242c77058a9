"""The PV console backend: the VMM as xenconsoled for the guest's console ring.

On Xen the toolstack puts a ``struct xencons_interface`` page (public/io/console.h)
in the guest's special-page region, allocates an event channel whose other end
xenconsoled binds, and tells the guest both through HVM_PARAM_CONSOLE_PFN and
HVM_PARAM_CONSOLE_EVTCHN.  Linux's hvc_xen (``console=hvc0``) and most Xen test
kernels print through it.  Here the page is a VMM-backed page in the reserved
special region (``xen/special_pages.py``) and the channel's remote end is the VMM
(``EventChannels.bind_backend``).

The ring protocol (io/console.h; xenconsoled's buffer_append / handle_tty_read):

* ``out``: the guest writes bytes at ``out_prod``, then advances it; the backend
  reads ``out_cons..out_prod``, advances ``out_cons`` and notifies.  A ring whose
  indices claim more than its size is corrupt: xenconsoled ignores it (the guest
  is stuck until it fixes them); so do we.
* ``in``: the backend writes terminal input at ``in_prod`` while there is room
  (``in_prod - in_cons < sizeof(in)``), advances ``in_prod`` and notifies.  Input
  that doesn't fit waits in a bounded backlog and goes in when the guest consumes
  and notifies (a guest that never reads loses the oldest bytes beyond the bound,
  as a terminal's line discipline would).

Indices are free-running u32s: every index the guest wrote is read once per pass
and checked before use.  ``console.lock`` (``xen.pvconsole`` in the lock order) is
a leaf but for the output sink's own lock: the guest is notified after it is released.
"""

from __future__ import annotations

from typing import Callable

from vmm.locks import ordered_lock
from vmm.memory import GuestMemoryError
from xen import abi
from xen.trace_events import TP_XEN_PVCONSOLE_IN as TP_IN, TP_XEN_PVCONSOLE_OUT as TP_OUT

_OFF = {f: abi.offset_of(abi.xencons_interface, f)
        for f in ("in", "out", "in_cons", "in_prod", "out_cons", "out_prod", "connection")}
U32 = 0xFFFF_FFFF
BACKLOG_MAX = 64 * 1024          # terminal input waiting for room in the ring


class PvConsole:
    def __init__(self, memory, gpa: int, output: Callable[[bytes], None]):
        self.mem = memory
        self.gpa = gpa
        self.output = output
        self.port: int | None = None
        self._notify_guest: Callable[[int], None] | None = None
        self._backlog = bytearray()
        self.lock = ordered_lock("xen.pvconsole")
        self.stats = {"out": 0, "in": 0, "corrupt": 0, "dropped_in": 0}
        memory.write(gpa + _OFF["connection"], bytes([abi.XENCONSOLE_CONNECTED]))

    def connect(self, port: int, notify_guest: Callable[[int], None]) -> None:
        """The event channel's guest end is ``port``; ``notify_guest(port)`` kicks it."""
        self.port = port
        self._notify_guest = notify_guest

    # ------------------------------------------------------------ guest -> VMM
    def guest_notified(self) -> None:
        """The guest sent on its console port: take its output, push waiting input."""
        with self.lock:
            out, out_note = self._drain_out()
            if out:
                self.output(out)         # under the lock: two vCPUs' notifications keep the ring's order
            moved = self._push_in()
        if TP_OUT.enabled and (out or out_note):
            TP_OUT.emit(n=len(out), result=out_note)
        if out or moved:
            self._kick()

    def _drain_out(self) -> tuple[bytes, str]:
        try:
            cons = self._u32("out_cons")
            prod = self._u32("out_prod")
        except GuestMemoryError as e:
            return b"", f"lost ({e})"
        size = (prod - cons) & U32
        if size == 0:
            return b"", ""
        if size > abi.XENCONS_OUT_SIZE:
            self.stats["corrupt"] += 1
            return b"", f"corrupt ring: prod={prod:#x} cons={cons:#x} (ignored, as xenconsoled)"
        data = self._ring_read("out", abi.XENCONS_OUT_SIZE, cons, size)
        self._put_u32("out_cons", prod)           # after the data was read (x86 keeps the order)
        self.stats["out"] += size
        return data, ""

    # ------------------------------------------------------------ VMM -> guest
    def feed(self, data: bytes) -> None:
        """Terminal input for the guest."""
        with self.lock:
            self._backlog += data
            excess = len(self._backlog) - BACKLOG_MAX
            if excess > 0:
                del self._backlog[:excess]
                self.stats["dropped_in"] += excess
            moved = self._push_in()
        if moved:
            self._kick()

    def _push_in(self) -> int:
        if not self._backlog:
            return 0
        try:
            cons = self._u32("in_cons")
            prod = self._u32("in_prod")
        except GuestMemoryError:
            return 0
        used = (prod - cons) & U32
        if used > abi.XENCONS_IN_SIZE:
            self.stats["corrupt"] += 1
            return 0                                # a guest's garbage: wait for sane indices
        n = min(abi.XENCONS_IN_SIZE - used, len(self._backlog))
        if n == 0:
            return 0
        chunk = bytes(self._backlog[:n])
        self._ring_write("in", abi.XENCONS_IN_SIZE, prod, chunk)
        self._put_u32("in_prod", (prod + n) & U32)  # after the data (x86 keeps the order)
        del self._backlog[:n]
        self.stats["in"] += n
        if TP_IN.enabled:
            TP_IN.emit(n=n, queued=len(self._backlog))
        return n

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Input typed but not yet in the ring (the ring itself is guest memory)."""
        with self.lock:
            return {"backlog": bytes(self._backlog)}

    def restore(self, state: dict) -> None:
        backlog = state["backlog"]
        if not isinstance(backlog, bytes) or len(backlog) > BACKLOG_MAX:
            raise ValueError("PV console backlog")
        with self.lock:
            self._backlog = bytearray(backlog)

    def _kick(self) -> None:
        if self._notify_guest is not None and self.port is not None:
            self._notify_guest(self.port)

    # ------------------------------------------------------------ ring access
    def _u32(self, field: str) -> int:
        return int.from_bytes(self.mem.read(self.gpa + _OFF[field], 4), "little")

    def _put_u32(self, field: str, value: int) -> None:
        self.mem.write(self.gpa + _OFF[field], value.to_bytes(4, "little"))

    def _ring_read(self, ring: str, size: int, start: int, n: int) -> bytes:
        first = start & (size - 1)
        base = self.gpa + _OFF[ring]
        head = min(n, size - first)
        return self.mem.read(base + first, head) + self.mem.read(base, n - head)

    def _ring_write(self, ring: str, size: int, start: int, data: bytes) -> None:
        first = start & (size - 1)
        base = self.gpa + _OFF[ring]
        head = min(len(data), size - first)
        self.mem.write(base + first, data[:head])
        if head < len(data):
            self.mem.write(base, data[head:])
