"""The xenstore node tree: nodes, permissions, paths, and the operations on them.

Modelled on the C xenstored (xen-project/xen tools/xenstored/core.c, domain.c): the
store is a flat table ``path -> Node`` (xenstored's "nodes" hashtable), each node
carrying its value, the names of its children in creation order (xenstored's
NUL-separated ``children``), its permission list and a generation count.  Every
modifying access stamps the node with ``++store.generation`` (transaction.c's
``access_node``); transactions compare generations at commit.

Operations run against a *view*: :class:`GlobalView` (the store itself; watches fire
at once) or a :class:`xen.xenstore.transactions.Transaction` (a private overlay; reads
are recorded, watches fire at commit).  Both have ``read``/``write``/``delete``/
``changed`` and the node-count accounting.

Paths (docs/misc/xenstore.txt): ASCII alphanumerics and ``-/_@``; absolute (``/...``),
special (``@...``, only where allowed) or relative to ``/local/domain/<domid>``; no
``//``, no trailing ``/`` except the root.

Permissions (xenstore.txt; core.c ``perm_for_conn``): the first entry names the owner,
who has full access, and the access of every domain without an entry of its own; the
others grant ``r``/``w``/``b``/``n`` to one domain.  The privileged domain (0: the VMM)
has full access everywhere.  Entries naming domains that do not exist are kept but
ignored (domain.c ``domain_alloc_permrefs``/``domain_adjust_node_perms``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from xen import abi

E = abi.XenErrno

# tools/include/xenstore_lib.h: struct xs_permissions.perms bits.
PERM_NONE = 0x00
PERM_READ = 0x01
PERM_WRITE = 0x02
PERM_OWNER = 0x08        # only in access checks, never stored
PERM_IGNORE = 0x10       # the entry names a domain that doesn't exist: skipped
PERM_ALL = PERM_READ | PERM_WRITE | PERM_OWNER

NO_GENERATION = (1 << 64) - 1    # core.h: NO_GENERATION ~((uint64_t)0): "node doesn't exist"

# core.h: sizeof(struct node_hdr) (generation u64, num_perms u16, datalen u16, childlen
# u32) and sizeof(struct xs_permissions) (id, perms: two unsigned ints).  A node's size
# for the node-size quota is core.c calc_node_acc_size().
NODE_HDR_SIZE = 16
PERM_SIZE = 8

ROOT = "/"
LOCAL_DOMAIN = "/local/domain/"

_VALID = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")


class XsError(Exception):
    """A request fails with ``err`` (an errno of io/xs_wire.h's XSD_ERRORS)."""

    def __init__(self, err: E, detail: str = ""):
        super().__init__(f"{err.name}{': ' + detail if detail else ''}")
        self.err = err


@dataclass
class Quotas:
    """Per-domain limits, tools/xenstored/domain.c ``quotas[]`` defaults (hard values;
    soft ones only log).  0 disables a quota; none applies to the privileged domain
    (``domain_quota_val_exceeds``).  A value *reaching* the quota exceeds it
    (``return val >= quota``), so e.g. at most 9 transactions are open at once."""
    nodes: int = 1000                               # ACC_NODES: nodes owned
    watches: int = 128                              # ACC_WATCH
    outstanding: int = 20                           # ACC_OUTST: replies not yet taken by the guest
    transactions: int = 10                          # ACC_TRANS
    transaction_nodes: int = 1024                   # ACC_TRANSNODES: nodes accessed in one
    node_permissions: int = 5                       # ACC_NPERM: entries, the owner's included
    path_max: int = abi.XENSTORE_REL_PATH_MAX       # ACC_PATHLEN: below /local/domain/<id>/
    node_size: int = 2048                           # ACC_NODESZ: calc_node_acc_size()
    # Not xenstored's: it drops watch events once a domain's memory quota (ACC_MEM,
    # 2.5 MB for nodes, watches and queued output together) is used up; we bound the
    # bytes of events queued for a connection instead.
    event_bytes: int = 256 << 10


class Caller:
    """Who asks: a connection (xen.xenstore.daemon.Connection) has these."""
    domid: int
    privileged: bool
    quotas: Quotas

    def exceeds(self, what: str, value: int) -> bool:
        """domain.c ``domain_quota_val_exceeds``: ``value`` reaches quota ``what``."""
        if self.privileged:
            return False
        q = getattr(self.quotas, what)
        return q != 0 and value >= q


class Perm(NamedTuple):
    """One struct xs_permissions entry."""
    perms: int
    id: int

    def to_string(self) -> bytes:
        """xenstore-common.h ``xenstore_perm_to_string``: letter + ``%i`` of the id."""
        letter = {PERM_WRITE: b"w", PERM_READ: b"r", PERM_READ | PERM_WRITE: b"b",
                  PERM_NONE: b"n"}[self.perms & ~PERM_IGNORE & 3]
        sid = self.id - (1 << 32) if self.id & (1 << 31) else self.id
        return letter + str(sid).encode()


_PERM_LETTERS = {ord("r"): PERM_READ, ord("w"): PERM_WRITE, ord("b"): PERM_READ | PERM_WRITE,
                 ord("n"): PERM_NONE}


def parse_perm(s: bytes) -> Perm:
    """xenstore-common.h ``xenstore_strings_to_perms`` for one string: r/w/b/n then
    ``strtol(p, &end, 0)`` that must use up the rest (stored as unsigned int)."""
    if not s or s[0] not in _PERM_LETTERS:
        raise XsError(E.EINVAL, "bad permission")
    val, end = c_strtol(s, 1, 0)
    if end != len(s) or len(s) == 1:
        raise XsError(E.EINVAL, "bad permission")
    return Perm(_PERM_LETTERS[s[0]], val & 0xFFFFFFFF)


def c_strtol(s: bytes, pos: int = 0, base: int = 10) -> tuple[int, int]:
    """C strtol/strtoul on ``s[pos:]``: leading spaces, a sign, base 0's 0x/0 prefixes;
    returns (value clamped to a C long, index after the digits, or ``pos`` if none)."""
    i, n = pos, len(s)
    while i < n and s[i] in b" \t\n\v\f\r":
        i += 1
    neg = False
    if i < n and s[i] in b"+-":
        neg = s[i] == ord("-")
        i += 1
    if base in (0, 16) and i + 1 < n and s[i] == ord("0") and s[i + 1] in b"xX" \
            and i + 2 < n and chr(s[i + 2]) in "0123456789abcdefABCDEF":
        i += 2
        base = 16
    elif base == 0:
        base = 8 if i < n and s[i] == ord("0") else 10
    start, v = i, 0
    while i < n:
        d = chr(s[i]).lower()
        k = int(d, 36) if d.isalnum() and d.isascii() else 99
        if k >= base:
            break
        v = v * base + k
        i += 1
    if i == start:
        return 0, pos
    v = -v if neg else v
    return max(-(1 << 63), min(v, (1 << 63) - 1)), i


def c_atoi(s: bytes) -> int:
    """C atoi as xenstored uses it (garbage -> 0), as a 32-bit int."""
    v, _ = c_strtol(s, 0, 10)
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & (1 << 31) else v


def parse_domid(s: bytes) -> int:
    """domain.c ``parse_domid``: strtoul base 10 using up the string, <= 65535
    (the empty string is domain 0, as there)."""
    v, end = c_strtol(s, 0, 10)     # strtoul of "" leaves endptr at the NUL: domain 0
    v &= (1 << 64) - 1     # strtoul wraps a negative number
    if end != len(s) or v > 65535:
        raise XsError(E.EINVAL, "bad domid")
    return v


class Node:
    """One node; never changed in place (a change makes a new Node), so transactions
    and the global table can share them."""
    __slots__ = ("name", "data", "children", "perms", "generation")

    def __init__(self, name: str, data: bytes = b"", children: tuple[str, ...] = (),
                 perms: tuple[Perm, ...] = (), generation: int = 0):
        self.name = name
        self.data = data
        self.children = children
        self.perms = perms
        self.generation = generation

    def replace(self, **kw) -> "Node":
        n = Node(self.name, self.data, self.children, self.perms, self.generation)
        for k, v in kw.items():
            setattr(n, k, v)
        return n

    @property
    def owner(self) -> int:
        return self.perms[0].id

    def children_blob(self) -> bytes:
        """xenstored's ``children``: each name NUL-terminated."""
        return b"".join(c.encode() + b"\0" for c in self.children)

    def acc_size(self) -> int:
        """core.c ``calc_node_acc_size``."""
        return (NODE_HDR_SIZE + PERM_SIZE * len(self.perms) + len(self.data)
                + sum(len(c) + 1 for c in self.children))

    def __repr__(self) -> str:
        return f"<Node {self.name} gen={self.generation} {self.data[:32]!r}>"


def perm_for(caller: Caller, perms: tuple[Perm, ...]) -> int:
    """core.c ``perm_for_conn``: privileged and owner (also a DOMID_ANY owner) get all;
    otherwise the first applicable non-ignored entry, else the owner entry's access."""
    if caller.privileged or perms[0].id in (caller.domid, abi.DOMID_ANY):
        return PERM_ALL
    for p in perms[1:]:
        if not p.perms & PERM_IGNORE and p.id in (caller.domid, abi.DOMID_ANY):
            return p.perms & PERM_ALL
    return perms[0].perms & PERM_ALL


def get_parent(name: str) -> str:
    """core.c ``get_parent``: up to the last '/' after the first char; "/" otherwise."""
    i = name.rfind("/", 1)
    return name[:i] if i > 0 else ROOT


def basename(name: str) -> str:
    return name[name.rfind("/") + 1:]


def child_path(parent: str, child: str) -> str:
    return "/" + child if parent == ROOT else f"{parent}/{child}"


def is_child(child: str, parent: str) -> bool:
    """watch.c ``is_child`` without a depth: ``child`` is ``parent`` or below it."""
    if not child.startswith(parent):
        return False
    return len(parent) == 1 or len(child) == len(parent) or child[len(parent)] == "/"


def domain_path(domid: int) -> str:
    """domain.c ``talloc_domain_path``."""
    return f"/local/domain/{domid}"


def canonicalize(caller: Caller, path: bytes | None, allow_special: bool) -> str:
    """core.c ``canonicalize``: check the characters, make a relative path absolute
    under /local/domain/<domid>, reject trailing or doubled slashes and paths over the
    path quota (counted below ``/local/domain/<id>/``, privileged callers exempt).
    EINVAL for anything wrong, as there."""
    if path is None or not _VALID.issuperset(path) or (path[:1] == b"@" and not allow_special):
        raise XsError(E.EINVAL, "bad path")
    name = path.decode("ascii")
    if not name.startswith(("/", "@")):
        name = f"{domain_path(caller.domid)}/{name}"
    local_off = 0
    if name.startswith(LOCAL_DOMAIN):       # sscanf(name, "/local/domain/%5u/%n", ...)
        rest = name[len(LOCAL_DOMAIN):]
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if 0 < digits <= 5 and rest[digits:digits + 1] == "/":
            local_off = len(LOCAL_DOMAIN) + digits + 1
    if (name.endswith("/") and name != ROOT) or "//" in name \
            or caller.exceeds("path_max", len(name) - local_off):
        raise XsError(E.EINVAL, "bad path")
    return name


class Store:
    """The global node table, the generation counter and per-owner node counts."""

    def __init__(self, priv_domid: int = 0):
        self.priv_domid = priv_domid
        self.nodes: dict[str, Node] = {}
        self.generation = 0
        self.node_counts: dict[int, int] = {}
        #: domids that exist (permissions naming others are ignored): set by the daemon
        self.domain_exists: Callable[[int], bool] = lambda domid: domid == priv_domid
        self._setup()

    def next_generation(self) -> int:
        self.generation += 1
        return self.generation

    def _setup(self) -> None:
        """core.c ``setup_structure``: /, /tool, /tool/xenstored owned by the privileged
        domain with no access for others; @releaseDomain readable by any domain (the
        DOMID_ANY entry), @introduceDomain by the privileged domain only."""
        none = (Perm(PERM_NONE, self.priv_domid),)
        for name, children, perms in (
                (ROOT, ("tool",), none), ("/tool", ("xenstored",), none), ("/tool/xenstored", (), none),
                ("@releaseDomain", (), none + (Perm(PERM_READ, abi.DOMID_ANY),)),
                ("@introduceDomain", (), none)):
            self.nodes[name] = Node(name, b"", children, perms, self.next_generation())
        self.node_counts[self.priv_domid] = 5      # domain_nbentry_fix(priv_domid, 5)

    def count_nodes(self, domid: int, delta: int) -> None:
        self.node_counts[domid] = self.node_counts.get(domid, 0) + delta

    def adjust_perms(self, perms: Iterable[Perm]) -> tuple[Perm, ...]:
        """domain.c ``domain_alloc_permrefs``: entries naming no existing domain, and
        DOMID_ANY (we don't offer XENSTORE_SERVER_FEATURE_DOMID_ANY), are ignored."""
        out = []
        for p in perms:
            if p.id == abi.DOMID_ANY or not self.domain_exists(p.id):
                p = Perm(p.perms | PERM_IGNORE, p.id)
            out.append(p)
        return tuple(out)


class View:
    """What an operation works on: the global store or a transaction."""
    store: Store

    def read(self, name: str) -> Node | None: ...
    def write(self, node: Node) -> Node: ...
    def delete(self, node: Node) -> None: ...
    def changed(self, name: str, subtree: bool, node: Node | None, old_perms) -> None: ...
    def node_count(self, domid: int) -> int: ...
    def count_nodes(self, domid: int, delta: int) -> None: ...
    def created(self) -> None: ...


class GlobalView(View):
    """The store itself: changes are visible at once and fire watches at once."""

    def __init__(self, store: Store, fire: Callable[[str, bool, Node | None, tuple | None], None]):
        self.store = store
        self._fire = fire

    def read(self, name: str) -> Node | None:
        return self.store.nodes.get(name)

    def write(self, node: Node) -> Node:
        node = node.replace(generation=self.store.next_generation())
        self.store.nodes[node.name] = node
        return node

    def delete(self, node: Node) -> None:
        self.store.nodes.pop(node.name, None)

    def changed(self, name, subtree, node, old_perms) -> None:
        self._fire(name, subtree, node, old_perms)

    def node_count(self, domid: int) -> int:
        return self.store.node_counts.get(domid, 0)

    def count_nodes(self, domid: int, delta: int) -> None:
        self.store.count_nodes(domid, delta)

    def created(self) -> None:
        pass


# ----------------------------------------------------------------- operations
def _deny(view: View, caller: Caller, name: str, err: E, perm: int) -> XsError:
    """core.c ``errno_from_parents``: a failure on a node the caller may not see is
    EACCES unless the nearest existing ancestor grants some of ``perm``."""
    parent = name
    while True:
        parent = get_parent(parent)
        node = view.read(parent)
        if node is not None or parent == ROOT:
            break
    parent_perm = perm_for(caller, node.perms) if node is not None else PERM_NONE
    return XsError(err if parent_perm & perm else E.EACCES, name)


def get_node(view: View, caller: Caller, name: str, perm: int) -> Node:
    """core.c ``get_node``/``get_node_chk_perm``: the node if ``caller`` has all of
    ``perm`` on it; else ENOENT or EACCES as ``errno_from_parents`` decides."""
    node = view.read(name)
    if node is not None and perm_for(caller, node.perms) & perm == perm:
        return node
    raise _deny(view, caller, name, E.ENOENT if node is None else E.EACCES, perm)


def _check_size(caller: Caller, node: Node) -> None:
    """core.c ``write_node_raw``: the node-size quota -> ENOSPC."""
    if caller.exceeds("node_size", node.acc_size()):
        raise XsError(E.ENOSPC, f"node {node.name} too big")


def create_node(view: View, caller: Caller, name: str, data: bytes) -> Node:
    """core.c ``construct_node``/``create_node``: create ``name`` and its missing
    parents.  Each new node copies its parent's permissions, and an unprivileged
    creator becomes the owner.  Everything is checked (node quota per new node,
    node-size quota of every node written) before anything is written."""
    missing = [name]
    parent_name = get_parent(name)
    parent = view.read(parent_name)
    while parent is None:                      # the root always exists
        missing.append(parent_name)
        parent_name = get_parent(parent_name)
        parent = view.read(parent_name)
    perms = parent.perms
    if not caller.privileged:
        perms = (Perm(perms[0].perms, caller.domid),) + perms[1:]
    new = []
    for i, n in enumerate(reversed(missing)):
        last = i == len(missing) - 1
        child = () if last else (basename(missing[-2 - i]),)
        new.append(Node(n, data if last else b"", child, perms))
    top = parent.replace(children=parent.children + (basename(new[0].name),))
    owner = perms[0].id
    if caller.exceeds("nodes", view.node_count(caller.domid) + len(new)):
        raise XsError(E.ENOSPC, "node quota")
    for n in [top] + new:
        _check_size(caller, n)
    view.created()
    for n in reversed(new):                    # bottom up, as xenstored writes them
        view.write(n)
    view.write(top)
    view.count_nodes(owner, len(new))
    return view.read(name)


def do_write(view: View, caller: Caller, name: str, data: bytes) -> None:
    """core.c ``do_write``: replace the value, or create the node (and parents)."""
    try:
        node = get_node(view, caller, name, PERM_WRITE)
    except XsError as e:
        if e.err != E.ENOENT:
            raise
        node = create_node(view, caller, name, data)
    else:
        node = node.replace(data=data)
        _check_size(caller, node)
        node = view.write(node)
    view.changed(name, True, node, None)


def do_mkdir(view: View, caller: Caller, name: str) -> None:
    """core.c ``do_mkdir``: fine if it exists (no event); else create it."""
    try:
        get_node(view, caller, name, PERM_WRITE)
    except XsError as e:
        if e.err != E.ENOENT:
            raise
        node = create_node(view, caller, name, b"")
        view.changed(name, True, node, None)


def do_rm(view: View, caller: Caller, name: str) -> None:
    """core.c ``do_rm``: remove ``name`` and everything below; not being there is fine
    if the parent is; the root can't go (EINVAL)."""
    try:
        get_node(view, caller, name, PERM_WRITE)
    except XsError as e:
        if e.err == E.ENOENT and view.read(get_parent(name)) is not None:
            return
        raise
    if name == ROOT:
        raise XsError(E.EINVAL, "removing /")
    rm_node(view, name)


def rm_node(view: View, name: str) -> None:
    """core.c ``rm_node``/``delnode_sub``: post-order; each node's watches fire as it
    goes (exact for the ones below, subtree for ``name``), while its permissions are
    still known; then the parent forgets the child."""
    parent = view.read(get_parent(name))
    if parent is None:
        raise XsError(E.EINVAL, "no parent")
    root = view.read(name)
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if not done:
            stack.append((node, True))
            for c in reversed(node.children):
                child = view.read(child_path(node.name, c))
                if child is not None:
                    stack.append((child, False))
            continue
        view.delete(node)
        view.count_nodes(node.owner, -1)
        view.changed(node.name, node.name == name, node, None)
    parent = view.read(parent.name)
    kids = list(parent.children)
    base = basename(name)
    if base in kids:
        kids.remove(base)
    view.write(parent.replace(children=tuple(kids)))


def do_set_perms(view: View, caller: Caller, name: str, perms: tuple[Perm, ...]) -> None:
    """core.c ``do_set_perms`` after the argument checks: the owner (or the privileged
    domain) may change the list; only the privileged domain may change the owner
    (EPERM); node counts follow the owner."""
    node = get_node(view, caller, name, PERM_WRITE | PERM_OWNER)
    if not caller.privileged and perms[0].id != node.owner:
        raise XsError(E.EPERM, "owner change")
    new = node.replace(perms=perms)
    _check_size(caller, new)
    view.count_nodes(node.owner, -1)
    view.count_nodes(new.owner, 1)
    new = view.write(new)
    view.changed(name, True, new, node.perms)
