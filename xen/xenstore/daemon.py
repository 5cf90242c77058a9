"""The xenstore daemon: connections, and one request in, its answers out.

Requests and replies are io/xs_wire.h messages (struct xsd_sockmsg + payload), with
the payload formats of docs/misc/xenstore.txt and the behaviour, errors and quotas of
the C xenstored (xen-project/xen tools/xenstored/core.c ``process_message`` and the
``do_*`` functions, domain.c, transaction.c, watch.c).  A reply has the request's
type, req_id and tx_id; an error is XS_ERROR with the error's name and a NUL.

The privileged domain (0) is the VMM itself: :attr:`XenstoreDaemon.vmm` is its
connection, used by the VMM's own reads and writes (:meth:`XenstoreDaemon.write`,
...) and by xen/xenstore/populate.py.  Guests get a :class:`Connection` from
:meth:`XenstoreDaemon.introduce` and talk through a ring (xen/xenstore/ring.py).

Threads: everything runs under ``XenstoreDaemon.lock`` (``xen.xenstore`` in
vmm/locks.py), taken with no other xen lock held; nothing here calls into event
channels.  Output for a connection other than the caller's is queued on it and the
connection marked dirty (:meth:`XenstoreDaemon.take_dirty`): the caller pushes it
through that connection's ring and kicks the guest.

Deviations from xenstored, deliberate:

* :meth:`handle` takes a whole message; a header whose ``len`` is over
  XENSTORE_PAYLOAD_MAX or disagrees with the bytes given gets an EINVAL reply (the ring
  code does what xenstored does for the former: XENSTORE_ERROR_PROTO and the connection
  is ignored until the guest reconnects).
* SET_TARGET, GET_QUOTA and SET_QUOTA from the privileged domain answer ENOSYS
  (optional types, xenstore.txt); CONTROL knows "check" and "help" only.  From a guest
  they are EACCES, as in xenstored.
* INTRODUCE of the privileged domain is EINVAL; the ring page and port of an
  INTRODUCE are not used (the VMM wires rings with :class:`xen.xenstore.ring.XenstoreRing`).
* Watch events beyond ``Quotas.event_bytes`` queued for a guest are dropped (xenstored
  drops them at its per-domain memory quota, which we don't keep).
* A request failing its checks changes nothing, so a failed write inside a transaction
  leaves the transaction usable (xenstored fails the transaction: ENOMEM at commit).
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Callable

from vmm.errors import internal_error
from vmm.locks import ordered_lock
from xen import abi
from xen.abi import XS
from xen.trace_events import TP_XEN_XENSTORE_REQ as TP_REQ
from xen.trace_events import TP_XEN_XENSTORE_WATCH_EVENT as TP_EVENT

from . import store as st
from .store import E, GlobalView, Quotas, Store, XsError, canonicalize, parse_domid, parse_perm
from .transactions import Transaction
from .watches import Watch, fire_special, fire_watches

HEADER_SIZE = abi.sizeof(abi.xsd_sockmsg, "64")
# The header packed and unpacked with struct, as the four u32s xen/abi declares (checked):
# construct's parse and build of it were most of the cost of a request, among them the ~90
# of the toolstack's that every --xen start makes before its first KVM_RUN (populate.py).
_WIRE = struct.Struct("<4I")
assert HEADER_SIZE == _WIRE.size and [abi.offset_of(abi.xsd_sockmsg, f, "64") for f in
                                      ("type", "req_id", "tx_id", "len")] == [0, 4, 8, 12]
PAYLOAD_MAX = abi.XENSTORE_PAYLOAD_MAX
ERROR_NAMES = {int(e): name.encode() + b"\0" for e, name in abi.XSD_ERRORS}

#: server_features offered on the ring: reconnection (xenstore-ring.txt; oxenstored
#: offers it, Linux looks for it) and the error field.  No WATCHDEPTH, no DOMID_ANY.
SERVER_FEATURES = abi.XENSTORE_SERVER_FEATURE_RECONNECTION | abi.XENSTORE_SERVER_FEATURE_ERROR

# core.c wire_funcs[] flags.
PRIVILEGED_ONLY = frozenset({XS.CONTROL, XS.INTRODUCE, XS.RELEASE, XS.IS_DOMAIN_INTRODUCED, XS.RESUME,
                             XS.SET_TARGET, XS.SET_FEATURE, XS.GET_QUOTA, XS.SET_QUOTA})
NO_TX_ID = frozenset({XS.WATCH, XS.UNWATCH})
CONTROL_COMMANDS = {b"check": "", b"help": ""}


def message(type_: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """One xsd_sockmsg and its payload."""
    return _WIRE.pack(type_, req_id, tx_id, len(payload)) + payload


def parse_header(msg) -> tuple[int, int, int, int]:
    """(type, req_id, tx_id, len) of the xsd_sockmsg that starts ``msg``."""
    return _WIRE.unpack_from(msg)


def parse_message(msg: bytes):
    """(type, req_id, tx_id, payload) of a whole message (no checks)."""
    type_, req_id, tx_id, length = _WIRE.unpack_from(msg)
    return type_, req_id, tx_id, msg[HEADER_SIZE:HEADER_SIZE + length]


def strings(payload: bytes) -> list[bytes]:
    """core.c ``get_strings``: the NUL-terminated strings; bytes after the last NUL
    are not a string."""
    parts = payload.split(b"\0")
    return parts[:-1]


def onearg(payload: bytes) -> bytes | None:
    """core.c ``onearg``: one string, its NUL the last byte and the only one."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        return None
    return payload[:-1]


class Connection(st.Caller):
    """A domain's connection: its identity and quotas, watches, transactions, and the
    output queued for it by others (watch events) that its ring hasn't taken yet."""

    def __init__(self, domid: int, privileged: bool = False, quotas: Quotas | None = None):
        self.domid = domid
        self.privileged = privileged
        self.quotas = quotas or Quotas()
        self.features = SERVER_FEATURES
        self.watches: list[Watch] = []
        self.transactions: dict[int, Transaction] = {}
        self.next_tx_id = 0
        self.outq: deque[bytes] = deque()
        self.event_bytes = 0          # bytes of events in outq
        self.ring = None              # a XenstoreRing, once one serves this connection
        self.dropped_events = 0

    def take_output(self) -> list[bytes]:
        """Messages queued for this connection by other requests (caller holds the lock)."""
        out = list(self.outq)
        self.outq.clear()
        self.event_bytes = 0
        return out

    def reset(self) -> None:
        """Forget watches, transactions and queued output (RESET_WATCHES does the
        first two; a reconnection or re-introduction all three)."""
        self.watches.clear()
        self.transactions.clear()
        self.take_output()

    def __repr__(self) -> str:
        return f"<xenstore Connection dom{self.domid}>"


class XenstoreDaemon:
    """The store, the connections, and the request handler."""

    def __init__(self, priv_domid: int = 0, quotas: Quotas | None = None):
        self.lock = ordered_lock("xen.xenstore")
        self.priv_domid = priv_domid
        self.default_quotas = quotas or Quotas()
        self.store = Store(priv_domid)
        self.connections: dict[int, Connection] = {}
        self.store.domain_exists = self.connections.__contains__
        self.vmm = Connection(priv_domid, privileged=True)
        self.connections[priv_domid] = self.vmm
        self.global_view = GlobalView(self.store, self._fire)
        self._dirty: dict[int, Connection] = {}
        self._active: Connection | None = None      # the connection handle() answers
        self._active_out: list[bytes] = []
        self._after: list[Callable[[], None]] = []
        self._handlers = {
            XS.CONTROL: self._control, XS.DIRECTORY: self._directory, XS.READ: self._read,
            XS.GET_PERMS: self._get_perms, XS.WATCH: self._watch, XS.UNWATCH: self._unwatch,
            XS.TRANSACTION_START: self._transaction_start, XS.TRANSACTION_END: self._transaction_end,
            XS.INTRODUCE: self._introduce, XS.RELEASE: self._release,
            XS.GET_DOMAIN_PATH: self._get_domain_path, XS.WRITE: self._write, XS.MKDIR: self._mkdir,
            XS.RM: self._rm, XS.SET_PERMS: self._set_perms,
            XS.IS_DOMAIN_INTRODUCED: self._is_domain_introduced, XS.RESUME: self._resume,
            XS.SET_TARGET: self._unsupported, XS.RESET_WATCHES: self._reset_watches,
            XS.DIRECTORY_PART: self._directory_part, XS.GET_FEATURE: self._get_feature,
            XS.SET_FEATURE: self._set_feature, XS.GET_QUOTA: self._unsupported,
            XS.SET_QUOTA: self._unsupported,
        }

    # ------------------------------------------------------------ domains
    def introduce(self, domid: int, quotas: Quotas | None = None) -> Connection:
        """A domain's connection (domain.c ``introduce_domain``): new, firing
        @introduceDomain, or the existing one reset (``domain_conn_reset``)."""
        with self.lock:
            return self._introduce_domain(domid, quotas)

    def release(self, domid: int) -> None:
        """The domain is gone (domain.c ``do_release``/``destroy_domain``)."""
        with self.lock:
            self._release_domain(domid)

    def _introduce_domain(self, domid: int, quotas: Quotas | None = None) -> Connection:
        conn = self.connections.get(domid)
        if conn is not None:
            conn.reset()
            if conn.ring is not None:
                conn.ring.reset_locked()
            return conn
        conn = self.connections[domid] = Connection(domid, domid == self.priv_domid,
                                                    quotas or Quotas(**vars(self.default_quotas)))
        fire_special(self.store, self.connections.values(), "@introduceDomain", domid, self._send_event)
        return conn

    def _release_domain(self, domid: int) -> None:
        """Drop the connection (its watches first, so it hears nothing), remove the
        nodes it owns and its permission entries elsewhere (domain.c
        ``domain_tree_remove``), fire @releaseDomain."""
        conn = self.connections.pop(domid)
        conn.reset()
        self._dirty.pop(domid, None)
        view = self.global_view
        todo = [st.ROOT]
        while todo:
            name = todo.pop()
            node = self.store.nodes.get(name)
            if node is None:
                continue
            if node.owner == domid and name != st.ROOT:
                st.rm_node(view, name)
                continue
            kept = node.perms[:1] + tuple(p for p in node.perms[1:] if p.id != domid)
            if kept != node.perms:
                view.write(node.replace(perms=kept))
            todo.extend(st.child_path(name, c) for c in node.children)
        for special in ("@releaseDomain", "@introduceDomain"):
            node = self.store.nodes[special]
            kept = node.perms[:1] + tuple(p for p in node.perms[1:] if p.id != domid)
            if kept != node.perms:
                view.write(node.replace(perms=kept))
        fire_special(self.store, self.connections.values(), "@releaseDomain", domid, self._send_event)

    def take_dirty(self) -> list[Connection]:
        """Connections that got output since the last call (their rings want a
        ``process()`` and, if it says so, a kick)."""
        with self.lock:
            return self.take_dirty_locked()

    def take_dirty_locked(self) -> list[Connection]:
        out = list(self._dirty.values())
        self._dirty.clear()
        return out

    # ------------------------------------------------------------ requests
    def handle(self, conn: Connection, raw: bytes) -> list[bytes]:
        """Answer one request message from ``conn``: the reply (or XS_ERROR) and any
        watch events for ``conn`` it caused, in order.  Never raises."""
        with self.lock:
            return self.handle_locked(conn, raw)

    def handle_locked(self, conn: Connection, raw: bytes) -> list[bytes]:
        out: list[bytes] = []
        self._active, self._active_out, self._after = conn, out, []
        req_id = tx_id = 0
        type_ = -1
        result = "OK"
        try:
            raw = bytes(raw)
            try:
                if len(raw) < HEADER_SIZE:
                    raise XsError(E.EINVAL, "short header")
                type_, req_id, tx_id, length = _WIRE.unpack_from(raw)
                if length != len(raw) - HEADER_SIZE or length > PAYLOAD_MAX:
                    raise XsError(E.EINVAL, "bad length")
                reply = self._dispatch(conn, type_, tx_id, raw[HEADER_SIZE:])
                if len(reply) > PAYLOAD_MAX:      # core.c send_reply
                    raise XsError(E.E2BIG, "reply too long")
                out.append(message(type_, req_id, tx_id, reply))
                for fn in self._after:
                    fn()
            except XsError as e:
                result = e.err.name
                out.append(message(XS.ERROR, req_id, tx_id, ERROR_NAMES.get(int(e.err), ERROR_NAMES[E.EINVAL])))
        except Exception as exc:        # a bug: report it, answer EINVAL, keep serving
            internal_error("xenstore request", exc)
            result = "internal error"
            out.append(message(XS.ERROR, req_id, tx_id, ERROR_NAMES[E.EINVAL]))
        finally:
            self._active, self._active_out, self._after = None, [], []
        if TP_REQ.enabled:
            name = XS(type_).name if type_ in XS._value2member_map_ else str(type_)
            arg = raw[HEADER_SIZE:].split(b"\0", 1)[0][:80].decode("latin-1")
            TP_REQ.emit(dom=conn.domid, type=name, path=arg, tx=tx_id, result=result)
        return out

    def request(self, conn: Connection, type_: int, payload: bytes, tx_id: int = 0) -> bytes:
        """A request of the VMM's own (caller holds the lock): the reply payload, or
        XsError.  Watch events for ``conn`` go to its queue."""
        msgs = self.handle_locked(conn, message(type_, 0, tx_id, payload))
        reply = msgs[0]
        for m in msgs[1:]:
            conn.outq.append(m)
        rtype, _, _, data = parse_message(reply)
        if rtype == XS.ERROR:
            raise XsError(E[data.rstrip(b"\0").decode()], f"{XS(type_).name} {payload[:64]!r}")
        return data

    def _dispatch(self, conn: Connection, type_: int, tx_id: int, payload: bytes) -> bytes:
        """core.c ``process_message``: unknown types ENOSYS, privileged ones EACCES for
        guests, then the transaction (ENOENT if unknown) unless the type ignores it."""
        handler = self._handlers.get(type_)
        if handler is None:
            raise XsError(E.ENOSYS, f"type {type_}")
        if type_ in PRIVILEGED_ONLY and not conn.privileged:
            raise XsError(E.EACCES, "privileged type")
        tx = None
        if type_ not in NO_TX_ID and tx_id != 0:
            tx = conn.transactions.get(tx_id)
            if tx is None:
                raise XsError(E.ENOENT, f"transaction {tx_id}")
        return handler(conn, tx if tx is not None else self.global_view, tx, payload)

    # ------------------------------------------------------------ events
    def _fire(self, name: str, subtree: bool, node, old_perms) -> None:
        fire_watches(self.store, self.connections.values(), name, subtree, node, old_perms, self._send_event)

    def _send_event(self, conn: Connection, path: str, token: bytes) -> None:
        """core.c ``send_event``: over-long events are not sent; an identical pending
        event (not a special one) is not queued twice."""
        payload = path.encode() + b"\0" + token + b"\0"
        if len(payload) > PAYLOAD_MAX:
            return
        msg = message(XS.WATCH_EVENT, 0, 0, payload)
        active = conn is self._active
        pending = self._active_out if active else conn.outq
        if not path.startswith("@") and (msg in pending or (active and msg in conn.outq)):
            return
        if not active:
            if not conn.privileged and conn.event_bytes + len(msg) > conn.quotas.event_bytes:
                conn.dropped_events += 1
                return
            conn.event_bytes += len(msg)
            self._dirty[conn.domid] = conn
        pending.append(msg)
        if TP_EVENT.enabled:
            TP_EVENT.emit(dom=conn.domid, path=path, token=token[:64].decode("latin-1"))

    # ------------------------------------------------------------ handlers
    # Each takes (conn, view, tx, payload) and returns the reply payload or raises XsError.
    def _read(self, conn, view, tx, payload):
        name = canonicalize(conn, onearg(payload), False)
        return st.get_node(view, conn, name, st.PERM_READ).data

    def _directory(self, conn, view, tx, payload):
        name = canonicalize(conn, onearg(payload), False)
        return st.get_node(view, conn, name, st.PERM_READ).children_blob()

    def _directory_part(self, conn, view, tx, payload):
        """core.c ``send_directory_part``: "<generation>\\0" and the children from byte
        ``offset`` of the list, whole names only, as many as fit; the list's end is
        marked by an empty string."""
        if payload.count(0) != 2:
            raise XsError(E.EINVAL, "want path and offset")
        path, off_s = strings(payload)[:2]
        node = st.get_node(view, conn, canonicalize(conn, path, False), st.PERM_READ)
        off = st.c_atoi(off_s) & 0xFFFFFFFF
        gen = str(node.generation).encode() + b"\0"
        blob = node.children_blob()
        if off >= len(blob):
            return gen + b"\0"
        maxlen = PAYLOAD_MAX - len(gen) - 1
        n = 0
        pos = off
        while True:
            ln = blob.index(b"\0", pos) - pos
            if n + ln >= maxlen:
                break
            n += ln + 1
            pos += ln + 1
            if off + n == len(blob):
                break
        data = gen + blob[off:off + n]
        return data + b"\0" if off + n == len(blob) else data

    def _get_perms(self, conn, view, tx, payload):
        name = canonicalize(conn, onearg(payload), True)
        node = st.get_node(view, conn, name, st.PERM_READ)
        return b"".join(p.to_string() + b"\0" for p in node.perms)

    def _set_perms(self, conn, view, tx, payload):
        """core.c ``do_set_perms``: path, then one or more permission strings."""
        num = payload.count(0)
        if num < 2:
            raise XsError(E.EINVAL, "no permissions")
        num -= 1
        if conn.exceeds("node_permissions", num):
            raise XsError(E.ENOSPC, "permission quota")
        parts = strings(payload)
        perms = self.store.adjust_perms(parse_perm(s) for s in parts[1:1 + num])
        if perms[0].perms & st.PERM_IGNORE:
            raise XsError(E.ENOENT, "owner domain doesn't exist")
        name = canonicalize(conn, parts[0], True)
        st.do_set_perms(view, conn, name, perms)
        return b"OK\0"

    def _write(self, conn, view, tx, payload):
        if b"\0" not in payload:
            raise XsError(E.EINVAL, "no path")
        path, _, data = payload.partition(b"\0")
        st.do_write(view, conn, canonicalize(conn, path, False), data)
        return b"OK\0"

    def _mkdir(self, conn, view, tx, payload):
        st.do_mkdir(view, conn, canonicalize(conn, onearg(payload), False))
        return b"OK\0"

    def _rm(self, conn, view, tx, payload):
        st.do_rm(view, conn, canonicalize(conn, onearg(payload), False))
        return b"OK\0"

    def _watch(self, conn, view, tx, payload):
        """watch.c ``do_watch``: path and token (a depth only with WATCHDEPTH, not
        offered); EEXIST for the same pair twice; the watch fires once at once, after
        the reply."""
        vec = strings(payload)
        if len(vec) != 2:
            raise XsError(E.EINVAL, "want path and token")
        path, token = vec
        relative = not path.startswith((b"/", b"@"))
        name = canonicalize(conn, path, True)
        if any(w.path == name and w.token == token for w in conn.watches):
            raise XsError(E.EEXIST, "watch exists")
        if conn.exceeds("watches", len(conn.watches) + 1):
            raise XsError(E.ENOSPC, "watch quota")
        w = Watch(name, token, len(st.domain_path(conn.domid)) + 1 if relative else 0)
        conn.watches.append(w)
        self._after.append(lambda: self._send_event(conn, w.event_path(name), token))
        return b"OK\0"

    def _unwatch(self, conn, view, tx, payload):
        vec = strings(payload)
        if len(vec) != 2:
            raise XsError(E.EINVAL, "want path and token")
        name = canonicalize(conn, vec[0], True)
        for w in conn.watches:
            if w.path == name and w.token == vec[1]:
                conn.watches.remove(w)
                return b"OK\0"
        raise XsError(E.ENOENT, "no such watch")

    def _reset_watches(self, conn, view, tx, payload):
        conn.watches.clear()
        conn.transactions.clear()
        return b"OK\0"

    def _transaction_start(self, conn, view, tx, payload):
        """transaction.c ``do_transaction_start``: no nesting (EBUSY), the quota
        (ENOSPC); ids per connection, never 0, the next unused one."""
        if tx is not None:
            raise XsError(E.EBUSY, "nested transaction")
        if conn.exceeds("transactions", len(conn.transactions) + 1):
            raise XsError(E.ENOSPC, "transaction quota")
        while True:
            tid = conn.next_tx_id
            conn.next_tx_id = (tid + 1) & 0xFFFFFFFF
            if tid != 0 and tid not in conn.transactions:
                break
        conn.transactions[tid] = Transaction(self.store, tid, conn)
        return str(tid).encode() + b"\0"

    def _transaction_end(self, conn, view, tx, payload):
        """transaction.c ``do_transaction_end``: "T" commits (EAGAIN on a conflict),
        "F" aborts; the transaction is gone either way."""
        arg = onearg(payload)
        if arg not in (b"T", b"F"):
            raise XsError(E.EINVAL, "want T or F")
        if tx is None:
            raise XsError(E.ENOENT, "no transaction")
        del conn.transactions[tx.id]
        if arg == b"T":
            tx.commit(self._fire)
        return b"OK\0"

    def _get_domain_path(self, conn, view, tx, payload):
        arg = onearg(payload)
        if arg is None:
            raise XsError(E.EINVAL, "want domid")
        return st.domain_path(parse_domid(arg)).encode() + b"\0"

    def _is_domain_introduced(self, conn, view, tx, payload):
        arg = onearg(payload)
        if arg is None:
            raise XsError(E.EINVAL, "want domid")
        domid = parse_domid(arg)
        return b"T\0" if domid == abi.DOMID_SELF or domid in self.connections else b"F\0"

    def _introduce(self, conn, view, tx, payload):
        """domain.c ``do_introduce``: domid, gfn (unused), port (> 0)."""
        vec = strings(payload)
        if len(vec) < 3:
            raise XsError(E.EINVAL, "want domid, gfn, port")
        domid = parse_domid(vec[0])
        if st.c_atoi(vec[2]) <= 0 or domid == self.priv_domid:
            raise XsError(E.EINVAL, "bad port or domain")
        self._introduce_domain(domid)
        return b"OK\0"

    def _onearg_domain(self, payload) -> int:
        """domain.c ``onearg_domain``: a guest domain with a connection."""
        arg = onearg(payload)
        if arg is None:
            raise XsError(E.EINVAL, "want domid")
        domid = parse_domid(arg)
        if domid == self.priv_domid:
            raise XsError(E.EINVAL, "privileged domain")
        if domid not in self.connections:
            raise XsError(E.ENOENT, "no such domain")
        return domid

    def _release(self, conn, view, tx, payload):
        self._release_domain(self._onearg_domain(payload))
        return b"OK\0"

    def _resume(self, conn, view, tx, payload):
        self._onearg_domain(payload)
        return b"OK\0"

    def _get_feature(self, conn, view, tx, payload):
        """domain.c ``do_get_feature``: the caller's features; another domain's only
        for the privileged domain."""
        vec = strings(payload)
        if not vec:
            return str(conn.features).encode() + b"\0"
        if not conn.privileged:
            raise XsError(E.EACCES, "other domain's features")
        if len(vec) > 1:
            raise XsError(E.EINVAL, "one domid")
        other = self.connections.get(parse_domid(vec[0]))
        if other is None:
            raise XsError(E.ENOENT, "no such domain")
        return str(other.features).encode() + b"\0"

    def _set_feature(self, conn, view, tx, payload):
        """domain.c ``do_set_feature``: only before INTRODUCE, and every domain we know
        has been introduced."""
        vec = strings(payload)
        if len(vec) != 2:
            raise XsError(E.EINVAL, "want domid and features")
        if parse_domid(vec[0]) not in self.connections:
            raise XsError(E.ENOENT, "no such domain")
        raise XsError(E.EBUSY, "domain introduced")

    def _control(self, conn, view, tx, payload):
        """control.c ``do_control``, "check" and "help" only."""
        vec = strings(payload)
        if not vec or vec[0] not in CONTROL_COMMANDS:
            raise XsError(E.EINVAL, "control command")
        if vec[0] == b"check":
            return b"OK\0"
        if len(vec) > 1:
            raise XsError(E.EINVAL, "help takes nothing")
        return b"".join(b"%-15s %s\n" % (c, p.encode()) for c, p in CONTROL_COMMANDS.items()) + b"\0"

    def _unsupported(self, conn, view, tx, payload):
        raise XsError(E.ENOSYS, "not supported")

    # ------------------------------------------------------------ the VMM's own access
    def read(self, path: str, tx_id: int = 0) -> bytes | None:
        """The value at ``path`` (None if there's none)."""
        with self.lock:
            try:
                return self.request(self.vmm, XS.READ, path.encode() + b"\0", tx_id)
            except XsError as e:
                if e.err == E.ENOENT:
                    return None
                raise

    def write(self, path: str, value: bytes | str, tx_id: int = 0) -> None:
        with self.lock:
            self.request(self.vmm, XS.WRITE, path.encode() + b"\0" +
                         (value.encode() if isinstance(value, str) else bytes(value)), tx_id)

    def mkdir(self, path: str, tx_id: int = 0) -> None:
        with self.lock:
            self.request(self.vmm, XS.MKDIR, path.encode() + b"\0", tx_id)

    def rm(self, path: str, tx_id: int = 0) -> None:
        with self.lock:
            self.request(self.vmm, XS.RM, path.encode() + b"\0", tx_id)

    def set_perms(self, path: str, perms: list[str], tx_id: int = 0) -> None:
        """``perms`` as on the wire: ["n0", "r5"]: owner first."""
        with self.lock:
            self.request(self.vmm, XS.SET_PERMS,
                         path.encode() + b"\0" + b"".join(p.encode() + b"\0" for p in perms), tx_id)

    def directory(self, path: str) -> list[str]:
        with self.lock:
            return [c.decode() for c in strings(self.request(self.vmm, XS.DIRECTORY, path.encode() + b"\0"))]

    def get_perms(self, path: str) -> list[str]:
        with self.lock:
            return [p.decode() for p in strings(self.request(self.vmm, XS.GET_PERMS, path.encode() + b"\0"))]
