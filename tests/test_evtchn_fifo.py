"""FIFO event channels (xen/evtchn_fifo.py) over real guest memory, the guest's side played
by a model of Linux's drivers/xen/events/events_fifo.c (consume_one_event, clear_linked,
clear_masked), including a threaded race of the hypervisor linking while the guest unlinks."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from vmm.memory import GuestMemory, MiB
from xen import abi
from xen.evtchn_fifo import (BUSY, CB_HEAD, CB_READY, LINK_MASK, LINKED, MASKED, MAX_ARRAY_PAGES, PENDING,
                             WORDS_PER_PAGE, FifoAbi, check_init_control)
from xen.hypercall import XenError

CB_GFN = (0x10, 0x11)                   # vCPU 0 and 1's control blocks
ARRAY_GFN = 0x20                        # event array pages from here
DEFAULT = abi.EVTCHN_FIFO_PRIORITY_DEFAULT
U32 = 0xFFFF_FFFF


@dataclass
class Ch:
    vcpu: int = 0
    priority: int = DEFAULT


class Domain:
    """A FifoAbi over 16 MiB of guest RAM with a port table and vcpu_info upcall flags."""

    def __init__(self, nr_vcpus=2, pages=1):
        self.mem = GuestMemory(16 * MiB)
        self.ports: dict[int, Ch] = {}
        self.upcall_pending = [0] * nr_vcpus
        self.upcalls = [0] * nr_vcpus
        self.wake = [threading.Event() for _ in range(nr_vcpus)]
        self.fifo = FifoAbi(self.mem, nr_vcpus, self.mark_pending)
        for v in range(nr_vcpus):
            check_init_control(nr_vcpus, v, 0)
            self.fifo.map_control_block(v, CB_GFN[v], 0)
        for i in range(pages):
            self.expand()

    def expand(self):
        slot = len(self.fifo.pages)
        gpa = (ARRAY_GFN + slot) << 12
        for i in range(WORDS_PER_PAGE):           # Linux's init_array_page: all masked
            self.mem.write_u32(gpa + 4 * i, MASKED)
        for port in self.fifo.expand_array(ARRAY_GFN + slot):     # EventChannels re-raises
            if port in self.ports:
                self.send(port)

    def mark_pending(self, vcpu):                 # vcpu_info.evtchn_upcall_pending xchg 1
        if self.upcall_pending[vcpu]:
            return "upcall already pending"
        self.upcall_pending[vcpu] = 1
        self.upcalls[vcpu] += 1
        self.wake[vcpu].set()
        return "upcall"

    def bind(self, port, vcpu=0, priority=DEFAULT, unmask=True):
        ch = self.ports[port] = Ch(vcpu)
        self.fifo.bound(port, ch)
        ch.priority = priority
        if unmask:
            self.guest_unmask(port)
        return ch

    def send(self, port):
        return self.fifo.set_pending(port, self.ports[port])

    # -- the guest's side (events_fifo.c)
    def word_gpa(self, port):
        page, i = divmod(port, WORDS_PER_PAGE)
        return ((ARRAY_GFN + page) << 12) + 4 * i

    def word(self, port):
        return self.mem.read_u32(self.word_gpa(port))

    def cb(self, vcpu):
        return CB_GFN[vcpu] << 12

    def head(self, vcpu, prio):
        return self.mem.read_u32(self.cb(vcpu) + CB_HEAD + 4 * prio)

    def ready(self, vcpu):
        return self.mem.read_u32(self.cb(vcpu) + CB_READY)

    def guest_mask(self, port):
        self.mem.atomic_or32(self.word_gpa(port), MASKED)

    def clear_masked(self, port) -> bool:
        """Linux's clear_masked: clear MASKED, spinning while BUSY; True if PENDING after."""
        w = self.word_gpa(port)
        found = self.mem.atomic_read32(w)
        while True:
            old = found & ~BUSY
            found = self.mem.atomic_cmpxchg32(w, old, old & ~MASKED)
            if found == old:
                break
        return bool(self.mem.atomic_read32(w) & PENDING)

    def guest_unmask(self, port):
        """evtchn_fifo_unmask: clear_masked (spins while BUSY), then EVTCHNOP_unmask if pending."""
        if self.clear_masked(port):
            return self.fifo.unmask(port, self.ports[port])
        return False


class Consumer:
    """One vCPU's consumer: __evtchn_fifo_handle_events / consume_one_event."""

    def __init__(self, d: Domain, vcpu: int):
        self.d, self.vcpu = d, vcpu
        self.local_head = [0] * abi.EVTCHN_FIFO_MAX_QUEUES

    def clear_linked(self, w):
        mem = self.d.mem
        found = mem.atomic_read32(w)
        while True:
            old = found
            found = mem.atomic_cmpxchg32(w, old, old & ~(LINKED | LINK_MASK))
            if found == old:
                return old & LINK_MASK

    def handle_events(self, handle=None) -> list[int]:
        d, mem = self.d, self.d.mem
        d.upcall_pending[self.vcpu] = 0                       # the upcall handler clears it first
        got = []
        ready_gpa = d.cb(self.vcpu) + CB_READY
        ready = mem.atomic_xchg32(ready_gpa, 0)
        while ready:
            q = (ready & -ready).bit_length() - 1
            head = self.local_head[q]
            if head == 0:
                head = mem.atomic_read32(d.cb(self.vcpu) + CB_HEAD + 4 * q)
            port = head
            w = d.word_gpa(port)
            head = self.clear_linked(w)
            if head == 0:
                ready &= ~(1 << q)
            word = mem.atomic_read32(w)
            # consume_one_event: pending and unmasked → the port's irq.  The ack (clear_evtchn)
            # is a test-and-clear here: an unlinked port may be linked again (an unmask, a
            # move) while still PENDING, so two vCPUs can both find it pending, and Linux's
            # irq core, not the ABI, makes that one handler run.  Only the vCPU whose ack
            # cleared PENDING handles it (see test_a_port_on_two_queues_...).
            if word & PENDING and not word & MASKED:
                if mem.atomic_and32(w, ~PENDING & U32) & PENDING:
                    got.append(port)
                    if handle:
                        handle(port)
            self.local_head[q] = head
            ready |= mem.atomic_xchg32(ready_gpa, 0)
        return got


@pytest.fixture
def d():
    dom = Domain()
    yield dom
    dom.mem.close()


def test_one_queue_is_consumed_in_the_order_linked(d):
    for p in (5, 3, 9):
        d.bind(p)
    assert d.send(5).endswith(", upcall")                   # empty queue: head, ready, upcall
    assert d.send(3) == "linked after port 5"
    assert d.send(9) == "linked after port 3"
    assert d.head(0, DEFAULT) == 5 and d.ready(0) == 1 << DEFAULT and d.upcalls == [1, 0]
    assert d.word(5) & LINK_MASK == 3 and d.word(3) & LINK_MASK == 9 and d.word(9) & LINKED
    assert Consumer(d, 0).handle_events() == [5, 3, 9]
    assert all(not d.word(p) & (LINKED | PENDING | LINK_MASK) for p in (5, 3, 9))


def test_higher_priority_queues_are_consumed_first(d):
    for p, prio in ((1, 12), (2, DEFAULT), (3, abi.EVTCHN_FIFO_PRIORITY_MAX), (4, 12)):
        d.bind(p, priority=prio)
    for p in (1, 2, 3, 4):
        d.send(p)
    assert d.ready(0) == 1 << 12 | 1 << DEFAULT | 1
    assert d.upcalls == [1, 0]                               # one upcall; ready bits say the rest
    assert Consumer(d, 0).handle_events() == [3, 2, 1, 4]


def test_masked_port_is_pending_but_not_linked_until_unmasked(d):
    d.bind(7, unmask=False)
    assert d.send(7) == "masked"
    assert d.word(7) & (PENDING | MASKED | LINKED) == PENDING | MASKED
    assert d.fifo.is_pending(7) and d.fifo.is_masked(7) and not d.fifo.is_busy(7)
    assert d.upcalls == [0, 0] and d.ready(0) == 0
    assert d.guest_unmask(7) is True                        # EVTCHNOP_unmask links it
    assert d.word(7) & LINKED and d.upcalls == [1, 0]
    assert Consumer(d, 0).handle_events() == [7]
    d.guest_mask(7)
    d.send(7)
    assert Consumer(d, 0).handle_events() == []             # nothing linked meanwhile
    assert d.guest_unmask(7) is True and Consumer(d, 0).handle_events() == [7]


def test_a_linked_port_made_pending_again_is_delivered_once(d):
    d.bind(4)
    d.bind(6)
    d.send(4)
    d.send(6)
    assert d.send(4) == "already linked"
    # The guest acked 4 (PENDING cleared) but hasn't unlinked it: a new event re-sets PENDING
    # only; the consumer still finds it once, where it was.
    d.mem.atomic_and32(d.word_gpa(4), ~PENDING & U32)
    assert d.send(4) == "already linked"
    assert Consumer(d, 0).handle_events() == [4, 6]
    # A cleared-pending linked port is skipped by the consumer (clear_pending doesn't unlink).
    d.send(6)
    d.fifo.clear_pending(6, d.ports[6])
    assert Consumer(d, 0).handle_events() == []
    assert not d.word(6) & LINKED


def test_port_moved_to_another_vcpu_leaves_no_stale_tail(d):
    """A port that was its old queue's tail, moved (EVTCHNOP_bind_vcpu) and linked on its new
    vCPU: the old queue's tail is forgotten, so a later event there becomes that queue's head
    instead of being linked behind the moved port into the new vCPU's queue."""
    d.bind(10)
    d.bind(11)
    d.send(10)
    c0, c1 = Consumer(d, 0), Consumer(d, 1)
    assert c0.handle_events() == [10]                       # 10 is still vCPU 0's recorded tail
    d.ports[10].vcpu = 1
    d.send(10)
    assert d.head(1, DEFAULT) == 10 and d.word(10) & LINKED
    d.send(11)                                              # vCPU 0's queue: 11 must be its head
    assert d.head(0, DEFAULT) == 11 and d.word(10) & LINK_MASK == 0
    assert c0.handle_events() == [11] and c1.handle_events() == [10]


def test_port_moved_while_linked_is_delivered_on_its_old_queue_first(d):
    d.bind(12)
    d.send(12)
    d.ports[12].vcpu = 1                                    # moved while LINKED on vCPU 0
    assert d.send(12) == "already linked"
    assert Consumer(d, 1).handle_events() == []
    assert Consumer(d, 0).handle_events() == [12]
    d.send(12)
    assert Consumer(d, 1).handle_events() == [12]


def test_a_port_on_two_queues_is_seen_pending_by_both_vcpus(d):
    """Xen's (and our) set_pending links any PENDING, unmasked, not-LINKED port.  A consumer
    clears LINKED before it reads PENDING, so in between an unmask on another vCPU (after an
    EVTCHNOP_bind_vcpu) links the same pending event on the other vCPU's queue: both vCPUs
    find it pending, and only the guest's ack decides which one handles it.  (CI once saw
    the threaded race below count such an event twice, with a check-then-clear ack.)"""
    d.bind(30)
    d.send(30)
    c0 = Consumer(d, 0)
    assert d.head(0, DEFAULT) == 30
    assert c0.clear_linked(d.word_gpa(30)) == 0             # vCPU 0 took it off its queue...
    d.ports[30].vcpu = 1                                    # ...it moves, the guest unmasks it
    d.guest_mask(30)
    assert d.guest_unmask(30) is True                       # linked again: on vCPU 1's queue
    assert d.head(1, DEFAULT) == 30 and d.word(30) & (PENDING | LINKED) == PENDING | LINKED
    # vCPU 0 still reads it pending, vCPU 1 finds it on its queue: one event, one ack.
    assert d.word(30) & PENDING and not d.word(30) & MASKED
    assert Consumer(d, 1).handle_events() == [30]
    assert not d.word(30) & (PENDING | LINKED)


def test_priority_change_applies_to_the_next_event(d):
    d.bind(20)
    d.bind(21, priority=2)
    d.send(20)
    d.fifo.set_priority(20, d.ports[20], 1)
    for bad in (abi.EVTCHN_FIFO_PRIORITY_MIN + 1, 1 << 31):
        with pytest.raises(XenError) as e:
            d.fifo.set_priority(20, d.ports[20], bad)
        assert e.value.errno == abi.XenErrno.EINVAL
    assert d.ports[20].priority == 1
    d.send(21)
    assert Consumer(d, 0).handle_events() == [21, 20]      # 20 stayed on queue 7
    d.send(21)
    d.send(20)
    assert Consumer(d, 0).handle_events() == [20, 21]
    assert d.fifo.lastq[20] == (0, 1)


def test_init_control_arguments_get_xens_errnos(d):
    def err(f, *a):
        with pytest.raises(XenError) as e:
            f(*a)
        return e.value.errno
    assert err(check_init_control, 2, 2, 0) == abi.XenErrno.ENOENT
    assert err(check_init_control, 2, 1 << 31, 0) == abi.XenErrno.ENOENT
    assert err(check_init_control, 2, 0, 4096 - 72 + 8) == abi.XenErrno.EINVAL   # crosses the page
    assert err(check_init_control, 2, 0, 0xFFFF_FFF8) == abi.XenErrno.EINVAL
    assert err(check_init_control, 2, 0, 4) == abi.XenErrno.EINVAL                # not 8-aligned
    check_init_control(2, 1, 4096 - 72)                                           # the last fit
    fresh = FifoAbi(d.mem, 2, d.mark_pending)
    for gfn in (16 * MiB >> 12, (1 << 64) - 1, 0xFEE00):                          # not RAM
        assert err(fresh.map_control_block, 0, gfn, 0) == abi.XenErrno.EINVAL
    assert fresh.control == [None, None]
    fresh.map_control_block(0, 0x30, 4096 - 72)
    assert err(fresh.map_control_block, 0, 0x31, 0) == abi.XenErrno.EINVAL        # already initialised


def test_expand_array_fills_up_and_refuses_bad_pages(d):
    def err(gfn):
        with pytest.raises(XenError) as e:
            d.fifo.expand_array(gfn)
        return e.value.errno
    assert err(16 * MiB >> 12) == abi.XenErrno.EINVAL and d.fifo.nr_words() == WORDS_PER_PAGE
    for _ in range(MAX_ARRAY_PAGES - 1):
        d.expand()
    assert d.fifo.nr_words() == abi.EVTCHN_FIFO_NR_CHANNELS
    assert err(ARRAY_GFN) == abi.XenErrno.ENOSPC
    port = abi.EVTCHN_FIFO_NR_CHANNELS - 1                  # the last port works
    d.bind(port)
    d.send(port)
    assert Consumer(d, 0).handle_events() == [port]


def test_pending_before_the_event_word_exists_is_raised_by_expand_array(d):
    port = WORDS_PER_PAGE + 5                               # beyond the one page
    ch = Ch()
    d.ports[port] = ch
    d.fifo.bound(port, ch)
    assert d.send(port) == "no event word yet: kept pending"
    assert not d.fifo.is_pending(port) and d.fifo.is_masked(port)
    # Carried over from 2-level at the switch (setup_ports), also beyond the array.
    d.ports[port + 1] = Ch(vcpu=1, priority=3)
    d.fifo.adopt(port + 1, d.ports[port + 1], pending=True)
    assert d.ports[port + 1].priority == DEFAULT
    # Linux masks the new page before adding it: pending, not linked; unmask links it.
    d.expand()
    assert d.fifo.is_pending(port) and d.fifo.is_pending(port + 1) and not d.fifo.is_busy(port)
    d.guest_unmask(port)
    d.guest_unmask(port + 1)
    assert Consumer(d, 0).handle_events() == [port] and Consumer(d, 1).handle_events() == [port + 1]


def test_no_control_block_drops_the_event(d):
    fresh = FifoAbi(d.mem, 2, d.mark_pending)
    fresh.map_control_block(0, CB_GFN[0], 0)
    fresh.expand_array(ARRAY_GFN)
    d.mem.write_u32(d.word_gpa(3), 0)
    assert fresh.set_pending(3, Ch(vcpu=1)).startswith("dropped")
    assert d.word(3) == 0


def test_destroy_forgets_the_guests_pages(d):
    d.bind(2)
    d.send(2)
    d.fifo.destroy()
    assert d.fifo.nr_words() == 0 and d.fifo.control == [None, None]
    assert d.fifo.is_masked(2) and not d.fifo.is_pending(2)
    assert d.fifo.set_pending(2, d.ports[2]) == "no event word yet: kept pending"


def test_the_fifo_state_survives_a_snapshot(d):
    """What FifoAbi keeps outside guest memory (tails, last queues, control blocks, array
    pages, ports pending beyond the array) goes through a snapshot's JSON: an event sent
    after the restore is linked behind the tail saved before it."""
    a, b, c = 5, 6, 7
    for p in (a, b, c):
        d.bind(p)
    d.send(a)
    d.send(b)
    d.fifo.saved_pending.add(5000)
    state = json.loads(json.dumps(d.fifo.save()))
    d.fifo = FifoAbi(d.mem, 2, d.mark_pending)
    d.fifo.restore(state)
    assert d.fifo.save() == state
    assert d.send(c) == f"linked after port {b}"
    assert d.word(b) & LINK_MASK == c and d.head(0, DEFAULT) == a

    fresh = FifoAbi(d.mem, 2, d.mark_pending)
    for key, bad in (("control", [8 << 12 | 4092, None]), ("control", [None]), ("pages", [1 << 40]),
                     ("tail", [[0] * 16, [1 << 17] + [0] * 15]), ("lastq", [[5, 2, 0]]),
                     ("saved_pending", [-1])):
        with pytest.raises(ValueError):
            fresh.restore({**state, key: bad})
    assert fresh.control == [None, None] and fresh.pages == []      # nothing half-loaded


def test_a_hostile_guest_cannot_stall_linking(d):
    """A guest flipping the tail word under a lock-prefixed loop (clearing LINKED and setting
    it back, setting BUSY itself): set_pending still ends — after at most five cmpxchg —
    and the port is queued somewhere the guest can find it."""
    d.bind(1)
    d.bind(2)
    d.send(1)
    stop = threading.Event()
    w = d.word_gpa(1)

    def hostile():
        while not stop.is_set():
            d.mem.atomic_xchg32(w, LINKED | BUSY | 0x1FFFF)
            d.mem.atomic_and32(w, ~LINKED & U32)
            d.mem.atomic_or32(w, LINKED | MASKED)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    t = threading.Thread(target=hostile)
    t.start()
    results = set()
    t0 = time.monotonic()
    try:
        for _ in range(200):
            d.fifo.tail[0][DEFAULT] = 1                 # port 1 the tail again: every call races
            results.add(d.fifo.set_pending(2, d.ports[2]).split(",")[0])
            d.mem.atomic_and32(d.word_gpa(2), ~LINKED & U32)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert time.monotonic() - t0 < 10
    assert d.fifo.tail[0][DEFAULT] == 2
    # Each call ended in one of Xen's two outcomes: linked behind the (still LINKED) tail, or
    # made the head because the tail had been unlinked.
    assert results and results <= {"linked after port 1", f"head of queue {DEFAULT}"}, results


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_linking_races_the_guest_unlinking_without_losing_or_duplicating(seed):
    """The hypervisor links (EVTCHNOP_send-like set_pending from two "sender" threads on
    ports of two vCPUs and three priorities, some ports moving between vCPUs) while a
    consumer thread per vCPU unlinks like Linux, and masks/unmasks like Linux.  Each event
    is sent only after the previous one on its port was handled, so every send must be
    handled exactly once (by the vCPU whose ack cleared PENDING: an event may sit on two
    queues at once, see test_a_port_on_two_queues_is_seen_pending_by_both_vcpus)."""
    rng = random.Random(seed)
    d = Domain()
    nports = 96
    outstanding = [False] * (nports + 1)
    handled = [0] * (nports + 1)
    sent = [0] * (nports + 1)
    errors = []
    table_lock = threading.Lock()           # the port lock: sends, moves and unmasks take it
    for p in range(1, nports + 1):
        d.bind(p, vcpu=p % 2, priority=(0, DEFAULT, 15)[p % 3])
    stop = threading.Event()

    def handle(port):
        if not outstanding[port]:
            errors.append(f"port {port} handled twice")
        outstanding[port] = False
        handled[port] += 1

    def consumer(vcpu):
        c = Consumer(d, vcpu)
        r = random.Random(seed * 10 + vcpu)
        while not stop.is_set() or d.ready(vcpu):
            d.wake[vcpu].wait(0.01)
            d.wake[vcpu].clear()
            c.handle_events(handle)
            if r.random() < 0.2:            # mask and unmask a port of ours (clear_masked vs BUSY)
                p = r.randrange(1, nports + 1)
                d.guest_mask(p)
                if d.clear_masked(p):
                    with table_lock:
                        d.fifo.unmask(p, d.ports[p])

    def sender(k):
        r = random.Random(seed * 100 + k)
        n, give_up = 0, time.monotonic() + 20
        while n < 1500 and time.monotonic() < give_up:
            p = r.randrange(1 + k, nports + 1, 2)            # each sender its own ports
            with table_lock:
                if r.random() < 0.05:
                    d.ports[p].vcpu ^= 1                     # EVTCHNOP_bind_vcpu meanwhile
                if outstanding[p]:
                    continue
                outstanding[p] = True
                sent[p] += 1
                n += 1
                d.fifo.set_pending(p, d.ports[p])

    old = sys.getswitchinterval()
    sys.setswitchinterval(2e-6)
    consumers = [threading.Thread(target=consumer, args=(v,)) for v in (0, 1)]
    senders = [threading.Thread(target=sender, args=(k,)) for k in (0, 1)]
    try:
        for t in consumers + senders:
            t.start()
        for t in senders:
            t.join()
        deadline = time.monotonic() + 10
        while any(outstanding) and time.monotonic() < deadline:
            for w in d.wake:
                w.set()
            time.sleep(0.01)
    finally:
        stop.set()
        for t in consumers:
            t.join()
        sys.setswitchinterval(old)
        d.mem.close()
    lost = [p for p in range(1, nports + 1) if outstanding[p]]
    assert not errors and not lost, (errors[:5], lost)
    assert handled == sent and sum(sent) == 3000


def test_a_domain_switches_to_fifo_and_back_on_reset():
    """EventChannels with a real XenDomain (port transport): the FIFO ops' errors in 2-level,
    the switch keeping a pending port, a port still LINKED not reallocated, and
    EVTCHNOP_reset going back to 2-level (event_channel.c evtchn_reset)."""
    from devices.ioapic import attach_ioapic
    from vmm.vm import Vm, VmConfig
    from xen.domain import XenConfig, XenDomain

    vm = Vm(VmConfig(memory=16 << 20, irqchip="split", cpus=2))
    attach_ioapic(vm)
    xen = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None)
    mem, ev = vm.memory, xen.evtchn

    def err(f, *a):
        with pytest.raises(XenError) as e:
            f(*a)
        return e.value.errno

    def word(port):
        return mem.read_u32((ARRAY_GFN << 12) + 4 * port)

    try:
        assert ev.port_abi.name == "2-level"
        assert err(ev.expand_array, ARRAY_GFN) == abi.XenErrno.EOPNOTSUPP
        p = ev.bind_ipi(0)
        assert err(ev.set_priority, p, 3) == abi.XenErrno.ENOSYS
        assert err(ev.set_priority, 5000, 3) == abi.XenErrno.EINVAL
        ev.send(p)
        assert ev.port_abi.is_pending(p)
        # A failed first init_control leaves the domain 2-level.
        assert err(ev.init_control, 2, CB_GFN[0], 0) == abi.XenErrno.ENOENT
        assert err(ev.init_control, 0, 1 << 40, 0) == abi.XenErrno.EINVAL
        assert ev.port_abi.name == "2-level"

        assert ev.init_control(0, CB_GFN[0], 0) == abi.EVTCHN_FIFO_LINK_BITS
        assert ev.port_abi.name == "FIFO" and ev.nr_ports() == abi.EVTCHN_2L_NR_CHANNELS_64
        assert err(ev.init_control, 0, CB_GFN[1], 0) == abi.XenErrno.EINVAL
        assert ev.init_control(1, CB_GFN[1], 8) == abi.EVTCHN_FIFO_LINK_BITS
        assert not ev.any_pending([p])                        # no event word yet
        mem.fill(ARRAY_GFN << 12, 4096)
        ev.expand_array(ARRAY_GFN)                            # the 2-level pending port, re-raised
        assert word(p) & (PENDING | LINKED) == PENDING | LINKED and ev.any_pending([p])
        assert mem.read_u32((CB_GFN[0] << 12) + CB_HEAD + 4 * DEFAULT) == p
        assert err(ev.set_priority, p, abi.EVTCHN_FIFO_PRIORITY_MIN + 1) == abi.XenErrno.EINVAL
        ev.set_priority(p, 1)

        # Closed while still on a queue: not reallocated until the guest unlinks it.
        ev.close(p)
        assert not word(p) & PENDING and word(p) & LINKED
        q = ev.bind_ipi(1)
        assert q != p
        mem.atomic_and32((ARRAY_GFN << 12) + 4 * p, ~(LINKED | LINK_MASK) & U32)
        assert ev.bind_ipi(0) == p and ev.ports[p].priority == DEFAULT

        ev.reset(abi.DOMID_SELF)
        assert ev.port_abi.name == "2-level"
        assert err(ev.expand_array, ARRAY_GFN) == abi.XenErrno.EOPNOTSUPP
        assert ev.init_control(0, CB_GFN[0], 0) == abi.EVTCHN_FIFO_LINK_BITS   # and FIFO again
    finally:
        xen.stop()
        vm.close()
