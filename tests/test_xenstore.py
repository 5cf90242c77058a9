"""The xenstore daemon (xen/xenstore/), driven through real io/xs_wire.h messages and
through the ring page in plain memory (xenstore is pure protocol: no KVM involved).

Expected behaviour is the C xenstored's (tools/xenstored/) and docs/misc/xenstore.txt,
xenstore-ring.txt; each test names what it checks.
"""

from __future__ import annotations

import json
import io

import pytest

from vmm import trace
from xen import abi
from xen.xenstore import store as st
from xen.xenstore.daemon import HEADER_SIZE, SERVER_FEATURES, XenstoreDaemon, message, parse_message
from xen.xenstore.populate import DomainInfo, PvConsole, populate_domain
from xen.xenstore.ring import OFF, XenstoreRing
from xen.xenstore.store import Quotas

XS = abi.XS
DOM = 5
HOME = f"/local/domain/{DOM}"


# ---------------------------------------------------------------- helpers
class Client:
    """One connection's view: send a request, get (type, req_id, tx_id, payload) tuples."""

    def __init__(self, d: XenstoreDaemon, conn):
        self.d, self.conn, self.rid = d, conn, 0

    def raw(self, msg: bytes):
        return [parse_message(m) for m in self.d.handle(self.conn, msg)]

    def __call__(self, type_, *parts, tx=0):
        self.rid += 1
        payload = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
        out = self.raw(message(type_, self.rid, tx, payload))
        # one reply, req_id and tx_id echoed; events (req_id 0) may come before it, as
        # xenstored queues them (do_write: fire_watches, then send_ack)
        replies = [m for m in out if m[0] != XS.WATCH_EVENT]
        assert len(replies) == 1 and replies[0][1] == self.rid and replies[0][2] == tx, out
        assert all(m[1:3] == (0, 0) for m in out if m[0] == XS.WATCH_EVENT), out
        return replies + [m for m in out if m[0] == XS.WATCH_EVENT]

    def ok(self, type_, *parts, tx=0) -> bytes:
        out = self(type_, *parts, tx=tx)
        assert out[0][0] == type_, (type_, parts, out)
        return out[0][3]

    def err(self, type_, *parts, tx=0) -> str:
        out = self(type_, *parts, tx=tx)
        assert out[0][0] == XS.ERROR, (type_, parts, out)
        assert out[0][3].endswith(b"\0") and out[0][3].count(b"\0") == 1
        return out[0][3][:-1].decode()

    def events(self, type_, *parts, tx=0) -> list[tuple[str, str]]:
        out = self(type_, *parts, tx=tx)
        assert out[0][0] == type_, out
        return [tuple(p.decode() for p in m[3].split(b"\0")[:2]) for m in out[1:] if m[0] == XS.WATCH_EVENT]

    def queued(self) -> list[tuple[str, str]]:
        """Events queued for this connection by others' requests."""
        return [tuple(p.decode() for p in parse_message(m)[3].split(b"\0")[:2])
                for m in self.conn.take_output()]


def domu(d: XenstoreDaemon, domid: int = DOM, **kw) -> Client:
    conn = d.introduce(domid, **kw)
    populate_domain(d, DomainInfo(domid=domid, name=f"guest{domid}", max_memkb=262144, target_memkb=262144,
                                  store_port=1, store_ring_ref=0xFEFFC, vcpus=2, vcpus_online=1))
    return Client(d, conn)


@pytest.fixture
def d():
    return XenstoreDaemon()


@pytest.fixture
def g(d):
    return domu(d)


@pytest.fixture
def dom0(d):
    return Client(d, d.vmm)


# ---------------------------------------------------------------- ABI
def test_xs_wire_abi():
    """io/xs_wire.h and the table of xenstore-ring.txt."""
    assert abi.sizeof(abi.xsd_sockmsg, "32") == abi.sizeof(abi.xsd_sockmsg, "64") == HEADER_SIZE == 16
    offs = {f: abi.offset_of(abi.xenstore_domain_interface, f) for f in
            ("req", "rsp", "req_cons", "req_prod", "rsp_cons", "rsp_prod", "server_features", "connection",
             "error", "evtchn_port")}
    assert list(offs.values()) == [0, 1024, 2048, 2052, 2056, 2060, 2064, 2068, 2072, 2076]
    assert abi.sizeof(abi.xenstore_domain_interface, "64") == 2080
    # xenstore.txt's table of message types
    assert [abi.XS_CONTROL, abi.XS_DEBUG, abi.XS_WATCH_EVENT, abi.XS_ERROR, abi.XS_SET_TARGET,
            abi.XS_RESET_WATCHES, abi.XS_DIRECTORY_PART, abi.XS_SET_QUOTA, abi.XS_INVALID] == \
        [0, 0, 15, 16, 19, 21, 22, 26, 0xFFFF]
    assert abi.XS_TYPE_COUNT == 27 and 20 not in set(abi.XS)
    assert [n for _, n in abi.XSD_ERRORS][:5] == ["EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT"]
    assert abi.XSD_ERRORS[-1] == (abi.XenErrno.EPERM, "EPERM") and len(abi.XSD_ERRORS) == 16
    assert (abi.XENSTORE_PAYLOAD_MAX, abi.XENSTORE_RING_SIZE, abi.XENSTORE_ABS_PATH_MAX,
            abi.XENSTORE_REL_PATH_MAX) == (4096, 1024, 3072, 2048)
    assert abi.MASK_XENSTORE_IDX(0xFFFFFFFF) == 1023
    assert (abi.XENSTORE_RECONNECT, abi.XENSTORE_ERROR_RINGIDX, abi.XENSTORE_ERROR_PROTO) == (1, 2, 3)
    assert SERVER_FEATURES == 3


# ---------------------------------------------------------------- basic operations
def test_read_write_mkdir_directory(g, dom0):
    assert g.ok(XS.READ, "name\0") == b"guest5"                   # relative to /local/domain/5
    assert g.ok(XS.READ, f"{HOME}/cpu/1/availability\0") == b"offline"
    assert g.ok(XS.WRITE, "data/x\0hello\0world") == b"OK\0"       # a value may hold NULs
    assert g.ok(XS.READ, "data/x\0") == b"hello\0world"
    assert g.ok(XS.WRITE, "data/empty\0") == b"OK\0"
    assert g.ok(XS.READ, "data/empty\0") == b""
    assert g.ok(XS.MKDIR, "data/dir\0") == b"OK\0"
    assert g.ok(XS.MKDIR, "data/x\0") == b"OK\0"                    # exists: value kept
    assert g.ok(XS.READ, "data/x\0") == b"hello\0world"
    assert g.ok(XS.DIRECTORY, "data\0") == b"x\0empty\0dir\0"      # creation order
    assert g.ok(XS.DIRECTORY, "data/dir\0") == b""
    assert g.err(XS.READ, "data/nope\0") == "ENOENT"
    assert g.ok(XS.GET_DOMAIN_PATH, "7\0") == b"/local/domain/7\0"
    assert g.ok(XS.GET_DOMAIN_PATH, "\0") == b"/local/domain/0\0"   # strtoul("") = 0, as xenstored
    assert g.err(XS.GET_DOMAIN_PATH, "65536\0") == "EINVAL"
    assert g.err(XS.GET_DOMAIN_PATH, "1x\0") == "EINVAL"
    assert g.ok(XS.GET_FEATURE) == b"3\0"
    assert g.err(XS.GET_FEATURE, "0\0") == "EACCES"
    assert dom0.ok(XS.GET_FEATURE, f"{DOM}\0") == b"3\0"
    assert dom0.ok(XS.READ, f"{HOME}/data/x\0") == b"hello\0world"


def test_write_creates_parents_inheriting_permissions(g, dom0):
    """core.c construct_node: new nodes copy the parent's permissions; an unprivileged
    creator owns them.  The privileged domain's keep the parent's owner."""
    g.ok(XS.SET_PERMS, "data\0", f"n{DOM}\0r0\0")
    g.ok(XS.WRITE, "data/a/b/c\0v")
    for p in ("data/a", "data/a/b", "data/a/b/c"):
        assert g.ok(XS.GET_PERMS, p + "\0") == f"n{DOM}\0r0\0".encode()
    dom0.ok(XS.WRITE, f"{HOME}/memory/x/y\0v")
    assert g.ok(XS.GET_PERMS, "memory/x/y\0") == f"n0\0r{DOM}\0".encode()
    assert d_count(g, DOM) == 13 + 3        # 13 nodes owned by the domain after populate


def d_count(c: Client, domid):
    return c.d.store.node_counts.get(domid, 0)


def test_rm(g, dom0):
    g.ok(XS.WRITE, "data/a/b/c\0v")
    g.ok(XS.WRITE, "data/a/d\0v")
    before = d_count(g, DOM)
    assert g.ok(XS.RM, "data/a\0") == b"OK\0"
    assert g.err(XS.READ, "data/a/b/c\0") == "ENOENT"
    assert g.ok(XS.DIRECTORY, "data\0") == b""
    assert d_count(g, DOM) == before - 4
    assert g.ok(XS.RM, "data/a\0") == b"OK\0"               # gone already, parent there: fine
    assert g.err(XS.RM, "data/a/b\0") == "ENOENT"           # parent missing too
    assert g.err(XS.RM, "/\0") == "EACCES"                  # not the guest's
    assert dom0.err(XS.RM, "/\0") == "EINVAL"               # core.c do_rm: never the root
    assert dom0.ok(XS.DIRECTORY, "/\0") == b"tool\0local\0vm\0"


def test_paths(g):
    """core.c canonicalize: characters, slashes, special names, the path quota."""
    for bad in ("data/a b", "data//a", "data/a/", "", "@releaseDomain", "data/\xe9", "/local/domain/5/data\n"):
        assert g.err(XS.WRITE, bad.encode("latin-1") + b"\0v") == "EINVAL", bad
    assert g.ok(XS.WRITE, "data/Az09-_@\0v") == b"OK\0"
    # path_max (2048) counts from below /local/domain/<id>/ for a guest
    ok = "data"
    while len(ok) + 100 < 2047:
        ok += "/" + "a" * 99             # short names: a long one would overflow data's node size
    ok += "/" + "b" * (2047 - len(ok) - 1)
    assert len(ok) == 2047
    assert g.ok(XS.WRITE, ok + "\0") == b"OK\0"
    assert g.err(XS.WRITE, ok + "a\0") == "EINVAL"
    assert g.err(XS.READ, "/" + "a" * 2047 + "\0") == "EINVAL"
    assert g.err(XS.GET_PERMS, "@nonexistent\0") == "EACCES"      # "/" is unreadable for it
    assert g.ok(XS.GET_PERMS, "@releaseDomain\0") == b"n0\0r%d\0" % abi.DOMID_ANY


# ---------------------------------------------------------------- permissions
def test_guest_denied_other_domains_nodes(d, g):
    other = domu(d, 6)
    other.ok(XS.WRITE, "data/secret\0s")
    assert g.err(XS.READ, "/local/domain/6/data/secret\0") == "EACCES"
    assert g.err(XS.WRITE, "/local/domain/6/data/secret\0x") == "EACCES"
    assert g.err(XS.READ, "/local/domain/6/data/missing\0") == "EACCES"    # no hint it's missing
    assert g.err(XS.DIRECTORY, "/local/domain/6\0") == "EACCES"
    assert g.err(XS.RM, "/local/domain/6/data\0") == "EACCES"
    assert g.err(XS.SET_PERMS, "/local/domain/6/data/secret\0b5\0") == "EACCES"
    assert g.err(XS.WRITE, "/tool/x\0v") == "EACCES"
    assert g.err(XS.READ, "/local/domain/0\0") == "EACCES"
    # its own read-only nodes: readable, not writable; creating below them EACCES
    assert g.err(XS.WRITE, "name\0x") == "EACCES"
    assert g.err(XS.WRITE, "newnode\0x") == "EACCES"
    assert g.err(XS.MKDIR, "memory/x\0") == "EACCES"
    assert g.err(XS.READ, "nothere\0") == "ENOENT"          # readable parent: the truth
    # an ACL entry opens a node to the other domain
    other.ok(XS.SET_PERMS, "data/secret\0n6\0r5\0")
    assert g.ok(XS.READ, "/local/domain/6/data/secret\0") == b"s"
    assert g.err(XS.WRITE, "/local/domain/6/data/secret\0x") == "EACCES"


def test_set_perms(d, g, dom0):
    g.ok(XS.WRITE, "data/p\0v")
    assert g.err(XS.SET_PERMS, "data/p\0n0\0") == "EPERM"            # owner change: dom0 only
    assert g.ok(XS.SET_PERMS, "data/p\0b5\0r0\0") == b"OK\0"
    assert g.ok(XS.GET_PERMS, "data/p\0") == b"b5\0r0\0"
    for bad in ("data/p\0", "data/p\0x5\0", "data/p\0r\0", "data/p\0r5z\0", "data/p"):
        assert g.err(XS.SET_PERMS, bad) == "EINVAL", bad
    assert g.ok(XS.SET_PERMS, "data/p\0n5\0r0x0\0") == b"OK\0"        # strtol base 0
    assert g.err(XS.SET_PERMS, "data/p\0n9\0") == "ENOENT"            # owner domain doesn't exist
    # an entry for a domain that doesn't exist is kept but ignored (domain_alloc_permrefs)
    g.ok(XS.SET_PERMS, "data/p\0n5\0b9\0")
    assert d.store.nodes[f"{HOME}/data/p"].perms[1].perms & st.PERM_IGNORE
    assert g.ok(XS.GET_PERMS, "data/p\0") == b"n5\0b9\0"
    assert g.err(XS.SET_PERMS, "data/p\0n5\0r0\0r1\0r2\0r3\0") == "ENOSPC"   # ACC_NPERM: 5 reached
    assert dom0.ok(XS.SET_PERMS, f"{HOME}/data/p\0n0\0r5\0r1\0r2\0r3\0") == b"OK\0"   # not for dom0
    assert g.err(XS.WRITE, "data/p\0x") == "EACCES"                   # no longer the owner
    assert d_count(g, DOM) == 13                                       # counted for dom0 now
    assert g.err(XS.SET_PERMS, "@releaseDomain\0n5\0") == "EACCES"


def test_perm_strings():
    assert st.parse_perm(b"r-1") == st.Perm(st.PERM_READ, 0xFFFFFFFF)
    assert st.Perm(st.PERM_READ, 0xFFFFFFFF).to_string() == b"r-1"   # "%i", as xenstored
    assert st.parse_perm(b"b010").id == 8
    with pytest.raises(st.XsError):
        st.parse_perm(b"q1")


# ---------------------------------------------------------------- DIRECTORY_PART
def test_directory_part(dom0):
    names = [f"child-with-a-rather-long-name-{i:04d}" for i in range(200)]   # 7200 bytes of names
    for n in names:
        dom0.ok(XS.WRITE, f"/big/{n}\0")
    assert dom0.err(XS.DIRECTORY, "/big\0") == "E2BIG"       # core.c send_reply
    got, off, gens = [], 0, set()
    while True:
        r = dom0.ok(XS.DIRECTORY_PART, f"/big\0{off}\0")
        assert len(r) <= abi.XENSTORE_PAYLOAD_MAX
        gen, rest = r.split(b"\0", 1)
        gens.add(gen)
        if rest.endswith(b"\0\0") or rest == b"\0":
            got += [x.decode() for x in rest[:-2].split(b"\0") if x] if rest != b"\0" else []
            break
        got += [x.decode() for x in rest[:-1].split(b"\0")]
        off += len(rest)
    assert got == names and len(gens) == 1
    assert int(gens.pop()) == dom0.d.store.nodes["/big"].generation
    assert dom0.ok(XS.DIRECTORY_PART, "/big\0999999\0").endswith(b"\0\0")
    assert dom0.ok(XS.DIRECTORY_PART, "/big\0-1\0").endswith(b"\0\0")    # atoi -> huge unsigned
    assert dom0.err(XS.DIRECTORY_PART, "/big\0") == "EINVAL"
    assert dom0.err(XS.DIRECTORY_PART, "/big\0" "0\0" "x\0") == "EINVAL"
    # the generation changes with the children
    g1 = dom0.ok(XS.DIRECTORY_PART, "/big\0" "0\0").split(b"\0")[0]
    dom0.ok(XS.WRITE, "/big/new\0")
    assert dom0.ok(XS.DIRECTORY_PART, "/big\0" "0\0").split(b"\0")[0] != g1


# ---------------------------------------------------------------- transactions
def start(c: Client) -> int:
    r = c.ok(XS.TRANSACTION_START, "\0")
    assert r.endswith(b"\0")
    return int(r[:-1])


def test_transaction_private_view_and_commit(g, dom0):
    t = start(g)
    assert t != 0
    g.ok(XS.WRITE, "data/t\0in-tx", tx=t)
    assert g.ok(XS.READ, "data/t\0", tx=t) == b"in-tx"
    assert g.err(XS.READ, "data/t\0") == "ENOENT"                   # invisible outside
    assert dom0.err(XS.READ, f"{HOME}/data/t\0") == "ENOENT"
    g.ok(XS.RM, "feature\0", tx=t)
    assert g.err(XS.READ, "feature\0", tx=t) == "ENOENT"
    assert g.ok(XS.READ, "feature\0") == b""
    assert g.ok(XS.TRANSACTION_END, "T\0", tx=t) == b"OK\0"
    assert g.ok(XS.READ, "data/t\0") == b"in-tx"
    assert g.err(XS.READ, "feature\0") == "ENOENT"
    assert g.err(XS.READ, "data/t\0", tx=t) == "ENOENT"             # the id is gone


def test_transaction_conflict_and_abort(g, dom0):
    t = start(g)
    assert g.ok(XS.READ, "control/shutdown\0", tx=t) == b""
    g.ok(XS.WRITE, "data/result\0x", tx=t)
    dom0.ok(XS.WRITE, f"{HOME}/control/shutdown\0poweroff")         # what it read changed
    assert g.err(XS.TRANSACTION_END, "T\0", tx=t) == "EAGAIN"
    assert g.err(XS.READ, "data/result\0") == "ENOENT"               # nothing applied
    assert g.err(XS.TRANSACTION_END, "T\0", tx=t) == "ENOENT"        # and it's gone
    # a node read as missing, created meanwhile: conflict too
    t = start(g)
    assert g.err(XS.READ, "data/later\0", tx=t) == "ENOENT"
    dom0.ok(XS.WRITE, f"{HOME}/data/later\0")
    g.ok(XS.WRITE, "data/other\0", tx=t)
    assert g.err(XS.TRANSACTION_END, "T\0", tx=t) == "EAGAIN"
    # unrelated changes don't conflict
    t = start(g)
    g.ok(XS.READ, "data/later\0", tx=t)
    dom0.ok(XS.WRITE, f"{HOME}/memory/target\0" "1")
    g.ok(XS.WRITE, "data/other\0v", tx=t)
    assert g.ok(XS.TRANSACTION_END, "T\0", tx=t) == b"OK\0"
    # abort
    t = start(g)
    g.ok(XS.WRITE, "data/aborted\0", tx=t)
    assert g.ok(XS.TRANSACTION_END, "F\0", tx=t) == b"OK\0"
    assert g.err(XS.READ, "data/aborted\0") == "ENOENT"


def test_transaction_errors_and_limit(g):
    assert g.err(XS.READ, "name\0", tx=1234) == "ENOENT"
    assert g.err(XS.TRANSACTION_END, "T\0") == "ENOENT"
    t = start(g)
    assert g.err(XS.TRANSACTION_START, "\0", tx=t) == "EBUSY"
    assert g.err(XS.TRANSACTION_END, "X\0", tx=t) == "EINVAL"
    assert g.err(XS.TRANSACTION_END, "T", tx=t) == "EINVAL"
    ids = {t} | {start(g) for _ in range(8)}                          # 9 open: quota 10 reached next
    assert len(ids) == 9 and 0 not in ids
    assert g.err(XS.TRANSACTION_START, "\0") == "ENOSPC"
    g.ok(XS.TRANSACTION_END, "F\0", tx=t)
    start(g)
    assert g.ok(XS.RESET_WATCHES) == b"OK\0"                          # also ends transactions
    assert not g.conn.transactions


def test_transaction_node_quota():
    d = XenstoreDaemon()
    g = domu(d, quotas=Quotas(transaction_nodes=10))
    t = start(g)
    tx = g.conn.transactions[t]
    g.ok(XS.WRITE, "data/n\0", tx=t)                 # accesses data/n, data (and its parents)
    i = 0
    while len(tx.accessed) < 9:
        g.err(XS.READ, f"data/r{i}\0", tx=t)          # a read of a missing node is recorded too
        i += 1
    assert g.err(XS.READ, "data/one-more\0", tx=t) == "ENOSPC"        # ACC_TRANSNODES: 10 reached
    assert g.err(XS.TRANSACTION_END, "T\0", tx=t) == "ENOMEM"        # failed, as xenstored
    assert g.err(XS.READ, "data/n\0") == "ENOENT"


# ---------------------------------------------------------------- watches
def test_watch_initial_event_and_subtree(d, g, dom0):
    assert g.events(XS.WATCH, "control\0ctl\0") == [("control", "ctl")]          # relative stays
    assert g.events(XS.WATCH, f"{HOME}/data\0abs\0") == [(f"{HOME}/data", "abs")]
    assert g.err(XS.WATCH, "control\0ctl\0") == "EEXIST"
    dom0.ok(XS.WRITE, f"{HOME}/control/shutdown\0poweroff")
    assert g.queued() == [("control/shutdown", "ctl")]
    assert d.take_dirty() == [g.conn]
    dom0.ok(XS.WRITE, f"{HOME}/memory/target\0" "1")                               # not watched
    assert g.queued() == []
    assert g.events(XS.WRITE, "data/a/b\0v") == [(f"{HOME}/data/a/b", "abs")]   # own watch, own write
    assert g.events(XS.WRITE, "data\0") == [(f"{HOME}/data", "abs")]
    # a watch below hears its node's removal when an ancestor goes (exact match)
    g.events(XS.WATCH, "data/a/b\0deep\0")
    ev = g.events(XS.RM, "data/a\0")
    assert ("data/a/b", "deep") in ev and (f"{HOME}/data/a", "abs") in ev
    assert ("data/a", "deep") not in ev
    # duplicates pending in the queue are not queued twice (core.c send_event)
    dom0.ok(XS.WRITE, f"{HOME}/control/shutdown\0x")
    dom0.ok(XS.WRITE, f"{HOME}/control/shutdown\0y")
    assert g.queued() == [("control/shutdown", "ctl")]
    # unwatch
    assert g.ok(XS.UNWATCH, "control\0ctl\0") == b"OK\0"
    assert g.err(XS.UNWATCH, "control\0ctl\0") == "ENOENT"
    assert g.err(XS.UNWATCH, "control\0") == "EINVAL"
    dom0.ok(XS.WRITE, f"{HOME}/control/shutdown\0z")
    assert g.queued() == []
    assert g.ok(XS.RESET_WATCHES) == b"OK\0" and not g.conn.watches


def test_watch_permissions(d, g, dom0):
    """watch.c watch_permitted: no events about nodes the watcher can't read."""
    other = domu(d, 6)
    g.events(XS.WATCH, "/\0all\0")
    other.ok(XS.WRITE, "data/secret\0s")
    assert g.queued() == []
    other.ok(XS.SET_PERMS, "data/secret\0n6\0r5\0")
    assert g.queued() == [("/local/domain/6/data/secret", "all")]
    dom0.ok(XS.WRITE, f"{HOME}/control/shutdown\0poweroff")
    assert g.queued() == [(f"{HOME}/control/shutdown", "all")]


def test_watch_fires_at_commit(g, dom0):
    g.events(XS.WATCH, "data\0w\0")
    dom0.events(XS.WATCH, f"{HOME}/data\0vmm\0")
    t = start(g)
    assert g.events(XS.WRITE, "data/x\0v", tx=t) == []
    assert g.events(XS.WRITE, "data/y\0v", tx=t) == []
    assert dom0.queued() == []
    ev = g.events(XS.TRANSACTION_END, "T\0", tx=t)
    assert ("data/x", "w") in ev and ("data/y", "w") in ev
    assert (f"{HOME}/data/x", "vmm") in dom0.queued()
    t = start(g)
    g.ok(XS.WRITE, "data/z\0v", tx=t)
    assert g.events(XS.TRANSACTION_END, "F\0", tx=t) == []


def test_special_watches(d, g, dom0):
    assert g.events(XS.WATCH, "@releaseDomain\0rel\0") == [("@releaseDomain", "rel")]
    g.events(XS.WATCH, "@introduceDomain\0intro\0")
    dom0.events(XS.WATCH, "@introduceDomain\0intro\0")
    dom0.events(XS.WATCH, "@releaseDomain/7\0rel7\0")
    d.introduce(7)
    assert dom0.queued() == [("@introduceDomain", "intro")]
    assert g.queued() == []                        # @introduceDomain is the privileged domain's
    assert dom0.ok(XS.IS_DOMAIN_INTRODUCED, "7\0") == b"T\0"
    assert dom0.events(XS.RELEASE, "7\0") == [("@releaseDomain/7", "rel7")]
    assert g.queued() == [("@releaseDomain", "rel")]          # readable by any domain
    assert dom0.ok(XS.IS_DOMAIN_INTRODUCED, "7\0") == b"F\0"
    assert dom0.err(XS.RELEASE, "7\0") == "ENOENT"
    assert dom0.err(XS.RELEASE, "0\0") == "EINVAL"
    assert dom0.ok(XS.INTRODUCE, "8\0" "1234\0" "3\0") == b"OK\0"
    assert dom0.err(XS.INTRODUCE, "8\0" "1234\0" "0\0") == "EINVAL"
    assert dom0.err(XS.INTRODUCE, "8\0" "1234\0") == "EINVAL"


def test_release_removes_the_domains_nodes(d, g, dom0):
    g.ok(XS.WRITE, "data/mine\0")
    other = domu(d, 6)
    other.ok(XS.SET_PERMS, "data\0n6\0r5\0")
    d.release(DOM)
    assert dom0.err(XS.READ, f"{HOME}/data\0") == "ENOENT"               # owned by 5: removed
    assert dom0.ok(XS.READ, f"{HOME}/name\0") == b"guest5"               # dom0's stays
    assert dom0.ok(XS.GET_PERMS, f"{HOME}/name\0") == b"n0\0"            # without 5's entry
    assert dom0.ok(XS.GET_PERMS, "/local/domain/6/data\0") == b"n6\0"
    assert d.store.node_counts[DOM] == 0


def test_watch_quota_and_args(g):
    assert g.err(XS.WATCH, "data\0") == "EINVAL"
    assert g.err(XS.WATCH, "data\0t\0" "1\0") == "EINVAL"        # no WATCHDEPTH offered
    assert g.err(XS.WATCH, "da ta\0t\0") == "EINVAL"
    for i in range(127):
        g.ok(XS.WATCH, f"data\0{i}\0")
    assert g.err(XS.WATCH, "data\0x\0") == "ENOSPC"              # ACC_WATCH: 128 reached


def test_event_queue_is_bounded():
    d = XenstoreDaemon()
    g = domu(d, quotas=Quotas(event_bytes=1000))
    dom0 = Client(d, d.vmm)
    g.events(XS.WATCH, "/local\0w\0")
    for i in range(100):
        dom0.ok(XS.WRITE, f"{HOME}/memory/n{i}\0")
    assert 0 < len(g.conn.outq) < 100 and g.conn.dropped_events > 0
    assert sum(map(len, g.conn.outq)) <= 1000


# ---------------------------------------------------------------- quotas
def test_node_quota():
    d = XenstoreDaemon()
    g = domu(d, quotas=Quotas(nodes=30))
    n = d_count(g, DOM)
    assert n == 13
    for i in range(30 - n - 1):
        g.ok(XS.WRITE, f"data/{i}\0")
    assert g.err(XS.WRITE, "data/last\0") == "ENOSPC"          # 30 reached
    assert g.err(XS.WRITE, "data/a/b\0") == "ENOSPC"
    g.ok(XS.RM, "data/0\0")
    g.ok(XS.WRITE, "data/last\0")
    # in a transaction: counted with what it created
    g.ok(XS.RM, "data/1\0")
    t = start(g)
    g.ok(XS.WRITE, "data/t\0", tx=t)
    assert g.err(XS.WRITE, "data/t2\0", tx=t) == "ENOSPC"
    assert g.ok(XS.TRANSACTION_END, "T\0", tx=t) == b"OK\0"
    Client(d, d.vmm).ok(XS.WRITE, "/dom0/lots/of/nodes/are/fine\0")


def test_node_size_quota(g, dom0):
    """ACC_NODESZ 2048 on calc_node_acc_size (16-byte header, 8 per permission, the value
    and the children's names)."""
    limit = 2048 - 16 - 8
    assert g.ok(XS.WRITE, "data/v\0" + "x" * (limit - 1)) == b"OK\0"
    assert g.err(XS.WRITE, "data/v\0" + "x" * limit) == "ENOSPC"
    assert g.ok(XS.READ, "data/v\0") == b"x" * (limit - 1)
    assert dom0.ok(XS.WRITE, f"{HOME}/data/v\0" + "x" * 4000) == b"OK\0"   # not for dom0


# ---------------------------------------------------------------- malformed requests
def test_malformed(d, g):
    assert g.err(XS.READ, "name") == "EINVAL"                   # no NUL
    assert g.err(XS.READ, "name\0\0") == "EINVAL"               # two
    assert g.err(XS.READ, "") == "EINVAL"
    assert g.err(XS.WRITE, "name") == "EINVAL"
    assert g.err(XS.MKDIR, "a\0b\0") == "EINVAL"
    for t in (XS.WATCH_EVENT, XS.ERROR, 20, 27, 1000, XS.INVALID):
        assert g.err(t, "name\0") == "ENOSYS", t
    for t in (XS.INTRODUCE, XS.RELEASE, XS.IS_DOMAIN_INTRODUCED, XS.CONTROL, XS.RESUME, XS.SET_TARGET,
              XS.SET_FEATURE, XS.GET_QUOTA, XS.SET_QUOTA):
        assert g.err(t, "5\0") == "EACCES", t
    # headers: too short, len disagreeing, len over the maximum
    for raw in (b"", b"\x02\0\0", message(XS.READ, 9, 0, b"name\0")[:-1] + b"",
                message(XS.READ, 9, 0, b"x" * 4097)):
        out = g.raw(raw)
        assert len(out) == 1 and out[0][0] == XS.ERROR and out[0][3] == b"EINVAL\0"
    hdr = abi.xsd_sockmsg.abi64.build(dict(type=XS.READ, req_id=3, tx_id=0, len=0xFFFFFFFF))
    assert g.raw(hdr + b"name\0")[0][:2] == (XS.ERROR, 3)


def test_control_for_dom0(dom0):
    assert dom0.ok(XS.CONTROL, "check\0") == b"OK\0"
    assert b"help" in dom0.ok(XS.CONTROL, "help\0")
    assert dom0.err(XS.CONTROL, "live-update\0") == "EINVAL"
    assert dom0.err(XS.SET_TARGET, "1\0" "2\0") == "ENOSYS"


# ---------------------------------------------------------------- populate
def test_populate_like_libxl(d):
    g = Client(d, d.introduce(DOM))
    populate_domain(d, DomainInfo(domid=DOM, name="vm", max_memkb=524288, target_memkb=500000,
                                  store_port=3, store_ring_ref=0xFEFFC, vcpus=3, uuid="1234",
                                  console=PvConsole(port=4, ring_ref=0xFEFFD)))
    dom0 = Client(d, d.vmm)
    r = lambda p: dom0.ok(XS.READ, f"{HOME}/{p}\0")        # noqa: E731
    assert (r("name"), r("domid"), r("vm"), r("memory/static-max"), r("memory/target"), r("store/port"),
            r("store/ring-ref"), r("cpu/2/availability")) == \
        (b"vm", b"5", b"/vm/1234", b"524288", b"500000", b"3", str(0xFEFFC).encode(), b"online")
    assert r("control/platform-feature-xs_reset_watches") == b"1"
    assert dom0.ok(XS.GET_PERMS, f"{HOME}\0") == b"n0\0r5\0"
    assert dom0.ok(XS.GET_PERMS, f"{HOME}/control/shutdown\0") == b"n5\0"
    assert (r("console/port"), r("console/ring-ref"), r("console/type"), r("console/limit")) == \
        (b"4", str(0xFEFFD).encode(), b"xenconsoled", b"1048576")
    assert dom0.ok(XS.READ, f"/local/domain/0/backend/console/{DOM}/0/frontend\0") == f"{HOME}/console".encode()
    # what a Linux guest does at boot: read its features, write control/feature-*, watch shutdown
    assert g.ok(XS.WRITE, "control/feature-poweroff\0" "1") == b"OK\0"
    assert g.events(XS.WATCH, "control/shutdown\0shutdown\0") == [("control/shutdown", "shutdown")]
    assert g.err(XS.WRITE, "console/port\0" "9") == "EACCES"
    assert g.ok(XS.WRITE, "device/suspend/event-channel\0" "7") == b"OK\0"
    d.write(f"{HOME}/control/shutdown", "poweroff")
    assert g.queued() == [("control/shutdown", "shutdown")]
    assert d.read(f"{HOME}/control/feature-poweroff") == b"1" and d.read("/nope") is None


def test_trace_points(d, g):
    buf = io.StringIO()
    trace.set_sink(buf)
    trace.enable("xen.xenstore.*")
    try:
        g.events(XS.WATCH, "data\0tok\0")
        g.err(XS.READ, "nope\0")
    finally:
        trace.disable_all()
        trace.set_sink(__import__("sys").stderr)
    out = buf.getvalue()
    assert "xen.xenstore.req dom=5 WATCH path=data tx=0 OK" in out
    assert "xen.xenstore.req dom=5 READ path=nope tx=0 ENOENT" in out
    assert "xen.xenstore.watch_event dom=5 path=data token=tok" in out


# ---------------------------------------------------------------- the ring
PAGE_GPA = 0x3000


class PageMemory:
    """Guest memory as a bytearray (read/write as GuestMemory), bounds checked."""

    def __init__(self, size=0x8000):
        self.buf = bytearray(size)

    def read(self, gpa, n):
        assert 0 <= gpa and gpa + n <= len(self.buf), (gpa, n)
        return bytes(self.buf[gpa:gpa + n])

    def write(self, gpa, data):
        assert 0 <= gpa and gpa + len(data) <= len(self.buf), (gpa, len(data))
        self.buf[gpa:gpa + len(data)] = data


class GuestSide:
    """The guest's end of the ring (Linux xenbus_comms.c's job)."""

    def __init__(self, mem: PageMemory, gpa=PAGE_GPA):
        self.mem, self.gpa = mem, gpa
        self.got = bytearray()

    def get(self, f):
        return int.from_bytes(self.mem.read(self.gpa + OFF[f], 4), "little")

    def set(self, f, v):
        self.mem.write(self.gpa + OFF[f], (v & 0xFFFFFFFF).to_bytes(4, "little"))

    def send(self, data: bytes) -> int:
        """Put as much of ``data`` as fits in the request ring; bytes sent."""
        cons, prod = self.get("req_cons"), self.get("req_prod")
        n = min(len(data), 1024 - ((prod - cons) & 0xFFFFFFFF))
        for i in range(n):
            self.mem.write(self.gpa + OFF["req"] + ((prod + i) & 1023), data[i:i + 1])
        self.set("req_prod", prod + n)
        return n

    def receive(self) -> None:
        cons, prod = self.get("rsp_cons"), self.get("rsp_prod")
        for i in range((prod - cons) & 0xFFFFFFFF):
            self.got += self.mem.read(self.gpa + OFF["rsp"] + ((cons + i) & 1023), 1)
        self.set("rsp_cons", prod)

    def messages(self):
        out = []
        while len(self.got) >= HEADER_SIZE:
            t, r, x, _ = parse_message(bytes(self.got[:HEADER_SIZE]))
            ln = int.from_bytes(self.got[12:16], "little")
            if len(self.got) < HEADER_SIZE + ln:
                break
            out.append((t, r, x, bytes(self.got[HEADER_SIZE:HEADER_SIZE + ln])))
            del self.got[:HEADER_SIZE + ln]
        return out


def ring_setup(start_index=0):
    d = XenstoreDaemon()
    conn = d.introduce(DOM)
    populate_domain(d, DomainInfo(domid=DOM, name="guest5", max_memkb=1, target_memkb=1, store_port=1,
                                  store_ring_ref=3))
    mem = PageMemory()
    ring = XenstoreRing(d, conn, mem, PAGE_GPA)
    ring.start()
    gs = GuestSide(mem)
    for f in ("req_cons", "req_prod", "rsp_cons", "rsp_prod"):
        gs.set(f, start_index)
    return d, conn, ring, gs


def test_ring_request_response():
    d, conn, ring, gs = ring_setup()
    assert gs.get("server_features") == SERVER_FEATURES and gs.get("connection") == abi.XENSTORE_CONNECTED
    assert ring.process() is False                        # nothing to do
    gs.send(message(XS.READ, 42, 0, b"name\0") + message(XS.WATCH, 43, 0, b"control\0t\0"))
    assert ring.process() is True
    gs.receive()
    assert gs.messages() == [(XS.READ, 42, 0, b"guest5"), (XS.WATCH, 43, 0, b"OK\0"),
                             (XS.WATCH_EVENT, 0, 0, b"control\0t\0")]
    assert gs.get("req_cons") == gs.get("req_prod")
    # an event queued by the VMM's write reaches the ring on the next process()
    d.write(f"{HOME}/control/shutdown", "reboot")
    assert d.take_dirty() == [conn]
    assert ring.process() is True
    gs.receive()
    assert gs.messages() == [(XS.WATCH_EVENT, 0, 0, b"control/shutdown\0t\0")]


@pytest.mark.parametrize("start_index", [0, 1000, 0xFFFFFFF0, 0x7FFFFFFF])
def test_ring_wrap_and_split_messages(start_index):
    """Indexes free-running across 2^32; messages cut anywhere, wrapping the ring end."""
    d, conn, ring, gs = ring_setup(start_index)
    stream = b"".join(message(XS.WRITE, i, 0, b"data/k%d\0" % i + b"v" * (i * 37 % 300)) for i in range(40))
    pos = 0
    cuts = [1, 15, 16, 17, 3, 100, 999, 7, 1024, 500]
    k = 0
    while pos < len(stream):
        pos += gs.send(stream[pos:pos + cuts[k % len(cuts)]])
        k += 1
        ring.process()
        gs.receive()
    for _ in range(3):
        ring.process()
        gs.receive()
    msgs = gs.messages()
    assert [(m[0], m[1], m[3]) for m in msgs] == [(XS.WRITE, i, b"OK\0") for i in range(40)]
    for i in range(40):
        assert d.read(f"{HOME}/data/k{i}") == b"v" * (i * 37 % 300)


def test_ring_backlog_when_guest_does_not_read():
    """Answers wait while the response ring is full; at most `outstanding` replies are
    pending before requests stay unread (domain.c domain_can_read)."""
    d, conn, ring, gs = ring_setup()
    big = b"x" * 1500
    d.write(f"{HOME}/data/big", big)
    req = message(XS.READ, 1, 0, b"data/big\0")
    sent = 0
    for _ in range(40):
        if gs.send(req) == 0:
            break
        sent += 1
        ring.process()
    assert ring.outstanding == conn.quotas.outstanding
    assert (gs.get("req_prod") - gs.get("req_cons")) & 0xFFFFFFFF > 0     # left unread
    assert gs.get("rsp_prod") - gs.get("rsp_cons") == 1024                  # full
    got = []
    for _ in range(200):
        gs.receive()
        got += gs.messages()
        ring.process()
    assert len(got) == sent and all(m == (XS.READ, 1, 0, big) for m in got)
    assert ring.outstanding == 0


@pytest.mark.parametrize("which", ["req", "rsp"])
def test_ring_bogus_indexes(which):
    d, conn, ring, gs = ring_setup()
    gs.send(message(XS.WATCH, 1, 0, b"data\0t\0"))
    ring.process()
    gs.receive()
    assert conn.watches
    gs.set(f"{which}_prod", gs.get(f"{which}_cons") + 1025)            # prod - cons > ring size
    if which == "rsp":
        d.write(f"{HOME}/data/x", "1")                                 # output to write
    ring.process()
    assert gs.get("error") == abi.XENSTORE_ERROR_RINGIDX
    assert not conn.watches                                             # dropped, as xenstored
    gs.set("req_prod", gs.get("req_cons"))
    gs.send(message(XS.READ, 2, 0, b"name\0"))
    assert ring.process() is False                                      # ignored until reconnect
    # reconnection (xenstore-ring.txt)
    gs.set("connection", abi.XENSTORE_RECONNECT)
    assert ring.process() is True
    assert gs.get("connection") == abi.XENSTORE_CONNECTED and gs.get("error") == 0
    assert [gs.get(f) for f in ("req_cons", "req_prod", "rsp_cons", "rsp_prod")] == [0, 0, 0, 0]
    gs.got.clear()
    gs.send(message(XS.READ, 3, 0, b"name\0"))
    assert ring.process() is True
    gs.receive()
    assert gs.messages() == [(XS.READ, 3, 0, b"guest5")]


def test_ring_payload_too_long_is_a_protocol_error():
    d, conn, ring, gs = ring_setup()
    hdr = abi.xsd_sockmsg.abi64.build(dict(type=XS.READ, req_id=1, tx_id=0, len=4097))
    gs.send(hdr + b"x" * 100)
    ring.process()
    assert gs.get("error") == abi.XENSTORE_ERROR_PROTO
    gs.receive()
    assert gs.messages() == []


def test_ring_reconnect_drops_state():
    d, conn, ring, gs = ring_setup()
    gs.send(message(XS.WATCH, 1, 0, b"data\0t\0") + message(XS.TRANSACTION_START, 2, 0, b"\0"))
    gs.send(message(XS.READ, 3, 0, b"na"))                              # a partial request
    ring.process()
    assert conn.watches and conn.transactions
    gs.set("connection", abi.XENSTORE_RECONNECT)
    assert ring.process() is True
    assert not conn.watches and not conn.transactions and ring.reconnections == 1
    assert gs.mem.read(PAGE_GPA, 1024) == b"\xff" * 1024
    gs.got.clear()
    gs.send(message(XS.READ, 4, 0, b"name\0"))
    ring.process()
    gs.receive()
    assert gs.messages() == [(XS.READ, 4, 0, b"guest5")]


# ---------------------------------------------------------------- snapshots
def _through_a_snapshot(d, mem):
    """Save ``d``'s state as a snapshot would (JSON, bytes as base64), then restore it into
    a daemon built as the toolstack builds one, over the same guest memory."""
    from vmm.snapshot import decode, encode
    from xen.xenstore import snapshot as xs_snapshot
    state = decode(json.loads(json.dumps(encode(xs_snapshot.save(d)))))
    d2, conn2, ring2, _ = ring_setup()
    ring2.mem = mem                       # the restored run's memory is the saved one
    xs_snapshot.restore(d2, state)
    assert decode(json.loads(json.dumps(encode(xs_snapshot.save(d2))))) == state
    return d2, conn2, ring2


def test_the_daemon_survives_a_snapshot():
    """The tree, a watch, two open transactions, events queued for the guest and a request
    cut in two by the snapshot all come back: the request completes, one transaction
    commits, the other conflicts, the watch fires, the queued event is delivered."""
    d, conn, ring, gs = ring_setup()
    gs.send(message(XS.WATCH, 1, 0, b"data\0tok\0") + message(XS.WRITE, 2, 0, b"data/a\0one")
            + message(XS.WRITE, 11, 0, b"data/other/c\0zero")
            + message(XS.TRANSACTION_START, 3, 0, b"\0") + message(XS.TRANSACTION_START, 4, 0, b"\0"))
    ring.process()
    gs.receive()
    tx = {r: int(p[:-1]) for t, r, _, p in gs.messages() if t == XS.TRANSACTION_START}
    gs.send(message(XS.READ, 5, tx[3], b"data/other/b\0") + message(XS.WRITE, 6, tx[3], b"data/other/c\0three")
            + message(XS.READ, 7, tx[4], b"data/a\0"))
    ring.process()
    gs.receive()
    got = gs.messages()
    assert [m[0] for m in got] == [XS.ERROR, XS.WRITE, XS.READ], got
    d.write(f"{HOME}/data/q", "queued")               # an event waiting on the connection
    d.take_dirty()
    half = message(XS.WRITE, 8, 0, b"data/a\0two")
    gs.send(half[:20])                                # the header and 4 bytes of payload
    ring.process()

    d2, conn2, ring2 = _through_a_snapshot(d, gs.mem)
    assert d2.read(f"{HOME}/data/a") == b"one" and ring2._want == len(half) - 20
    gs.send(half[20:])
    ring2.process()
    gs.receive()
    got = gs.messages()
    assert (XS.WATCH_EVENT, 0, 0, b"data/q\0tok\0") in got and (XS.WRITE, 8, 0, b"OK\0") in got, got
    assert (XS.WATCH_EVENT, 0, 0, b"data/a\0tok\0") in got, got
    gs.send(message(XS.TRANSACTION_END, 9, tx[3], b"T\0") + message(XS.TRANSACTION_END, 10, tx[4], b"T\0"))
    ring2.process()
    gs.receive()
    got = [m for m in gs.messages() if m[0] != XS.WATCH_EVENT]
    assert got == [(XS.TRANSACTION_END, 9, tx[3], b"OK\0"), (XS.ERROR, 10, tx[4], b"EAGAIN\0")], got
    assert d2.read(f"{HOME}/data/other/c") == b"three"


@pytest.mark.parametrize("spoil", ["orphan", "missing child", "no root", "ring", "connections", "generation"])
def test_a_spoiled_daemon_state_is_refused_whole(spoil):
    from xen.xenstore import snapshot as xs_snapshot
    d, conn, ring, gs = ring_setup()
    state = xs_snapshot.save(d)
    nodes = state["nodes"]
    if spoil == "orphan":
        nodes.append(["/nowhere/x", b"", [], [[0, 0]], 1])
    elif spoil == "missing child":
        next(n for n in nodes if n[0] == "/")[2].append("ghost")
    elif spoil == "no root":
        state["nodes"] = [n for n in nodes if n[0] != "/"]
    elif spoil == "ring":
        state["connections"][str(DOM)]["ring"]["out_replies"] = [True]
    elif spoil == "connections":
        state["connections"]["7"] = state["connections"][str(DOM)]
    else:
        state["generation"] = 1
    d2, conn2, ring2, _ = ring_setup()
    before = dict(d2.store.nodes)
    with pytest.raises(ValueError):
        xs_snapshot.restore(d2, state)
    assert d2.store.nodes == before
