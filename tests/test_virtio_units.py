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
