"""Transactions: a private overlay on the store, committed if nothing it read changed.

tools/xenstored/transaction.c (its long comment is the design): a transaction records
every node it accesses.  The first access being a read records the node's generation
(``NO_GENERATION`` if it didn't exist) for checking; writes and deletes go to the
overlay and stamp a new generation.  At commit (TRANSACTION_END "T") every recorded
read is compared with the global store: any difference is EAGAIN and nothing is
applied.  Otherwise the overlay's nodes replace the global ones (each with a fresh
generation), deletions are applied, and the watch events queued in the transaction
fire.  Nodes written without being read first are not checked: the transaction's
value wins, as in xenstored.

Limits as xenstored: ``transactions`` open per domain (ENOSPC at start), nodes
accessed per transaction (``transaction_nodes``: ENOSPC, and the transaction is
failed so that committing it answers ENOMEM, as there), and the node quota checked
again at commit for what the transaction created (ENOSPC).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .store import NO_GENERATION, Caller, E, Node, Perm, Store, View, XsError


@dataclass
class _Access:
    """A transaction's record of one node it read or wrote."""
    generation: int = 0                # at the first read, or NO_GENERATION
    check_gen: bool = False            # first access was a read
    modified: bool = False
    node: Node | None = None           # the transaction's version (None: absent)
    old_perms: tuple[Perm, ...] | None = None   # at the first access, if the node existed
    fire: int = 0                      # 0 none, 1 exact, 2 subtree (subtree wins)


FIRE_EXACT, FIRE_SUBTREE = 1, 2


@dataclass
class Transaction(View):
    """An open xenstore transaction: its accesses, checked at commit."""
    store: Store
    id: int
    caller: Caller
    generation: int = 0
    accessed: dict[str, _Access] = field(default_factory=dict)
    count_delta: dict[int, int] = field(default_factory=dict)
    fail: bool = False
    node_created: bool = False

    def __post_init__(self):
        self.generation = self.store.next_generation()

    def _access(self, name: str, reading: bool) -> _Access:
        a = self.accessed.get(name)
        if a is not None:
            return a
        if self.caller.exceeds("transaction_nodes", len(self.accessed) + 1):
            self.fail = True
            raise XsError(E.ENOSPC, "transaction node quota")
        glob = self.store.nodes.get(name)
        a = _Access(node=glob, old_perms=glob.perms if glob is not None else None)
        if reading:
            a.check_gen = True
            a.generation = glob.generation if glob is not None else NO_GENERATION
        self.accessed[name] = a
        return a

    # View
    def read(self, name: str) -> Node | None:
        return self._access(name, True).node

    def write(self, node: Node) -> Node:
        a = self._access(node.name, False)
        a.node = node = node.replace(generation=self.store.next_generation())
        a.modified = True
        return node

    def delete(self, node: Node) -> None:
        a = self._access(node.name, False)
        a.node = None
        a.modified = True

    def changed(self, name, subtree, node, old_perms) -> None:
        """transaction.c ``queue_watches``: fire at commit; subtree replaces exact."""
        a = self.accessed.get(name)
        if a is None:
            self.fail = True
            return
        a.fire = max(a.fire, FIRE_SUBTREE if subtree else FIRE_EXACT)

    def node_count(self, domid: int) -> int:
        return self.store.node_counts.get(domid, 0) + self.count_delta.get(domid, 0)

    def count_nodes(self, domid: int, delta: int) -> None:
        self.count_delta[domid] = self.count_delta.get(domid, 0) + delta

    def created(self) -> None:
        self.node_created = True

    # TRANSACTION_END "T"
    def commit(self, fire) -> None:
        """transaction.c ``do_transaction_end``/``finalize_transaction``: raise ENOMEM
        for a failed transaction, ENOSPC over the node quota, EAGAIN on a conflict;
        else apply and call ``fire(name, subtree, node, old_perms)`` per queued event."""
        if self.fail:
            raise XsError(E.ENOMEM, "transaction failed")
        if self.node_created and not self.caller.privileged:
            for domid, delta in self.count_delta.items():      # acc_fix_domains(chk_quota)
                if delta > 0 and domid != self.store.priv_domid and self.caller.quotas.nodes and \
                        self.store.node_counts.get(domid, 0) + delta >= self.caller.quotas.nodes:
                    raise XsError(E.ENOSPC, "node quota at commit")
        nodes = self.store.nodes
        for name, a in self.accessed.items():
            if a.check_gen:
                g = nodes.get(name)
                if (g.generation if g is not None else NO_GENERATION) != a.generation:
                    raise XsError(E.EAGAIN, f"{name} changed")
        for name, a in self.accessed.items():
            if not a.modified:
                continue
            if a.node is None:
                nodes.pop(name, None)
            else:
                nodes[name] = a.node.replace(generation=self.store.next_generation())
        for domid, delta in self.count_delta.items():
            self.store.count_nodes(domid, delta)
        for name, a in self.accessed.items():
            if a.fire:
                fire(name, a.fire == FIRE_SUBTREE, None, a.old_perms)
