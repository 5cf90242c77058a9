"""Watches: which connections hear about a change (tools/xenstored/watch.c).

A watch is (path, token) on a connection.  A change to a node fires, in every
connection allowed to see it, each watch whose path is the node or one of its
ancestors (``MATCH_SUBTREE``; a removal fires the removed nodes below the removed one
*exactly*: a watch on /a/b hears about /a/b when /a goes, not about /a).  The event
is an XS_WATCH_EVENT message "path\\0token\\0" (req_id and tx_id 0), its path made
relative again for a watch set with a relative path.  Special watches
``@introduceDomain`` and ``@releaseDomain`` fire on those domain events only, also
as ``@releaseDomain/<domid>`` for a watch on exactly that.

A watcher may see the event if it can read the node (before or after a permission
change) or its parent (watch.c ``watch_permitted``).  Depth-limited watches
(XENSTORE_SERVER_FEATURE_WATCHDEPTH) are not offered, so every watch is depth -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from .store import PERM_READ, Node, Perm, Store, get_parent, is_child, perm_for


@dataclass(frozen=True)
class Watch:
    """A watch one connection set on a path, with its token."""
    path: str           # canonical: absolute or @special
    token: bytes
    prefix_len: int     # watch.c prefix_len: strip "/local/domain/<id>/" for a relative watch

    def event_path(self, name: str) -> str:
        return name[self.prefix_len:]


def watch_permitted(store: Store, conn, name: str, node: Node | None,
                    old_perms: tuple[Perm, ...] | None) -> bool:
    """watch.c ``watch_permitted``: the old permissions, the node (read from the store
    if not given) or its parent grants the watcher read access."""
    if old_perms is not None and perm_for(conn, old_perms) & PERM_READ:
        return True
    if node is None:
        node = store.nodes.get(name)
        if node is None:
            return False
    if perm_for(conn, node.perms) & PERM_READ:
        return True
    parent = store.nodes.get(get_parent(node.name))
    return parent is not None and bool(perm_for(conn, parent.perms) & PERM_READ)


def fire_watches(store: Store, connections: Iterable, name: str, subtree: bool,
                 node: Node | None, old_perms, send: Callable[[object, str, bytes], None]) -> None:
    """watch.c ``fire_watches`` with MATCH_SUBTREE (``subtree``) or MATCH_EXACT."""
    for conn in connections:
        if not conn.watches or not watch_permitted(store, conn, name, node, old_perms):
            continue
        for w in list(conn.watches):
            if (is_child(name, w.path) if subtree else name == w.path):
                send(conn, w.event_path(name), w.token)


def fire_special(store: Store, connections: Iterable, special: str, domid: int,
                 send: Callable[[object, str, bytes], None]) -> None:
    """domain.c ``fire_special_watches(name, domid, WATCH_BOTH)``: watches on exactly
    ``special`` (MATCH_NODEPTH), and on exactly ``special/<domid>`` (MATCH_DEPTH with
    no depth), permission checked against the special node."""
    node = store.nodes.get(special)
    if node is None:
        return
    with_dom = f"{special}/{domid}"
    for conn in connections:
        if not conn.watches or not watch_permitted(store, conn, special, node, None):
            continue
        for w in list(conn.watches):
            if w.path == special:
                send(conn, special, w.token)
            elif w.path == with_dom:
                send(conn, with_dom, w.token)
