"""The guest's xenstore ring page (docs/misc/xenstore-ring.txt, io/xs_wire.h).

struct xenstore_domain_interface: a request ring (guest -> us) and a response ring,
1024 bytes each, with free-running 32-bit producer/consumer indexes (byte ``i`` of a
stream at ``MASK_XENSTORE_IDX(i)``), then server_features, connection and error.

:meth:`XenstoreRing.process` does what xenstored's ``handle_input``/``handle_output``
do over domain.c's ``readchn``/``writechn``: take request bytes, reassemble messages
(a message may wrap around the ring end and arrive over several calls), answer each
complete one through the daemon, and put answers and watch events into the response
ring as space allows, keeping the rest for later.  It returns whether the guest should
be notified (xenstored signals the event channel after every read and write); the
caller holds the memory and kicks the event channel, with no xenstore lock held.

The guest is hostile: indexes are read once per step and checked (``prod - cons``
modulo 2^32 at most XENSTORE_RING_SIZE, domain.c ``check_indexes``); a bad pair, or a
header announcing more than XENSTORE_PAYLOAD_MAX, stops the connection as xenstored's
``ignore_connection`` does: the error field says why (XENSTORE_ERROR_RINGIDX /
_PROTO), watches and transactions are dropped, and nothing more is read or written
until the guest asks for a reconnection.  Replies waiting to be taken by the guest are
bounded by the ``outstanding`` quota (domain.c ``domain_can_read``: no new request is
read while as many replies are pending), events by ``Quotas.event_bytes``.

Reconnection (XENSTORE_SERVER_FEATURE_RECONNECTION, which we offer): the guest sets
connection to XENSTORE_RECONNECT and notifies; we drop partial packets, queued output,
watches and transactions, empty both rings (indexes 0, contents 0xff as oxenstored's
``ml_interface_close``), clear the error, then set connection back to
XENSTORE_CONNECTED and notify.

Ordering: the data is copied after the indexes are read and before the index is
published, as with xenstored's ``xen_mb()``s; each ``mem.write`` is a plain store done
in program order and x86 keeps stores in order, so the guest sees the data before the
index that covers it.
"""

from __future__ import annotations

from collections import deque

from xen import abi
from xen.trace_events import TP_XEN_XENSTORE_RING as TP_RING

from .daemon import HEADER_SIZE, PAYLOAD_MAX, Connection, XenstoreDaemon, parse_header

RING = abi.XENSTORE_RING_SIZE
U32 = 0xFFFFFFFF
_IF = abi.xenstore_domain_interface
OFF = {f: abi.offset_of(_IF, f) for f in
       ("req", "rsp", "req_cons", "req_prod", "rsp_cons", "rsp_prod", "server_features", "connection", "error")}


class XenstoreRing:
    """The ring page of ``conn`` at guest-physical ``gpa`` in ``mem`` (anything with
    ``read(gpa, n) -> bytes`` and ``write(gpa, data)``)."""

    def __init__(self, daemon: XenstoreDaemon, conn: Connection, mem, gpa: int):
        self.daemon = daemon
        self.conn = conn
        self.mem = mem
        self.gpa = gpa
        self._in = bytearray()                  # a request being reassembled
        self._want = HEADER_SIZE                # bytes of it still to come
        self._out: deque[bytes] = deque()       # answers and events not yet in the ring
        self._out_off = 0                       # bytes of _out[0] already written
        self._out_replies: deque[bool] = deque()
        self.outstanding = 0                    # replies in _out
        self.error = abi.XENSTORE_ERROR_NONE    # the connection is ignored while set
        self.reconnections = 0
        conn.ring = self

    # -------------------------------------------------------- fields of the page
    def _get(self, field: str) -> int:
        return int.from_bytes(self.mem.read(self.gpa + OFF[field], 4), "little")

    def _set(self, field: str, value: int) -> None:
        self.mem.write(self.gpa + OFF[field], (value & U32).to_bytes(4, "little"))

    def start(self) -> None:
        """Set the page up for a new connection: empty rings, our features, connected."""
        with self.daemon.lock:
            self.reset_locked()
            self._set("error", abi.XENSTORE_ERROR_NONE)
            self._set("server_features", self.conn.features)
            self._set("connection", abi.XENSTORE_CONNECTED)

    def reset_locked(self) -> None:
        """domain.c ``domain_conn_reset``: forget partial input and queued output, zero
        the indexes (caller holds the daemon's lock)."""
        self._drop_buffers()
        self.error = abi.XENSTORE_ERROR_NONE
        for f in ("req_cons", "req_prod", "rsp_cons", "rsp_prod"):
            self._set(f, 0)

    # -------------------------------------------------------- the work
    def process(self) -> bool:
        """Take requests, answer them, write what fits.  True: notify the guest."""
        with self.daemon.lock:
            return self.process_locked()

    def process_locked(self) -> bool:
        if self._get("connection") != abi.XENSTORE_CONNECTED:
            self._reconnect()
            return True
        if self.error:
            return False
        notify = self._flush()
        limit = None if self.conn.privileged else self.conn.quotas.outstanding
        while not self.error and (not limit or self.outstanding < limit):
            n = self._read_input()
            if n <= 0:
                notify |= n < 0
                break
            notify = True
            notify |= self._flush()
        return notify

    def _read_input(self) -> int:
        """Read what is there of the current request, up to its end; answer it once
        complete.  Bytes read; -1 if the ring turned out corrupt."""
        cons, prod = self._get("req_cons"), self._get("req_prod")
        avail = (prod - cons) & U32
        if avail > RING:
            self._ignore(abi.XENSTORE_ERROR_RINGIDX, f"req cons={cons:#x} prod={prod:#x}")
            return -1
        n = min(avail, self._want)
        if n == 0:
            return 0
        start = cons & (RING - 1)
        first = min(n, RING - start)
        base = self.gpa + OFF["req"]
        self._in += self.mem.read(base + start, first)
        if n > first:
            self._in += self.mem.read(base, n - first)
        self._set("req_cons", cons + n)          # after the copy (xen_mb() in readchn)
        self._want -= n
        if self._want == 0:
            if len(self._in) == HEADER_SIZE:
                length = parse_header(self._in)[3]
                if length > PAYLOAD_MAX:       # core.c handle_input: "Client tried to feed us"
                    self._ignore(abi.XENSTORE_ERROR_PROTO, f"payload of {length}")
                    return -1
                self._want = length
            if self._want == 0:
                self._answer(bytes(self._in))
                self._in.clear()
                self._want = HEADER_SIZE
        return n

    def _answer(self, msg: bytes) -> None:
        out = self.daemon.handle_locked(self.conn, msg)
        self._out.append(out[0])
        self._out_replies.append(True)
        self.outstanding += 1
        self._queue(out[1:], reply=False)

    def _queue(self, msgs, reply: bool) -> None:
        for m in msgs:
            self._out.append(m)
            self._out_replies.append(reply)

    def _flush(self) -> bool:
        """domain.c ``writechn``: as much of the queued output as the ring has room for.
        True if anything was written.  Events queued on the connection come in once
        the ring has taken everything before them, so a guest that reads nothing keeps
        them bounded there (``Quotas.event_bytes``)."""
        if not self._out:
            self._queue(self.conn.take_output(), reply=False)
        wrote = False
        while self._out and not self.error:
            cons, prod = self._get("rsp_cons"), self._get("rsp_prod")
            used = (prod - cons) & U32
            if used > RING:
                self._ignore(abi.XENSTORE_ERROR_RINGIDX, f"rsp cons={cons:#x} prod={prod:#x}")
                return True
            space = RING - used
            if space == 0:
                break
            head = self._out[0]
            chunk = head[self._out_off:self._out_off + space]
            start = prod & (RING - 1)
            first = min(len(chunk), RING - start)
            base = self.gpa + OFF["rsp"]
            self.mem.write(base + start, chunk[:first])
            if len(chunk) > first:
                self.mem.write(base, chunk[first:])
            self._set("rsp_prod", prod + len(chunk))     # after the data (xen_mb() in writechn)
            wrote = True
            self._out_off += len(chunk)
            if self._out_off == len(head):
                self._out.popleft()
                if self._out_replies.popleft():
                    self.outstanding -= 1
                self._out_off = 0
            if not self._out:
                self._queue(self.conn.take_output(), reply=False)
        return wrote

    def _ignore(self, err: int, why: str) -> None:
        """domain.c ``ignore_connection``: say why in the error field, drop watches,
        transactions and buffers, and serve nothing more until a reconnection."""
        if TP_RING.enabled:
            TP_RING.emit(dom=self.conn.domid, what=f"ignored (error {err}): {why}")
        self.error = err
        if self.conn.features & abi.XENSTORE_SERVER_FEATURE_ERROR:
            self._set("error", err)
        self.conn.reset()
        self._drop_buffers()

    def _drop_buffers(self) -> None:
        """Forget a partly read request and all output not yet in the ring."""
        self._in.clear()
        self._want = HEADER_SIZE
        self._out.clear()
        self._out_replies.clear()
        self._out_off = 0
        self.outstanding = 0

    def _reconnect(self) -> None:
        """xenstore-ring.txt "The ring reconnection feature"."""
        if TP_RING.enabled:
            TP_RING.emit(dom=self.conn.domid, what="reconnect")
        self.reconnections += 1
        self.conn.reset()
        self.reset_locked()
        self.mem.write(self.gpa + OFF["req"], b"\xff" * RING)
        self.mem.write(self.gpa + OFF["rsp"], b"\xff" * RING)
        self._set("error", abi.XENSTORE_ERROR_NONE)
        self._set("connection", abi.XENSTORE_CONNECTED)     # last: the guest waits for it
