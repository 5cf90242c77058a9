"""devices/virtio without a guest: the split virtqueue against a real GuestMemory (no VM),
and the PCI transport on an in-process machine with the test as the driver (the vCPUs
never run).  Hostile rings and chains must raise VirtqueueError (the transport's cue
to mark the device broken), never anything else."""

from __future__ import annotations

import os
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import guest_path
from devices.virtio import abi
from devices.virtio.pci import (BAR_INDEX, DEVICE_CFG_OFFSET, ISR_OFFSET, NOTIFY_OFFSET, VirtioPciDevice)
from devices.virtio.queue import Virtqueue, VirtqueueError
from vmm.machine import MachineSpec, build
from vmm.memory import GuestMemory

DESC, AVAIL, USED, BUF = 0x10000, 0x11000, 0x12000, 0x20000
W, N, I = abi.VRING_DESC_F_WRITE, abi.VRING_DESC_F_NEXT, abi.VRING_DESC_F_INDIRECT


@pytest.fixture(scope="module")
def mem():
    m = GuestMemory(16 << 20)
    yield m
    m.close()


def queue(mem, size=8, indirect=True, event_idx=False):
    mem.fill(DESC, 0x4000)
    q = Virtqueue(mem, 0, 256, "test")
    q.size, q.desc, q.driver, q.device = size, DESC, AVAIL, USED
    q.enable(indirect, event_idx)
    return q


def desc(mem, i, addr, length, flags=0, nxt=0, table=DESC):
    mem.write(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))


def offer(mem, q, *heads, idx=None):
    """Put heads in the avail ring after what is there, and publish the index."""
    cur = struct.unpack("<H", mem.read(AVAIL + 2, 2))[0]
    for k, h in enumerate(heads):
        mem.write(AVAIL + 4 + 2 * ((cur + k) % q.size), struct.pack("<H", h))
    mem.write(AVAIL + 2, struct.pack("<H", (cur + len(heads) if idx is None else idx) & 0xFFFF))


def used(mem, q):
    idx = struct.unpack("<H", mem.read(USED + 2, 2))[0]
    return idx, [struct.unpack("<II", mem.read(USED + 4 + 8 * i, 8)) for i in range(q.size)]


# ---------------------------------------------------------------- good chains
def test_chain_direct_and_indirect(mem):
    q = queue(mem)
    desc(mem, 0, BUF, 16, N, 1)
    desc(mem, 1, BUF + 0x100, 100, W)
    desc(mem, 2, BUF + 0x1000, 32, I)
    desc(mem, 0, BUF + 0x200, 8, N, 1, table=BUF + 0x1000)
    desc(mem, 1, BUF + 0x300, 8, W, table=BUF + 0x1000)
    mem.write(BUF, b"0123456789abcdef")
    offer(mem, q, 0, 2)
    c = q.pop()
    assert (c.head, c.out_len, c.in_len, c.ndesc) == (0, 16, 100, 2)
    assert c.read(4, 6) == b"456789"
    assert c.write(98, b"xyz") == 2                     # clipped at the end of the buffers
    q.push(c, 100)
    c2 = q.pop()
    assert (c2.head, c2.out_len, c2.in_len, c2.ndesc) == (2, 8, 8, 3)
    q.push(c2, 8)
    assert q.pop() is None
    assert used(mem, q)[0] == 2 and used(mem, q)[1][:2] == [(0, 100), (2, 8)]


def test_indices_wrap_around(mem):
    q = queue(mem, size=4)
    desc(mem, 0, BUF, 8, W)
    q.last_avail = q.used_idx = 0xFFFE
    mem.write(AVAIL + 2, struct.pack("<H", 0xFFFE))
    offer(mem, q, 0, 0, 0)                              # 0xFFFE, 0xFFFF, 0x0000
    for _ in range(3):
        q.push(q.pop(), 8)
    assert q.pop() is None and q.used_idx == 1


def test_event_idx_and_no_interrupt(mem):
    q = queue(mem, event_idx=False)
    desc(mem, 0, BUF, 8, W)
    offer(mem, q, 0)
    q.push(q.pop(), 0)
    assert q.needs_notification()
    mem.write(AVAIL, struct.pack("<H", abi.VRING_AVAIL_F_NO_INTERRUPT))
    offer(mem, q, 0)
    q.push(q.pop(), 0)
    assert not q.needs_notification()
    mem.write(AVAIL, b"\0\0")

    q = queue(mem, event_idx=True)
    mem.write(AVAIL + 2, b"\0\0")
    used_event = AVAIL + 4 + 2 * q.size
    mem.write(used_event, struct.pack("<H", 0))        # tell me when used passes 0
    offer(mem, q, 0)
    q.push(q.pop(), 0)
    assert q.needs_notification()                       # the first one always
    offer(mem, q, 0)
    q.push(q.pop(), 0)                                  # used 2, event still 0: already told
    assert not q.needs_notification()
    mem.write(used_event, struct.pack("<H", 2))
    offer(mem, q, 0)
    q.push(q.pop(), 0)                                  # used 3 passes 2
    assert q.needs_notification()
    # avail_event: the device asks to be notified past what it took
    assert not q.publish_avail_event()
    assert struct.unpack("<H", mem.read(USED + 4 + 8 * q.size, 2))[0] == 3
    offer(mem, q, 0)
    assert q.publish_avail_event()


# ---------------------------------------------------------------- hostile rings
@pytest.mark.parametrize("size,desc_addr,avail,used_addr,why", [
    (6, DESC, AVAIL, USED, "not a power of 2"),
    (512, DESC, AVAIL, USED, "not a power of 2 in 1..256"),
    (0, DESC, AVAIL, USED, "not a power of 2"),
    (8, DESC + 8, AVAIL, USED, "not 16-aligned"),
    (8, DESC, AVAIL + 1, USED, "not 2-aligned"),
    (8, DESC, AVAIL, USED + 2, "not 4-aligned"),
    (8, 0x40_0000_0000, AVAIL, USED, "descriptor table 0x4000000000+0x80 is not in guest RAM"),
    (8, DESC, (16 << 20) - 8, USED, "driver area"),                 # runs off the end of RAM
    (8, DESC, AVAIL, 0xFEE00000, "device area 0xfee00000"),         # the LAPIC, not RAM
])
def test_bad_rings_are_refused_at_enable(mem, size, desc_addr, avail, used_addr, why):
    q = Virtqueue(mem, 0, 256, "test")
    q.size, q.desc, q.driver, q.device = size, desc_addr, avail, used_addr
    with pytest.raises(VirtqueueError, match=re.escape(why)):
        q.enable(True, True)
    assert not q.enabled


def hostile(mem, q, why):
    with pytest.raises(VirtqueueError, match=re.escape(why)):
        q.pop()


def test_descriptor_loop(mem):
    q = queue(mem)
    desc(mem, 0, BUF, 8, W | N, 1)
    desc(mem, 1, BUF, 8, W | N, 0)
    offer(mem, q, 0)
    hostile(mem, q, "a loop")


def test_self_loop_in_an_indirect_table(mem):
    q = queue(mem)
    desc(mem, 0, BUF + 0x1000, 32, I)
    desc(mem, 0, BUF, 8, W | N, 1, table=BUF + 0x1000)
    desc(mem, 1, BUF, 8, W | N, 1, table=BUF + 0x1000)
    offer(mem, q, 0)
    hostile(mem, q, "longer than its indirect table")


def test_avail_index_jump(mem):
    q = queue(mem)
    desc(mem, 0, BUF, 8, W)
    offer(mem, q, 0, idx=9)
    hostile(mem, q, "9 entries ahead")
    q = queue(mem)
    offer(mem, q, 0, idx=0x8000)
    hostile(mem, q, "beyond the queue size")


def test_nested_indirect(mem):
    q = queue(mem)
    desc(mem, 0, BUF + 0x1000, 16, I)
    desc(mem, 0, BUF + 0x2000, 16, I, table=BUF + 0x1000)
    desc(mem, 0, BUF, 8, W, table=BUF + 0x2000)
    offer(mem, q, 0)
    hostile(mem, q, "indirect descriptor inside an indirect table")


@pytest.mark.parametrize("setup,why", [
    (lambda m: desc(m, 0, BUF + 0x1000, 16, I | N, 1), "with NEXT set"),
    (lambda m: desc(m, 0, BUF + 0x1000, 24, I), "indirect table of 24 bytes"),
    (lambda m: desc(m, 0, BUF + 0x1000, 0, I), "indirect table of 0 bytes"),
    (lambda m: desc(m, 0, 0x40_0000_0000, 16, I), "indirect table 0x4000000000"),
    (lambda m: desc(m, 0, BUF, 8, W | N, 9), "next 9 is beyond"),
    (lambda m: (desc(m, 0, BUF, 8, W | N, 1), desc(m, 1, BUF, 8, 0)), "readable buffer after a device-writable"),
    (lambda m: desc(m, 0, 0x30_0000_0000, 8, W), "buffer 0x3000000000"),
    (lambda m: desc(m, 0, (16 << 20) - 4, 8, W), "not in guest RAM"),     # straddles the end of RAM
    (lambda m: desc(m, 0, 0xFEC00000, 4, 0), "not in guest RAM"),        # the I/O APIC
])
def test_bad_chains(mem, setup, why):
    q = queue(mem)
    setup(mem)
    offer(mem, q, 0)
    hostile(mem, q, why)


def test_indirect_needs_the_feature(mem):
    q = queue(mem, indirect=False)
    desc(mem, 0, BUF + 0x1000, 16, I)
    offer(mem, q, 0)
    hostile(mem, q, "without VIRTIO_F_INDIRECT_DESC")


def test_head_beyond_the_queue(mem):
    q = queue(mem)
    offer(mem, q, 8)
    hostile(mem, q, "head 8 is beyond")


def test_a_full_ring_of_long_chains_is_fine(mem):
    q = queue(mem, size=8)
    for i in range(8):
        desc(mem, i, BUF + 16 * i, 16, N | (W if i >= 4 else 0), i + 1)
    desc(mem, 7, BUF, 16, W)
    offer(mem, q, *([0] * 8))
    for _ in range(8):
        c = q.pop()
        assert c.ndesc == 8 and c.out_len == 64 and c.in_len == 64
        q.push(c, 64)
    assert q.pop() is None


_addr = st.one_of(st.sampled_from([BUF, BUF + 0x1000, DESC, 0, (16 << 20) - 16, 0xFEC00000, 1 << 40]),
                  st.integers(0, (1 << 64) - 1))
_desc = st.tuples(_addr, st.one_of(st.integers(0, 64), st.integers(0, (1 << 32) - 1)),
                  st.integers(0, 7), st.integers(0, 9))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(table=st.lists(_desc, min_size=8, max_size=8), indirect=st.lists(_desc, min_size=4, max_size=4),
       heads=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8), idx=st.integers(0, 0xFFFF),
       features=st.tuples(st.booleans(), st.booleans()))
def test_any_ring_content_ends_in_a_chain_or_virtqueue_error(mem, table, indirect, heads, idx, features):
    """Whatever the driver wrote, pop() returns chains inside RAM or raises VirtqueueError,
    in bounded time (a property over random descriptor tables, indirect tables, heads and
    avail indices)."""
    q = queue(mem, indirect=features[0], event_idx=features[1])
    for i, d in enumerate(table):
        desc(mem, i, *d)
    for i, d in enumerate(indirect):
        desc(mem, i, *d, table=BUF + 0x1000)
    offer(mem, q, *heads, idx=idx)
    try:
        for _ in range(q.size + 1):
            c = q.pop()
            if c is None:
                break
            assert c.ndesc <= 8 + 4
            for v in c.out + c.in_:
                assert len(v) <= 1 << 32
            q.push(c, c.in_len)
            q.needs_notification()
    except VirtqueueError:
        pass


# ---------------------------------------------------------------- the transport, driven from here
@pytest.fixture
def machine(tmp_path):
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(range(256)) * 8)              # 4 sectors
    m = build(MachineSpec(kernel=guest_path("hello"), virtio_rng=True, drives=[{"path": str(disk)}],
                          irqchip="split"))
    yield m
    m.close()


def common(dev, off, size, value=None):
    if value is None:
        return dev.bar.region.read(off, size)
    dev.bar.region.write(off, size, value)


def negotiate(dev, features):
    common(dev, abi.VIRTIO_PCI_COMMON_STATUS, 1, 0)
    common(dev, abi.VIRTIO_PCI_COMMON_STATUS, 1, abi.VIRTIO_CONFIG_S_ACKNOWLEDGE | abi.VIRTIO_CONFIG_S_DRIVER)
    for sel in (0, 1):
        common(dev, abi.VIRTIO_PCI_COMMON_GFSELECT, 4, sel)
        common(dev, abi.VIRTIO_PCI_COMMON_GF, 4, (features >> (32 * sel)) & 0xFFFFFFFF)
    common(dev, abi.VIRTIO_PCI_COMMON_STATUS, 1, 0xB)
    return common(dev, abi.VIRTIO_PCI_COMMON_STATUS, 1)


def setup_queue(dev, desc_addr=DESC, size=8):
    common(dev, abi.VIRTIO_PCI_COMMON_Q_SELECT, 2, 0)
    common(dev, abi.VIRTIO_PCI_COMMON_Q_SIZE, 2, size)
    for off, addr in ((abi.VIRTIO_PCI_COMMON_Q_DESCLO, desc_addr), (abi.VIRTIO_PCI_COMMON_Q_AVAILLO, AVAIL),
                      (abi.VIRTIO_PCI_COMMON_Q_USEDLO, USED)):
        common(dev, off, 4, addr & 0xFFFFFFFF)
        common(dev, off + 4, 4, addr >> 32)
    common(dev, abi.VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1)


def test_identity_and_capabilities(machine):
    rng, blk = machine.virtio
    assert (rng.vendor_id, rng.device_id, blk.device_id) == (0x1AF4, 0x1044, 0x1042)
    assert rng.config[0x08] == 1                         # revision 1: modern
    seen = {}
    ptr = rng.config[0x34]
    while ptr:
        if rng.config[ptr] == abi.PCI_CAP_ID_VNDR:
            t = rng.config[ptr + 3]
            seen[t] = (rng.config[ptr + 4], rng.get(ptr + 8, 4), rng.get(ptr + 12, 4))
        ptr = rng.config[ptr + 1]
    assert seen[abi.VIRTIO_PCI_CAP_COMMON_CFG] == (BAR_INDEX, 0, abi.VIRTIO_PCI_COMMON_CFG_SIZE)
    assert seen[abi.VIRTIO_PCI_CAP_ISR_CFG][:2] == (BAR_INDEX, ISR_OFFSET)
    assert seen[abi.VIRTIO_PCI_CAP_NOTIFY_CFG][:2] == (BAR_INDEX, NOTIFY_OFFSET)
    assert abi.VIRTIO_PCI_CAP_PCI_CFG in seen and abi.VIRTIO_PCI_CAP_DEVICE_CFG not in seen
    assert rng.find_capability(0x11) is not None         # MSI-X
    assert struct.unpack_from("<Q", bytes(blk.device_config()))[0] == 4      # capacity in sectors


def test_feature_negotiation(machine):
    rng = machine.virtio[0]
    assert not negotiate(rng, 1 << abi.VIRTIO_RING_F_INDIRECT_DESC) & abi.VIRTIO_CONFIG_S_FEATURES_OK   # no VERSION_1
    assert not negotiate(rng, 1 << 32 | 1 << 50) & abi.VIRTIO_CONFIG_S_FEATURES_OK                     # not offered
    assert negotiate(rng, 1 << 32 | 1 << 28) & abi.VIRTIO_CONFIG_S_FEATURES_OK
    common(rng, abi.VIRTIO_PCI_COMMON_GFSELECT, 4, 0)
    common(rng, abi.VIRTIO_PCI_COMMON_GF, 4, 0)           # ignored after FEATURES_OK
    assert common(rng, abi.VIRTIO_PCI_COMMON_GF, 4) == 1 << 28
    assert common(rng, abi.VIRTIO_PCI_COMMON_DF, 2) == 0  # not the field's width: reads 0
    common(rng, abi.VIRTIO_PCI_COMMON_STATUS, 1, 0)       # reset
    assert common(rng, abi.VIRTIO_PCI_COMMON_STATUS, 1) == 0 and rng.driver_features == 0


def test_hostile_driver_marks_the_device_broken_with_a_config_interrupt(machine):
    rng = machine.virtio[0]
    pci = machine.pci
    negotiate(rng, 1 << 32)
    setup_queue(rng, desc_addr=0x40_0000_0000)            # outside RAM
    st = common(rng, abi.VIRTIO_PCI_COMMON_STATUS, 1)
    assert st & abi.VIRTIO_CONFIG_S_NEEDS_RESET and rng.broken and "not in guest RAM" in rng.broken
    assert common(rng, abi.VIRTIO_PCI_COMMON_Q_ENABLE, 2) == 0
    gsi = pci.intx_gsi(rng.slot, 1)                       # MSI-X off: INTx and the ISR's config bit
    assert pci.gsi_level(gsi)
    assert rng.bar.region.read(ISR_OFFSET, 1) == abi.VIRTIO_PCI_ISR_CONFIG
    assert rng.bar.region.read(ISR_OFFSET, 1) == 0 and not pci.gsi_level(gsi)     # read-to-clear
    common(rng, abi.VIRTIO_PCI_COMMON_STATUS, 1, 0xF)     # NEEDS_RESET sticks until a reset
    assert common(rng, abi.VIRTIO_PCI_COMMON_STATUS, 1) & abi.VIRTIO_CONFIG_S_NEEDS_RESET
    negotiate(rng, 1 << 32)                               # reset, then a good queue
    setup_queue(rng)
    assert rng.broken is None and common(rng, abi.VIRTIO_PCI_COMMON_Q_ENABLE, 2) == 1


def test_queue_fields_are_locked_while_enabled_and_queue_reset(machine):
    rng = machine.virtio[0]
    mem = machine.vm.memory
    mem.fill(DESC, 0x4000)
    negotiate(rng, 1 << 32 | 1 << abi.VIRTIO_F_RING_RESET)
    setup_queue(rng)
    common(rng, abi.VIRTIO_PCI_COMMON_Q_SIZE, 2, 4)
    assert common(rng, abi.VIRTIO_PCI_COMMON_Q_SIZE, 2) == 8
    common(rng, abi.VIRTIO_PCI_COMMON_Q_RESET, 2, 1)
    assert common(rng, abi.VIRTIO_PCI_COMMON_Q_RESET, 2) == 1
    assert common(rng, abi.VIRTIO_PCI_COMMON_Q_ENABLE, 2) == 0
    common(rng, abi.VIRTIO_PCI_COMMON_Q_SELECT, 2, 5)      # no such queue
    assert common(rng, abi.VIRTIO_PCI_COMMON_Q_SIZE, 2) == 0
    assert common(rng, abi.VIRTIO_PCI_COMMON_Q_MSIX, 2) == abi.VIRTIO_MSI_NO_VECTOR


def test_pci_cfg_window_reaches_the_bar(machine):
    rng = machine.virtio[0]
    c = rng._pci_cfg
    pci = machine.pci
    slot = rng.slot
    pci.write_config(slot, 0, c + abi.VIRTIO_PCI_CAP_BAR, 1, BAR_INDEX)
    pci.write_config(slot, 0, c + abi.VIRTIO_PCI_CAP_OFFSET, 4, abi.VIRTIO_PCI_COMMON_NUMQ)
    pci.write_config(slot, 0, c + abi.VIRTIO_PCI_CAP_LENGTH, 4, 2)
    assert pci.read_config(slot, 0, c + abi.VIRTIO_PCI_CFG_CAP_DATA, 4) & 0xFFFF == 1
    pci.write_config(slot, 0, c + abi.VIRTIO_PCI_CAP_OFFSET, 4, abi.VIRTIO_PCI_COMMON_STATUS)
    pci.write_config(slot, 0, c + abi.VIRTIO_PCI_CAP_LENGTH, 4, 1)
    pci.write_config(slot, 0, c + abi.VIRTIO_PCI_CFG_CAP_DATA, 4, abi.VIRTIO_CONFIG_S_ACKNOWLEDGE)
    assert rng.status == abi.VIRTIO_CONFIG_S_ACKNOWLEDGE


def test_blk_config_space(machine):
    blk = machine.virtio[1]
    assert blk.bar.region.read(DEVICE_CFG_OFFSET, 4) == 4                   # capacity low
    assert blk.bar.region.read(DEVICE_CFG_OFFSET + abi.VIRTIO_BLK_CFG_BLK_SIZE, 4) == 512
    assert blk.offered & (1 << abi.VIRTIO_BLK_F_DISCARD) and not blk.offered & (1 << abi.VIRTIO_BLK_F_RO)


def test_devices_are_virtio_pci_devices(machine):
    assert all(isinstance(d, VirtioPciDevice) for d in machine.virtio)
    assert os.path.basename(machine.virtio[1].path) == "d.img"


# ---------------------------------------------------------------- virtio-net, its tap a datagram socket
# The device (devices/virtio/net.py) unplugged: no bus, so no device thread; the test calls the
# thread's hooks (queue_notified, fd_ready) itself.  The tap's end is a socketpair's: one datagram
# is one frame with its 12-byte header, as a tap with IFF_VNET_HDR reads and writes them.
import socket  # noqa: E402

from devices.virtio.net import RX, TX, VirtioNet, parse_mac  # noqa: E402

RXD, RXA, RXU = 0x30000, 0x31000, 0x32000
TXD, TXA, TXU = 0x34000, 0x35000, 0x36000
NBUF = 0x40000                                          # receive buffers: 0x1000 apart
HDR = abi.VIRTIO_NET_HDR_V1_SIZE
NET_FEATURES = (1 << 32 | 1 << abi.VIRTIO_NET_F_MAC | 1 << abi.VIRTIO_NET_F_STATUS
                | 1 << abi.VIRTIO_RING_F_INDIRECT_DESC)
MRG = 1 << abi.VIRTIO_NET_F_MRG_RXBUF


@pytest.fixture
def net(mem):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    mem.fill(0x30000, 0x20000)
    dev = VirtioNet(mem, "unit0", mac=parse_mac("52:54:00:01:02:03"), queue_size=8, fd=a.detach())
    yield dev, b
    dev.close()
    b.close()


def net_up(dev, features=NET_FEATURES | MRG):
    assert negotiate(dev, features) & abi.VIRTIO_CONFIG_S_FEATURES_OK
    for q, (d, a, u) in enumerate(((RXD, RXA, RXU), (TXD, TXA, TXU))):
        common(dev, abi.VIRTIO_PCI_COMMON_Q_SELECT, 2, q)
        common(dev, abi.VIRTIO_PCI_COMMON_Q_SIZE, 2, 8)
        for off, addr in ((abi.VIRTIO_PCI_COMMON_Q_DESCLO, d), (abi.VIRTIO_PCI_COMMON_Q_AVAILLO, a),
                          (abi.VIRTIO_PCI_COMMON_Q_USEDLO, u)):
            common(dev, off, 4, addr)
            common(dev, off + 4, 4, 0)
        common(dev, abi.VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1)
    common(dev, abi.VIRTIO_PCI_COMMON_STATUS, 1, 0xF)
    assert dev.broken is None and dev.status == 0xF


def post(mem, avail, heads):
    cur = struct.unpack("<H", mem.read(avail + 2, 2))[0]
    for k, h in enumerate(heads):
        mem.write(avail + 4 + 2 * ((cur + k) % 8), struct.pack("<H", h))
    mem.write(avail + 2, struct.pack("<H", (cur + len(heads)) & 0xFFFF))


def used_ring(mem, used):
    idx = struct.unpack("<H", mem.read(used + 2, 2))[0]
    return [struct.unpack("<II", mem.read(used + 4 + 8 * (i % 8), 8)) for i in range(idx)]


def rx_buffers(mem, dev, sizes, first=0, flags=W):
    """Post receive buffers (descriptor i at NBUF + 0x1000 * i) and notify."""
    for i, n in enumerate(sizes, first):
        desc(mem, i, NBUF + 0x1000 * i, n, flags, table=RXD)
    post(mem, RXA, range(first, first + len(sizes)))
    dev.queue_notified(dev.queues[RX])


def frame(n, fill=0x5A):
    return bytes(range(14)) + bytes([fill]) * (n - 14)


def test_net_identity_config_and_features(net):
    dev, _ = net
    assert (dev.device_id, dev.config[0x0B], dev.config[0x0A]) == (0x1041, 0x02, 0x00)
    assert dev.bar.region.read(DEVICE_CFG_OFFSET, 4) == 0x01005452      # 52:54:00:01, little-endian
    assert dev.bar.region.read(DEVICE_CFG_OFFSET + 4, 2) == 0x0302
    assert dev.bar.region.read(DEVICE_CFG_OFFSET + abi.VIRTIO_NET_CFG_STATUS, 2) == abi.VIRTIO_NET_S_LINK_UP
    for f in (abi.VIRTIO_NET_F_MAC, abi.VIRTIO_NET_F_STATUS, abi.VIRTIO_NET_F_MRG_RXBUF, 32):
        assert dev.offered & 1 << f
    for f in (abi.VIRTIO_NET_F_CSUM, abi.VIRTIO_NET_F_GUEST_CSUM, abi.VIRTIO_NET_F_HOST_TSO4,
              abi.VIRTIO_NET_F_GUEST_TSO4, abi.VIRTIO_NET_F_CTRL_VQ, abi.VIRTIO_NET_F_MQ):
        assert not dev.offered & 1 << f                   # no offloads, no control queue
    assert common(dev, abi.VIRTIO_PCI_COMMON_NUMQ, 2) == 2


@pytest.mark.parametrize("text,ok", [("52:54:00:12:34:56", True), ("52:54:00:AB:cd:EF", True),
                                     ("01:00:5e:00:00:01", False), ("00:00:00:00:00:00", False),
                                     ("52:54:00:12:34", False), ("52-54-00-12-34-56", False),
                                     ("52:54:00:12:34:5g", False), ("525:4:00:12:34:56", False)])
def test_parse_mac(text, ok):
    if ok:
        assert len(parse_mac(text)) == 6
    else:
        with pytest.raises(ValueError):
            parse_mac(text)


def test_net_tx_gathers_one_frame_and_zeroes_the_header(mem, net):
    dev, peer = net
    net_up(dev)
    f = frame(60)
    mem.write(NBUF, bytes([abi.VIRTIO_NET_HDR_F_NEEDS_CSUM, abi.VIRTIO_NET_HDR_GSO_TCPV4]) + b"\xff" * 10)
    mem.write(NBUF + 0x100, f[:20])
    mem.write(NBUF + 0x200, f[20:])
    desc(mem, 0, NBUF, HDR, N, 1, table=TXD)
    desc(mem, 1, NBUF + 0x100, 20, N, 2, table=TXD)
    desc(mem, 2, NBUF + 0x200, 40, 0, table=TXD)
    post(mem, TXA, [0])
    dev.queue_notified(dev.queues[TX])
    assert peer.recv(70000) == bytes(HDR) + f           # one datagram: no offload negotiated, a zero header
    assert used_ring(mem, TXU) == [(0, 0)]
    assert dev.stats["tx_packets"] == 1 and dev.isr & abi.VIRTIO_PCI_ISR_QUEUE and dev.intx_level


@pytest.mark.parametrize("chain,why", [
    ([(HDR, N), (60, W)], "transmit chain with 60 device-writable bytes"),
    ([(8, 0)], "transmit chain of 8 bytes has no 12-byte virtio_net_hdr"),
    ([(HDR, W)], "device-writable"),
])
def test_net_tx_hostile_chains_break_the_device(mem, net, chain, why):
    dev, peer = net
    net_up(dev)
    for i, (n, flags) in enumerate(chain):
        desc(mem, i, NBUF + 0x1000 * i, n, flags, i + 1, table=TXD)
    post(mem, TXA, [0])
    dev.queue_notified(dev.queues[TX])
    assert dev.broken and why in dev.broken
    assert dev.status & abi.VIRTIO_CONFIG_S_NEEDS_RESET and used_ring(mem, TXU) == []
    with pytest.raises(BlockingIOError):
        peer.recv(70000)


@pytest.mark.parametrize("n,why", [(abi.VIRTIO_NET_MAX_PACKET + 1, "longer than 65550"), (13, "runt")])
def test_net_tx_bad_frames_are_dropped(mem, net, n, why):
    dev, peer = net
    net_up(dev)
    desc(mem, 0, NBUF, HDR, N, 1, table=TXD)
    desc(mem, 1, 0x100000, n, 0, table=TXD)             # 64 KiB + 15 of guest RAM
    desc(mem, 2, NBUF, HDR, N, 3, table=TXD)
    desc(mem, 3, 0x100000, 64, 0, table=TXD)
    post(mem, TXA, [0, 2])
    dev.queue_notified(dev.queues[TX])
    assert dev.broken is None
    assert used_ring(mem, TXU) == [(0, 0), (2, 0)]      # both returned; only the good one sent
    assert len(peer.recv(70000)) == HDR + 64
    with pytest.raises(BlockingIOError):
        peer.recv(70000)
    assert dev.stats == {"rx_packets": 0, "rx_dropped": 0, "tx_packets": 1, "tx_dropped": 1}


def test_net_rx_a_frame_spans_merged_buffers(mem, net):
    dev, peer = net
    net_up(dev)
    rx_buffers(mem, dev, [32] * 4)
    f = frame(60)
    peer.send(bytes(HDR) + f)
    dev.fd_ready(dev.fd, 1)
    assert used_ring(mem, RXU) == [(0, 32), (1, 32), (2, 8)]
    got = mem.read(NBUF, 32) + mem.read(NBUF + 0x1000, 32) + mem.read(NBUF + 0x2000, 8)
    assert got[:HDR] == bytes(10) + struct.pack("<H", 3)     # flags 0, GSO_NONE, num_buffers 3
    assert got[HDR:] == f
    assert dev.stats["rx_packets"] == 1 and dev.watched_fds() == {dev.fd: 1}


def test_net_rx_without_mrg_a_small_buffer_drops_the_frame_and_stays(mem, net):
    dev, peer = net
    net_up(dev, NET_FEATURES)
    rx_buffers(mem, dev, [40])
    peer.send(bytes(HDR) + frame(60))                    # 72 bytes: doesn't fit
    peer.send(bytes(HDR) + frame(20))                    # 32: fits in the same buffer
    dev.fd_ready(dev.fd, 1)
    assert used_ring(mem, RXU) == [(0, 32)]
    assert mem.read(NBUF, HDR) == bytes(10) + struct.pack("<H", 1)
    assert dev.stats["rx_dropped"] == 1 and dev.stats["rx_packets"] == 1 and dev.broken is None


@pytest.mark.parametrize("flags,size,features,why", [
    (0, 1526, NET_FEATURES | MRG, "receive chain with 1526 device-readable bytes"),
    (W, 8, NET_FEATURES | MRG, "receive buffer of 8 bytes, shorter than the 12-byte virtio_net_hdr"),
])
def test_net_rx_hostile_chains_break_the_device(mem, net, flags, size, features, why):
    dev, peer = net
    net_up(dev, features)
    rx_buffers(mem, dev, [size], flags=flags)
    peer.send(bytes(HDR) + frame(60))
    dev.fd_ready(dev.fd, 1)
    assert dev.broken and why in dev.broken and dev.watched_fds() == {}


def test_net_rx_stops_reading_the_tap_without_buffers_and_resumes_on_notify(mem, net):
    dev, peer = net
    net_up(dev)
    dev.queue_notified(dev.queues[RX])                   # DRIVER_OK's look: nothing posted
    assert dev.watched_fds() == {}                       # paused: the tap is not polled
    for k in range(3):
        peer.send(bytes(HDR) + frame(100, fill=k))
    dev.fd_ready(dev.fd, 1)                              # even if woken, nothing is read
    assert dev._rx_len == 0 and used_ring(mem, RXU) == []
    rx_buffers(mem, dev, [1526, 1526])                   # the notify resumes: two frames in
    assert [n for _, n in used_ring(mem, RXU)] == [112, 112]
    assert dev.watched_fds() == {} and dev._rx_len == 0  # out of buffers again, nothing in hand
    rx_buffers(mem, dev, [1526], first=2)
    assert len(used_ring(mem, RXU)) == 3 and mem.read(NBUF + 0x2000 + HDR + 14, 1) == b"\x02"
    rx_buffers(mem, dev, [1526], first=3)                # the tap empty: it is polled again
    assert len(used_ring(mem, RXU)) == 3 and dev.watched_fds() == {dev.fd: 1}


def test_net_rx_frame_waits_for_enough_merged_buffers(mem, net):
    dev, peer = net
    net_up(dev)
    rx_buffers(mem, dev, [32])
    peer.send(bytes(HDR) + frame(100))                   # 112 bytes: four buffers of 32
    dev.fd_ready(dev.fd, 1)
    assert used_ring(mem, RXU) == [] and dev._rx_len == 112 and dev.watched_fds() == {}
    assert dev.queues[RX].last_avail == 0                # the one buffer given back
    rx_buffers(mem, dev, [32, 32, 32], first=1)
    assert used_ring(mem, RXU) == [(0, 32), (1, 32), (2, 32), (3, 16)]
    assert struct.unpack("<H", mem.read(NBUF + 10, 2))[0] == 4


def test_net_rx_frame_larger_than_a_full_ring_is_dropped(mem, net):
    dev, peer = net
    net_up(dev)
    rx_buffers(mem, dev, [32] * 8)                       # 256 bytes in all
    peer.send(bytes(HDR) + frame(300))
    peer.send(bytes(HDR) + frame(20))
    dev.fd_ready(dev.fd, 1)
    assert used_ring(mem, RXU) == [(0, 32)]              # the second frame took the first buffer
    assert dev.stats["rx_dropped"] == 1 and dev.stats["rx_packets"] == 1


@pytest.mark.parametrize("hdr,n,why", [
    (bytes([abi.VIRTIO_NET_HDR_F_NEEDS_CSUM]) + bytes(11), 60, "didn't negotiate"),
    (bytes([0, abi.VIRTIO_NET_HDR_GSO_TCPV4]) + bytes(10), 60, "didn't negotiate"),
    (bytes(HDR), 10, "runt"),
])
def test_net_rx_frames_the_guest_cant_take_are_dropped(mem, net, hdr, n, why):
    dev, peer = net
    net_up(dev)
    rx_buffers(mem, dev, [1526])
    peer.send(hdr + frame(60)[:n])
    dev.fd_ready(dev.fd, 1)
    assert used_ring(mem, RXU) == [] and dev.stats["rx_dropped"] == 1 and dev.broken is None


def test_net_reset_drops_the_frame_in_hand(mem, net):
    dev, peer = net
    net_up(dev)
    rx_buffers(mem, dev, [32])
    peer.send(bytes(HDR) + frame(100))
    dev.fd_ready(dev.fd, 1)
    assert dev._rx_len and dev.watched_fds() == {}
    common(dev, abi.VIRTIO_PCI_COMMON_STATUS, 1, 0)
    assert dev._rx_len == 0 and dev.stats["rx_dropped"] == 1 and dev.watched_fds() == {}
    net_up(dev)
    assert dev.watched_fds() == {dev.fd: 1}


def test_net_abi_matches_linux_headers(tmp_path):
    """devices/virtio/abi.py's virtio-net and tun numbers against the host's <linux/*.h>."""
    import shutil
    import subprocess
    if not shutil.which("gcc"):
        pytest.skip("no gcc")
    names = ["VIRTIO_ID_NET", "VIRTIO_NET_F_CSUM", "VIRTIO_NET_F_GUEST_CSUM", "VIRTIO_NET_F_MAC",
             "VIRTIO_NET_F_MRG_RXBUF", "VIRTIO_NET_F_STATUS", "VIRTIO_NET_F_CTRL_VQ", "VIRTIO_NET_F_MQ",
             "VIRTIO_NET_F_HOST_TSO4", "VIRTIO_NET_F_GUEST_TSO4", "VIRTIO_NET_S_LINK_UP",
             "VIRTIO_NET_HDR_F_NEEDS_CSUM", "VIRTIO_NET_HDR_GSO_NONE", "VIRTIO_NET_HDR_GSO_TCPV4",
             "TUNSETIFF", "TUNSETOFFLOAD", "TUNSETVNETHDRSZ", "TUNGETVNETHDRSZ", "IFF_TAP", "IFF_NO_PI",
             "IFF_VNET_HDR", "TUN_F_CSUM", "IFNAMSIZ"]
    exprs = {"VIRTIO_NET_HDR_V1_SIZE": "sizeof(struct virtio_net_hdr_v1)",
             "VIRTIO_NET_HDR_NUM_BUFFERS": "offsetof(struct virtio_net_hdr_v1, num_buffers)",
             "VIRTIO_NET_CFG_STATUS": "offsetof(struct virtio_net_config, status)",
             "VIRTIO_NET_CFG_MAX_VIRTQUEUE_PAIRS": "offsetof(struct virtio_net_config, max_virtqueue_pairs)",
             "IFREQ_SIZE": "sizeof(struct ifreq)", "IFREQ_FLAGS": "offsetof(struct ifreq, ifr_flags)",
             **{n: n for n in names}}
    src = tmp_path / "abi.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <sys/ioctl.h>\n#include <net/if.h>\n"
                   "#include <linux/if_tun.h>\n"
                   "#include <linux/virtio_ids.h>\n#include <linux/virtio_net.h>\nint main(void) {\n" +
                   "".join(f'printf("{k} %lu\\n", (unsigned long)({v}));\n' for k, v in exprs.items()) + "}\n")
    r = subprocess.run(["gcc", "-o", str(tmp_path / "abi"), str(src)], capture_output=True, text=True)
    if r.returncode and "No such file" in r.stderr:
        pytest.skip(f"no Linux uapi headers: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(tmp_path / "abi")], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        name, value = line.split()
        assert getattr(abi, name) == int(value), name
