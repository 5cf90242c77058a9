"""The xenstore daemon's state in a snapshot (ARCHITECTURE.md "Snapshots").

Primary, saved: the node table (value, children in order, permissions,
generation) and the generation counter; per guest connection its quotas, watches,
open transactions (each accessed node as the transaction saw it, so a commit after
the restore detects the same conflicts it would have) and the events queued for
it; per ring the request being reassembled and the answers not yet in the ring
(the ring's indexes and bytes are guest memory).  Derived, recomputed: the
per-owner node counts (from the owners in the table) and the bytes of queued
events.

What a snapshot names is checked as far as a guest could have made it (paths,
permission entries, the tree's shape): a file that passed its CRC but holds
something else is refused (ValueError), never half-loaded into the daemon.
"""

from __future__ import annotations

from collections import deque

from .daemon import HEADER_SIZE, PAYLOAD_MAX
from .store import NO_GENERATION, ROOT, Node, Perm, Quotas, Store, child_path
from .transactions import Transaction, _Access
from .watches import Watch


def _node(n: Node) -> list:
    return [n.name, n.data, list(n.children), [list(p) for p in n.perms], n.generation]


def _unnode(raw: list) -> Node:
    name, data, children, perms, generation = raw
    if not isinstance(name, str) or not isinstance(data, bytes) or not isinstance(generation, int):
        raise ValueError(f"xenstore node {name!r}")
    if not perms or any(not isinstance(c, str) or not c or "/" in c for c in children):
        raise ValueError(f"xenstore node {name}: children or permissions")
    return Node(name, data, tuple(children), tuple(Perm(int(p), int(d)) for p, d in perms), generation)


def _access(a: _Access) -> dict:
    return {"generation": a.generation, "check_gen": a.check_gen, "modified": a.modified,
            "node": None if a.node is None else _node(a.node),
            "old_perms": None if a.old_perms is None else [list(p) for p in a.old_perms], "fire": a.fire}


def _unaccess(raw: dict) -> _Access:
    return _Access(generation=int(raw["generation"]), check_gen=bool(raw["check_gen"]),
                   modified=bool(raw["modified"]), node=None if raw["node"] is None else _unnode(raw["node"]),
                   old_perms=None if raw["old_perms"] is None else tuple(Perm(int(p), int(d)) for p, d in raw["old_perms"]),
                   fire=int(raw["fire"]))


def save(daemon) -> dict:
    """The daemon's primary state (caller: vCPUs paused; the daemon's lock is taken)."""
    with daemon.lock:
        conns = {}
        for domid, c in daemon.connections.items():
            if c is daemon.vmm:
                continue
            ring = c.ring
            conns[str(domid)] = {
                "quotas": vars(c.quotas), "features": c.features, "next_tx_id": c.next_tx_id,
                "watches": [[w.path, w.token, w.prefix_len] for w in c.watches],
                "transactions": [{"id": t.id, "generation": t.generation, "fail": t.fail,
                                  "node_created": t.node_created, "count_delta": [[d, n] for d, n in t.count_delta.items()],
                                  "accessed": [[name, _access(a)] for name, a in t.accessed.items()]}
                                 for t in c.transactions.values()],
                "outq": list(c.outq), "dropped_events": c.dropped_events,
                "ring": None if ring is None else {
                    "in": bytes(ring._in), "want": ring._want, "out": list(ring._out), "out_off": ring._out_off,
                    "out_replies": list(ring._out_replies), "error": ring.error, "reconnections": ring.reconnections},
            }
        return {"generation": daemon.store.generation,
                "nodes": [_node(n) for n in daemon.store.nodes.values()], "connections": conns}


def _check_tree(nodes: dict[str, Node]) -> None:
    """Every node but the root and the specials hangs from its parent's children, and
    every child named exists: the shape every operation relies on."""
    if ROOT not in nodes:
        raise ValueError("xenstore: no root node")
    reached = set()
    todo = [ROOT]
    while todo:
        name = todo.pop()
        if name in reached:
            raise ValueError(f"xenstore: {name} reached twice")
        reached.add(name)
        for c in nodes[name].children:
            child = child_path(name, c)
            if child not in nodes:
                raise ValueError(f"xenstore: {name} names a missing child {c}")
            todo.append(child)
    stray = [n for n in nodes if n not in reached and not n.startswith("@")]
    if stray:
        raise ValueError(f"xenstore: nodes outside the tree: {', '.join(sorted(stray)[:3])}")


def restore(daemon, state: dict) -> None:
    """Into a daemon just built with the same guest connections (the toolstack's; each
    guest's ring wired): the saved state replaces what the build populated."""
    nodes = {}
    for raw in state["nodes"]:
        n = _unnode(raw)
        nodes[n.name] = n
    _check_tree(nodes)
    generation = int(state["generation"])
    if any(n.generation > generation and n.generation != NO_GENERATION for n in nodes.values()):
        raise ValueError("xenstore: a node newer than the store's generation")
    saved = state["connections"]
    with daemon.lock:
        guests = {str(d): c for d, c in daemon.connections.items() if c is not daemon.vmm}
        if sorted(saved) != sorted(guests):
            raise ValueError(f"xenstore connections: saved {sorted(saved)}, built {sorted(guests)}")
        store: Store = daemon.store
        restored = {}
        for key, raw in saved.items():
            c = guests[key]
            quotas = Quotas(**raw["quotas"])
            watches = [Watch(str(p), bytes(t), int(n)) for p, t, n in raw["watches"]]
            transactions = {}
            for t in raw["transactions"]:
                tx = Transaction.__new__(Transaction)     # not __init__: it would take a generation
                tx.store, tx.id, tx.caller = store, int(t["id"]), c
                tx.generation, tx.fail, tx.node_created = int(t["generation"]), bool(t["fail"]), bool(t["node_created"])
                tx.count_delta = {int(d): int(n) for d, n in t["count_delta"]}
                tx.accessed = {str(name): _unaccess(a) for name, a in t["accessed"]}
                transactions[tx.id] = tx
            outq = deque(bytes(m) for m in raw["outq"])
            ring = raw["ring"]
            if (ring is None) != (c.ring is None):
                raise ValueError(f"xenstore dom{key}: a ring saved and none built, or the reverse")
            if ring is not None:
                out = [bytes(m) for m in ring["out"]]
                if len(ring["out_replies"]) != len(out) or not 0 <= int(ring["out_off"]) <= len(out[0] if out else b""):
                    raise ValueError(f"xenstore dom{key}: ring output")
                if not 0 < int(ring["want"]) <= PAYLOAD_MAX or len(ring["in"]) >= HEADER_SIZE + PAYLOAD_MAX:
                    raise ValueError(f"xenstore dom{key}: ring input")
            restored[key] = (quotas, watches, transactions, outq, ring)
        # Checked whole: now replace.
        store.nodes = nodes
        store.generation = generation
        store.node_counts = {}
        for n in nodes.values():
            store.count_nodes(n.owner, 1)
        for key, (quotas, watches, transactions, outq, ring) in restored.items():
            c, raw = guests[key], saved[key]
            c.quotas, c.features, c.next_tx_id = quotas, int(raw["features"]), int(raw["next_tx_id"])
            c.watches, c.transactions, c.outq = watches, transactions, outq
            c.event_bytes = sum(len(m) for m in outq)
            c.dropped_events = int(raw["dropped_events"])
            if ring is not None:
                r = c.ring
                r._in, r._want = bytearray(ring["in"]), int(ring["want"])
                r._out, r._out_off = deque(bytes(m) for m in ring["out"]), int(ring["out_off"])
                r._out_replies = deque(bool(x) for x in ring["out_replies"])
                r.outstanding = sum(r._out_replies)
                r.error, r.reconnections = int(ring["error"]), int(ring["reconnections"])
