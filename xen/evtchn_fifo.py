"""FIFO event channels: the port ABI a guest switches to with EVTCHNOP_init_control.

Semantics follow Xen's xen/common/event_fifo.c and public/event_channel.h
("FIFO ABI"); the guest's side is Linux's drivers/xen/events/events_fifo.c.

* Each vCPU has a **control block** in a guest page (``control_gfn`` + ``offset``,
  8-byte aligned, not crossing the page): ``ready`` (one bit per priority: that
  queue is not empty) and ``head[16]`` (the first port of each queue).
* The domain has an **event array** of guest pages the guest adds with
  EVTCHNOP_expand_array, 1024 32-bit *event words* per page, indexed by port.
  A word holds PENDING, MASKED, LINKED, BUSY and a 17-bit LINK (the next port).
* There are 16 queues per vCPU, one per priority (0 highest).  The hypervisor
  only *links*: set_pending sets PENDING and, if the word is unmasked and not
  yet LINKED, sets LINKED and appends the port to its queue — by setting the
  LINK of the queue's tail (which the hypervisor remembers; the guest never
  writes it), or, when the queue was empty, by writing ``head``; then it sets the
  queue's ``ready`` bit and, if that was clear, evtchn_upcall_pending in the vCPU's
  vcpu_info (Xen's vcpu_mark_events_pending: the same upcall as 2-level).
* The guest *unlinks*: it reads ``head``, clears LINKED|LINK of each word with a
  cmpxchg and follows the LINK it took; it masks/unmasks words itself.  So every
  update of a word here is an atomic RMW, and linking the tail is Xen's
  ``evtchn_fifo_set_link``: a cmpxchg that only succeeds while the tail is still
  LINKED (else the queue emptied under us and the port becomes the head), with
  the tail marked BUSY (a guest unmasking spins on BUSY) after a first failed
  attempt so that at most four more can fail.
* A port remembers the queue it was last linked on (Xen's ``fifo_lastq``).  When it
  is next linked and was that queue's tail, the old queue's tail is forgotten, so
  a port moved to another vCPU (EVTCHNOP_bind_vcpu) or priority can't have a later
  event of the old queue linked behind it into the new queue.  The record belongs
  to the port *number* (Xen's struct evtchn outlives a close), so it survives a
  close and rebind.
* A port beyond the event array (bound before the guest added its page) keeps its
  pending state on the side (Xen's ``evtchn->pending``); expand_array re-raises it.
  The pending bits of the 2-level ABI are carried over the same way when the domain
  switches (Xen's setup_ports).

Locking: ``_lock`` ("xen.fifo", Xen's per-queue spinlocks taken as one) guards
the tails, last queues and the page list; it is taken under the port lock
("xen.ports"), and the upcall is raised after it is released (Xen marks events
pending after dropping the queue locks).  Guest addresses were checked to be RAM
when the guest gave them; an access failing anyway is reported, never raised.
"""

from __future__ import annotations

from typing import Callable, Protocol

from vmm.locks import ordered_lock
from vmm.memory import GuestMemoryError
from vmm.x86 import PAGE_SIZE
from xen import abi
from xen.hypercall import XenError

PENDING = 1 << abi.EVTCHN_FIFO_PENDING
MASKED = 1 << abi.EVTCHN_FIFO_MASKED
LINKED = 1 << abi.EVTCHN_FIFO_LINKED
BUSY = 1 << abi.EVTCHN_FIFO_BUSY
LINK_MASK = abi.EVTCHN_FIFO_LINK_MASK
_U32 = 0xFFFF_FFFF

WORD_SIZE = abi.event_word_t.layout("64")[1]
# event_fifo.c: EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES.
WORDS_PER_PAGE = PAGE_SIZE // WORD_SIZE
MAX_ARRAY_PAGES = abi.EVTCHN_FIFO_NR_CHANNELS // WORDS_PER_PAGE
NR_QUEUES = abi.EVTCHN_FIFO_MAX_QUEUES

_CB = abi.layout(abi.evtchn_fifo_control_block, "64")      # no long: the same on both ABIs
CONTROL_BLOCK_SIZE = _CB.sizeof()
CB_READY = abi.offset_of(_CB, "ready")
CB_HEAD = abi.offset_of(_CB, "head")


class FifoChannel(Protocol):
    """What FifoAbi needs of a port's record (xen/evtchn.py Channel)."""
    vcpu: int           # notify_vcpu_id
    priority: int


def check_init_control(nr_vcpus: int, vcpu: int, offset: int) -> None:
    """The argument checks of Xen's evtchn_fifo_init_control, in its order, before any
    state changes: the vCPU (-ENOENT), then the offset: the control block must not cross
    the page and must be 8-byte aligned (-EINVAL)."""
    if not 0 <= vcpu < nr_vcpus:
        raise XenError(abi.XenErrno.ENOENT, f"no vCPU {vcpu}")
    if offset > PAGE_SIZE - CONTROL_BLOCK_SIZE:
        raise XenError(abi.XenErrno.EINVAL, f"control block at offset {offset:#x} crosses the page")
    if offset & 7:
        raise XenError(abi.XenErrno.EINVAL, f"control block offset {offset:#x} is not 8-byte aligned")


class FifoAbi:
    """The FIFO port ABI of one domain (the PortAbi protocol of xen/evtchn_abi.py).

    ``mark_pending(vcpu) -> str`` sets the vCPU's evtchn_upcall_pending and raises the
    upcall if it was clear (SharedInfo.mark_events_pending)."""

    name = "FIFO"

    def __init__(self, mem, nr_vcpus: int, mark_pending: Callable[[int], str]):
        self.mem = mem
        self.nr_vcpus = nr_vcpus
        self._mark_pending = mark_pending
        self._lock = ordered_lock("xen.fifo")
        self.control: list[int | None] = [None] * nr_vcpus       # gpa of each vCPU's control block
        self.tail = [[0] * NR_QUEUES for _ in range(nr_vcpus)]   # per vCPU, per priority
        self.pages: list[int] = []                               # event array: gpa per page
        self.lastq: dict[int, tuple[int, int]] = {}              # port -> (vcpu, priority) last linked on
        self.saved_pending: set[int] = set()                     # pending beyond the event array

    # ------------------------------------------------------------ setup (init_control, expand_array)
    def _guest_page(self, gfn: int, what: str) -> int:
        """map_guest_page: a gfn the guest names must be a page of its RAM (-EINVAL)."""
        gpa = gfn * PAGE_SIZE
        if not self.mem.is_ram(gpa, PAGE_SIZE):
            raise XenError(abi.XenErrno.EINVAL, f"{what} gfn {gfn:#x} is not RAM")
        return gpa

    def map_control_block(self, vcpu: int, gfn: int, offset: int) -> None:
        """Xen's map_control_block, after check_init_control: once per vCPU (-EINVAL again)."""
        with self._lock:
            if self.control[vcpu] is not None:
                raise XenError(abi.XenErrno.EINVAL, f"vCPU {vcpu} already has a control block")
            self.control[vcpu] = self._guest_page(gfn, "control block") + offset

    def adopt(self, port: int, ch: FifoChannel, pending: bool) -> None:
        """setup_ports, for each port bound when the domain switches from 2-level: default
        priority, and its pending state kept until the event array covers it."""
        ch.priority = abi.EVTCHN_FIFO_PRIORITY_DEFAULT
        if pending:
            with self._lock:
                self.saved_pending.add(port)

    def expand_array(self, gfn: int) -> list[int]:
        """add_page_to_event_array: one more page of event words (-ENOSPC when the array
        addresses every port, -EINVAL for a gfn that isn't RAM).  Returns the ports that
        became pending before their word existed: the caller re-raises those still bound
        (set_pending on their vCPU, as Xen does)."""
        with self._lock:
            slot = len(self.pages)
            if slot >= MAX_ARRAY_PAGES:
                raise XenError(abi.XenErrno.ENOSPC, "the event array is full")
            self.pages.append(self._guest_page(gfn, "event array"))
            first, end = slot * WORDS_PER_PAGE, (slot + 1) * WORDS_PER_PAGE
            again = sorted(p for p in self.saved_pending if first <= p < end)
            self.saved_pending.difference_update(again)
        return again

    def destroy(self) -> None:
        """evtchn_fifo_destroy (EVTCHNOP_reset, a failed first init_control): forget the
        guest's pages; the caller goes back to 2-level."""
        with self._lock:
            self.control = [None] * self.nr_vcpus
            self.tail = [[0] * NR_QUEUES for _ in range(self.nr_vcpus)]
            self.pages = []
            self.lastq.clear()
            self.saved_pending.clear()

    # ------------------------------------------------------------ words
    def nr_words(self) -> int:
        return len(self.pages) * WORDS_PER_PAGE

    def max_ports(self) -> int:
        """Xen's max_evtchns for a FIFO domain: every port a LINK can name.  A port beyond
        the event array may be bound; it is pending on the side until its page comes."""
        return abi.EVTCHN_FIFO_NR_CHANNELS

    def _word(self, port: int) -> int | None:
        """evtchn_fifo_word_from_port: the gpa of the port's event word, or None."""
        page, index = divmod(port, WORDS_PER_PAGE)
        pages = self.pages
        if not 0 <= port or page >= len(pages):
            return None
        return pages[page] + index * WORD_SIZE

    def word(self, port: int) -> int | None:
        """The port's event word as the guest sees it (None: no page for it)."""
        w = self._word(port)
        try:
            return None if w is None else self.mem.atomic_read32(w)
        except GuestMemoryError:
            return None

    def _test(self, port: int, bit: int) -> bool | None:
        w = self._word(port)
        if w is None:
            return None
        try:
            return bool(self.mem.atomic_read32(w) & bit)
        except GuestMemoryError:
            return None

    def is_pending(self, port: int) -> bool:
        return bool(self._test(port, PENDING))

    def is_masked(self, port: int) -> bool:
        """No word: masked (evtchn_fifo_is_masked)."""
        t = self._test(port, MASKED)
        return True if t is None else t

    def is_busy(self, port: int) -> bool:
        """evtchn_fifo_is_busy: still on a queue (LINKED); such a port is not reallocated
        (event_channel.c get_free_port / evtchn_allocate_port)."""
        return bool(self._test(port, LINKED))

    # ------------------------------------------------------------ linking (event_fifo.c)
    def _try_set_link(self, word: int, w: int, link: int) -> tuple[int, int]:
        """try_set_link: (1, _) linked, (0, _) the tail is no longer LINKED (the guest
        unlinked it: the queue is empty), (-1, found) lost a race; retry with ``found``."""
        if not w & LINKED:
            return 0, w
        new = (w & ~(BUSY | LINK_MASK)) | link
        found = self.mem.atomic_cmpxchg32(word, w, new)
        return (1, found) if found == w else (-1, found)

    def _set_link(self, word: int, link: int) -> bool:
        """evtchn_fifo_set_link: set the tail's LINK iff it is still LINKED.  The guest may
        only set/clear MASKED, clear PENDING, clear LINKED (and LINK) of a linked word; after
        one failed cmpxchg the word is marked BUSY, which stops the guest unmasking it, so at
        most four more can fail (after them Xen gives up, clears BUSY and reports linked)."""
        mem = self.mem
        ret, _ = self._try_set_link(word, mem.atomic_read32(word), link)
        if ret >= 0:
            return bool(ret)
        mem.atomic_or32(word, BUSY)
        w = mem.atomic_read32(word)
        for _ in range(4):
            ret, w = self._try_set_link(word, w, link)
            if ret >= 0:
                if ret == 0:
                    mem.atomic_and32(word, ~BUSY & _U32)
                return bool(ret)
        mem.atomic_and32(word, ~BUSY & _U32)
        return True

    def set_pending(self, port: int, ch: FifoChannel) -> str:
        """evtchn_fifo_set_pending on ``ch.vcpu``'s queue of ``ch.priority``.  Returns a trace word."""
        result, raise_on = self._link(port, ch)
        if raise_on is None:
            return result
        cb, vcpu, prio = raise_on
        try:
            if self.mem.atomic_or32(cb + CB_READY, 1 << prio) >> prio & 1:
                return f"{result}, queue {prio} already ready"
            return f"{result}, {self._mark_pending(vcpu)}"
        except GuestMemoryError as e:
            return f"{result}; lost ({e})"

    def _link(self, port: int, ch: FifoChannel) -> tuple[str, tuple[int, int, int] | None]:
        """The locked half of set_pending: (trace word, (control block, vcpu, priority) to
        mark ready, or None)."""
        mem = self.mem
        with self._lock:
            word = self._word(port)
            if word is None:
                self.saved_pending.add(port)
                return "no event word yet: kept pending", None
            vcpu, prio = ch.vcpu, ch.priority
            if not (0 <= vcpu < self.nr_vcpus and 0 <= prio < NR_QUEUES):
                return f"dropped: no queue {prio} on vCPU {vcpu}", None
            cb = self.control[vcpu]
            if cb is None:
                # Xen: the guest must not unmask before initialising the control block, so
                # the event is dropped (PENDING not even set).
                return f"dropped: vCPU {vcpu} has no control block", None
            try:
                mem.atomic_or32(word, PENDING)
                if mem.atomic_read32(word) & MASKED:
                    return "masked", None
                if mem.atomic_or32(word, LINKED) & LINKED:
                    return "already linked", None
                q = (vcpu, prio)
                old = self.lastq.get(port, (0, 0))          # Xen's zeroed fifo_lastq
                if self.tail[old[0]][old[1]] == port:
                    # It was the old queue's tail: that queue is empty now, and linking a
                    # later event behind it would corrupt the queue it joins next.
                    self.tail[old[0]][old[1]] = 0
                if old != q:
                    self.lastq[port] = q
                tail = self.tail[vcpu][prio]
                linked = False
                if tail:
                    tail_word = self._word(tail)
                    linked = tail_word is not None and self._set_link(tail_word, port)
                if not linked:
                    mem.atomic_xchg32(cb + CB_HEAD + 4 * prio, port)
                self.tail[vcpu][prio] = port
            except GuestMemoryError as e:
                return f"lost ({e})", None
            if linked:
                return f"linked after port {tail}", None
            return f"head of queue {prio}", (cb, vcpu, prio)

    def clear_pending(self, port: int, ch: FifoChannel | None = None) -> None:
        """evtchn_fifo_clear_pending: just PENDING; the guest unlinks and skips a
        non-pending event itself."""
        with self._lock:
            self.saved_pending.discard(port)
        w = self._word(port)
        if w is not None:
            try:
                self.mem.atomic_and32(w, ~PENDING & _U32)
            except GuestMemoryError:
                pass

    def unmask(self, port: int, ch: FifoChannel) -> bool:
        """evtchn_fifo_unmask: clear MASKED; if pending, link it now (on ``ch.vcpu``).
        True if an upcall was raised."""
        w = self._word(port)
        if w is None:
            return False
        try:
            self.mem.atomic_and32(w, ~MASKED & _U32)
            if not self.mem.atomic_read32(w) & PENDING:
                return False
        except GuestMemoryError:
            return False
        return self.set_pending(port, ch).endswith(", upcall")

    def set_priority(self, port: int, ch: FifoChannel, priority: int) -> None:
        """evtchn_fifo_set_priority: future events only; a linked one stays where it is."""
        if not 0 <= priority <= abi.EVTCHN_FIFO_PRIORITY_MIN:
            raise XenError(abi.XenErrno.EINVAL, f"priority {priority}")
        ch.priority = priority

    def bound(self, port: int, ch: FifoChannel) -> None:
        """evtchn_fifo_init on bind: default priority.  (A port still LINKED is not
        reallocated: see is_busy.)  Stale side pending state of a closed port is dropped."""
        ch.priority = abi.EVTCHN_FIFO_PRIORITY_DEFAULT
        with self._lock:
            self.saved_pending.discard(port)

    # ------------------------------------------------------------ snapshot
    def save(self) -> dict:
        """Primary state: what Xen keeps of a FIFO domain outside guest memory (the
        control blocks' and event array pages' addresses, each queue's tail, each port's
        last queue, events pending beyond the array).  Words and heads are guest memory."""
        with self._lock:
            return {"control": list(self.control), "tail": [list(t) for t in self.tail],
                    "pages": list(self.pages), "lastq": [[p, v, q] for p, (v, q) in sorted(self.lastq.items())],
                    "saved_pending": sorted(self.saved_pending)}

    def restore(self, state: dict) -> None:
        """The saved state, checked as init_control and expand_array check a guest's
        (ValueError: the snapshot names what no guest could have given)."""
        control, tail, pages = state["control"], state["tail"], state["pages"]
        if len(control) != self.nr_vcpus or len(tail) != self.nr_vcpus:
            raise ValueError(f"FIFO state for {len(control)} vCPUs, the domain has {self.nr_vcpus}")
        for cb in control:
            if cb is not None and not (self.mem.is_ram(cb, CONTROL_BLOCK_SIZE) and cb % 8 == 0
                                       and cb % PAGE_SIZE <= PAGE_SIZE - CONTROL_BLOCK_SIZE):
                raise ValueError(f"FIFO control block at {cb:#x}")
        if len(pages) > MAX_ARRAY_PAGES or any(p % PAGE_SIZE or not self.mem.is_ram(p, PAGE_SIZE) for p in pages):
            raise ValueError("FIFO event array pages")
        ports = range(abi.EVTCHN_FIFO_NR_CHANNELS)
        if any(len(t) != NR_QUEUES or any(p not in ports for p in t) for t in tail):
            raise ValueError("FIFO queue tails")
        lastq = {}
        for port, vcpu, prio in state["lastq"]:
            if port not in ports or not 0 <= vcpu < self.nr_vcpus or not 0 <= prio < NR_QUEUES:
                raise ValueError(f"FIFO last queue of port {port}")
            lastq[port] = (vcpu, prio)
        if any(p not in ports for p in state["saved_pending"]):
            raise ValueError("FIFO pending ports")
        with self._lock:
            self.control = [None if cb is None else int(cb) for cb in control]
            self.tail = [[int(p) for p in t] for t in tail]
            self.pages = [int(p) for p in pages]
            self.lastq = lastq
            self.saved_pending = {int(p) for p in state["saved_pending"]}

    def describe(self) -> str:
        cbs = ", ".join(f"vcpu{v}@{cb:#x}" for v, cb in enumerate(self.control) if cb is not None)
        return f"FIFO: {self.nr_words()} event words, control blocks {cbs or 'none'}"
