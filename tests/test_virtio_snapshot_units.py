"""Virtio state in snapshots without a guest (ARCHITECTURE.md "Snapshots"): a queue's save and
restore, the transport's on in-process machines (the test is the driver, the vCPUs never
run, the device threads are real), the checks a restored value passes, the hold that
stops a device thread between requests, and virtio-net's frame in hand.  The guest-level
runs are tests/test_virtio_snapshot.py."""

from __future__ import annotations

import socket
import struct
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import guest_path
from devices.virtio import abi
from devices.virtio.net import RX, VirtioNet, parse_mac
from devices.virtio.pci import NOTIFY_OFFSET
from devices.virtio.queue import Virtqueue
from test_virtio_units import (AVAIL, BUF, DESC, HDR, NBUF, RXU, USED, W, common, desc, frame,
                               mem, negotiate, net, net_up, offer, queue, rx_buffers, setup_queue, used,
                               used_ring)
from vmm.machine import MachineSpec, build

__all__ = ["mem", "net"]          # fixtures shared with test_virtio_units
DRIVER_OK = 0xF                   # ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
VERSION_1 = 1 << 32


def wait_until(cond, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------- the queue
def test_queue_round_trip_goes_on_where_it_was(mem):
    q = queue(mem, event_idx=True)
    for i in range(3):
        desc(mem, i, BUF + 0x100 * i, 8, W)
    offer(mem, q, 0, 1, 2)
    for _ in range(2):
        q.push(q.pop(), 8)
    q.needs_notification()
    state = q.save()
    assert state == {"size": 8, "desc": DESC, "driver": AVAIL, "device": USED, "msix_vector": 0xFFFF,
                     "last_avail": 2, "used_idx": 2, "signalled_used": 2, "enabled": True,
                     "reset_pending": False, "signalled_valid": True, "indirect": True, "event_idx": True}
    q2 = Virtqueue(mem, 0, 256, "restored")
    q2.restore(state)
    q2.remap()                                          # memory is loaded: the rings mapped again
    c = q2.pop()
    assert c.head == 2 and q2.pop() is None
    q2.push(c, 8)
    assert used(mem, q2)[0] == 3 and used(mem, q2)[1][2] == (2, 8)


@pytest.mark.parametrize("key,value,why", [
    ("size", "8", "not an integer"), ("last_avail", 0x10000, "not an integer in 0..0xffff"),
    ("desc", -16, "not an integer"), ("enabled", 1, "not a boolean"), ("event_idx", None, "not a boolean"),
])
def test_queue_restore_refuses_values_no_driver_could_write(mem, key, value, why):
    q = queue(mem)
    state = {**q.save(), key: value}
    with pytest.raises(ValueError, match=why):
        Virtqueue(mem, 0, 256).restore(state)
    with pytest.raises(KeyError):
        Virtqueue(mem, 0, 256).restore({k: v for k, v in q.save().items() if k != key})


# ---------------------------------------------------------------- the transport
@pytest.fixture
def rng_machines():
    """Two in-process machines with virtio-rng: the saved one and the restored one."""
    made = []

    def make():
        m = build(MachineSpec(kernel=guest_path("hello"), virtio_rng=True, irqchip="split", memory=32 << 20))
        made.append(m)
        return m
    yield make
    for m in made:
        m.close()


def rng_up(dev, mem):
    """A driver's set-up: VERSION_1 and EVENT_IDX, queue 0 at DESC/AVAIL/USED, DRIVER_OK (which
    starts the device thread); descriptor i a 16-byte writable buffer at BUF + 0x100 * i."""
    mem.fill(DESC, 0x4000)
    assert negotiate(dev, VERSION_1 | 1 << abi.VIRTIO_RING_F_EVENT_IDX) & abi.VIRTIO_CONFIG_S_FEATURES_OK
    setup_queue(dev)
    for i in range(8):
        desc(mem, i, BUF + 0x100 * i, 16, W)
    common(dev, abi.VIRTIO_PCI_COMMON_STATUS, 1, DRIVER_OK)


def used_idx(mem) -> int:
    return struct.unpack("<H", mem.read(USED + 2, 2))[0]


def post(mem, *heads) -> None:
    offer(mem, SimpleNamespace(size=8), *heads)


def test_transport_round_trip_serves_what_was_posted_before_the_snapshot(rng_machines):
    """Held (as a snapshot holds it) with requests posted and their notification taken: the
    restored device, once started, serves them with no new notify; the registers, the queue's
    indices and the feature bits are the saved ones."""
    a = rng_machines()
    dev, mem = a.virtio[0], a.vm.memory
    rng_up(dev, mem)
    post(mem, 0)
    dev.bar.region.write(NOTIFY_OFFSET, 2, 0)           # served by the device thread
    assert wait_until(lambda: used_idx(mem) == 1)
    dev.hold()
    post(mem, 1, 2)
    dev.bar.region.write(NOTIFY_OFFSET, 2, 0)           # taken by the thread, which waits
    time.sleep(0.2)
    assert used_idx(mem) == 1                           # held: nothing served
    state = dev.save()
    ring = mem.read(DESC, 0x4000)
    dev.release()
    assert wait_until(lambda: used_idx(mem) == 3)       # the first machine goes on

    b = rng_machines()
    dev2, mem2 = b.virtio[0], b.vm.memory
    dev2.restore(state)
    mem2.write(DESC, ring)                              # memory as the snapshot has it
    dev2.rebuilt()
    assert (dev2.status, dev2.driver_features, dev2.queues[0].last_avail, dev2.queues[0].used_idx) == \
        (DRIVER_OK, VERSION_1 | 1 << abi.VIRTIO_RING_F_EVENT_IDX, 1, 1)
    assert used_idx(mem2) == 1                          # nothing runs before the machine starts
    dev2.start()
    assert wait_until(lambda: used_idx(mem2) == 3)
    assert dev2.broken is None and mem2.read(BUF + 0x100, 16) != bytes(16)
    post(mem2, 3)                                       # and it goes on
    dev2.bar.region.write(NOTIFY_OFFSET, 2, 0)
    assert wait_until(lambda: used_idx(mem2) == 4)


def test_hold_waits_for_the_request_in_hand_and_stops_the_next(rng_machines):
    m = rng_machines()
    dev, mem = m.virtio[0], m.vm.memory
    rng_up(dev, mem)
    entered, serve = threading.Event(), dev.handle_chain

    def slow(q, chain):                                 # a request that takes a while (a slow disk)
        entered.set()
        time.sleep(0.3)
        return serve(q, chain)
    dev.handle_chain = slow
    post(mem, 0, 1, 2)
    dev.bar.region.write(NOTIFY_OFFSET, 2, 0)
    assert entered.wait(5)
    dev.hold()                                          # returns once the request in hand is done
    assert used_idx(mem) == 1
    time.sleep(0.5)
    assert used_idx(mem) == 1 and dev.queues[0].last_avail == 1    # the rest wait in the ring
    dev.release()
    assert wait_until(lambda: used_idx(mem) == 3)
    # A request longer than the bound: the hold gives up (one line) and lets the thread go.
    entered.clear()
    post(mem, 3)
    dev.bar.region.write(NOTIFY_OFFSET, 2, 0)
    assert entered.wait(5)
    with pytest.raises(TimeoutError, match="virtio-rng 00:0.\\.0: a request still runs after 0.05 s"):
        dev.hold(0.05)
    assert wait_until(lambda: used_idx(mem) == 4)


def saved_rng(m) -> dict:
    dev, mem = m.virtio[0], m.vm.memory
    rng_up(dev, mem)
    dev.hold()
    try:
        return dev.save()
    finally:
        dev.release()


def test_restored_rings_outside_ram_break_the_device_not_the_restore(rng_machines):
    state = saved_rng(rng_machines())
    state["device"]["queues"][0]["desc"] = 0x40_0000_0000
    dev = rng_machines().virtio[0]
    dev.restore(state)
    dev.rebuilt()                                       # checked as at enable: broken, no exception
    assert dev.broken and "restored queue 0: descriptor table 0x4000000000+0x80 is not in guest RAM" in dev.broken
    assert dev.status & abi.VIRTIO_CONFIG_S_NEEDS_RESET and not dev.queues[0].enabled
    assert dev.isr & abi.VIRTIO_PCI_ISR_CONFIG          # told as a broken ring is told at runtime
    dev.start()                                         # its driver had DRIVER_OK: a thread that serves nothing
    negotiate(dev, VERSION_1)                           # a reset recovers it
    assert dev.broken is None


@pytest.mark.parametrize("change,why", [
    (lambda s: s.update(driver_features=1 << 50), "were accepted, but this device offers"),
    (lambda s: s.update(driver_features=0), "were accepted"),                       # no VERSION_1
    (lambda s: s.update(isr=0x10), "saved isr 16 is not an integer in 0..0x3"),
    (lambda s: s.update(status="ok"), "saved status 'ok'"),
    (lambda s: s.update(broken=7), "broken reason 7"),
    (lambda s: s["queues"].append(s["queues"][0]), "2 saved queues, the device has 1"),
    (lambda s: s["queues"][0].update(last_avail=1 << 20), "queue 0: saved last_avail"),
    (lambda s: s.update(driver_features=VERSION_1), "queue 0 uses a feature the driver didn't ask for"),
])
def test_transport_restore_refuses_what_no_driver_could_have_written(rng_machines, change, why):
    state = saved_rng(rng_machines())
    change(state["device"])
    with pytest.raises(ValueError, match=why):
        rng_machines().virtio[0].restore(state)


def test_msix_table_of_another_size_is_refused(rng_machines):
    state = saved_rng(rng_machines())
    dev = rng_machines().virtio[0]
    for bad, why in (({"table": b"\0" * 8}, "is not 32 bytes"), ({"pba": 1 << 5}, "PBA 32 has bits beyond")):
        with pytest.raises(ValueError, match=why):
            dev.restore({**state, "parts": [{**state["parts"][0], **bad}]})


def test_transport_restore_takes_vectors_and_status_as_the_driver_writes_them(rng_machines):
    state = saved_rng(rng_machines())
    s = state["device"]
    s["config_vector"], s["queues"][0]["msix_vector"] = 77, 1      # beyond the 2-entry table; a good one
    s["status"] |= abi.VIRTIO_CONFIG_S_NEEDS_RESET                  # the device's bit, not broken
    dev = rng_machines().virtio[0]
    dev.restore(state)
    assert dev.config_vector == abi.VIRTIO_MSI_NO_VECTOR and dev.queues[0].msix_vector == 1
    assert dev.status == DRIVER_OK


# ---------------------------------------------------------------- virtio-net
def test_net_frame_in_hand_is_saved_and_arriving_frames_wait_in_the_tap(mem, net):
    dev, peer = net
    net_up(dev)
    rx_buffers(mem, dev, [32])
    peer.send(bytes(HDR) + frame(100))                  # 112 bytes: waits for four buffers
    dev.fd_ready(dev.fd, 1)
    assert dev._rx_len == 112
    peer.send(bytes(HDR) + frame(60, fill=7))           # arrives while held: stays in the tap
    dev.hold()
    reader = threading.Thread(target=dev.fd_ready, args=(dev.fd, 1))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive() and dev._rx_len == 112
    state = dev.save_device()
    dev.release()
    reader.join(5)
    assert state["device"] == {"rx_frame": bytes(HDR) + frame(100)}

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    dev2 = VirtioNet(mem, "unit1", mac=parse_mac("52:54:00:01:02:03"), queue_size=8, fd=a.detach())
    try:
        dev2.restore_device(state)
        dev2.rebuilt()                                  # unplugged: the queues mapped again only
        assert dev2._rx_len == 112 and dev2.queues[RX].last_avail == 0 and dev2.negotiated(abi.VIRTIO_NET_F_MRG_RXBUF)
        rx_buffers(mem, dev2, [32, 32, 32], first=1)    # now it fits: placed from the saved frame
        assert used_ring(mem, RXU) == [(0, 32), (1, 32), (2, 32), (3, 16)]
        assert mem.read(NBUF + 0x3000, 16) == frame(100)[-16:]
        bad = {**state, "device": {"rx_frame": bytes(70000)}}
        with pytest.raises(ValueError, match="frame in hand"):
            dev2.restore_device(bad)
    finally:
        dev2.close()
        b.close()
