"""Buses and guest memory: ranges, overlaps and bounds."""

from __future__ import annotations

import pytest

from vmm.bus import BusError, MmioBus, PioBus
from vmm.memory import GiB, GuestMemory, GuestMemoryError, HIGH_RAM_BASE, HostPage, LOW_RAM_MAX, MiB
from vmm.sizes import parse_size
from vmm.errors import UserError


class Dev:
    def read(self, offset, size):
        return offset

    def write(self, offset, size, value):
        pass


def test_pio_overlap_rejected_and_lookup():
    bus = PioBus()
    bus.register(0x3F8, 8, Dev(), "serial")
    with pytest.raises(BusError, match="overlaps serial"):
        bus.register(0x3FF, 2, Dev(), "other")
    with pytest.raises(BusError, match="overlaps serial"):
        bus.register(0x3F0, 9, Dev(), "other")
    bus.register(0x3F0, 8, Dev(), "fdc")
    assert bus.by_port[0x3FA].name == "serial" and bus.by_port[0x3F7].name == "fdc"
    assert 0x400 not in bus.by_port
    bus.unregister(0x3F8)
    assert 0x3FA not in bus.by_port
    with pytest.raises(BusError):
        bus.register(0xFFFF, 2, Dev(), "past-end")


def test_mmio_find():
    bus = MmioBus()
    bus.register(0xFEC00000, 0x1000, Dev(), "ioapic")
    bus.register(0xD0000000, 0x100, Dev(), "bar")
    assert bus.find(0xFEC00FFF).name == "ioapic"
    assert bus.find(0xFEC01000) is None
    assert bus.find(0xD00000FF).name == "bar"
    assert bus.find(0xCFFFFFFF) is None
    with pytest.raises(BusError):
        bus.register(0xFEBFF000, 0x1001, Dev(), "x")


def test_memory_layout_and_bounds():
    mem = GuestMemory(4 * GiB)
    assert mem.low_end == LOW_RAM_MAX
    assert mem.regions[1].gpa == HIGH_RAM_BASE and mem.regions[1].size == 1 * GiB
    e820 = mem.e820()
    # All 4 GiB of RAM is reported usable except [EBDA, 1 MiB): the EBDA, the VGA/option-ROM
    # hole (backed by RAM here, but not the guest's to use) and the BIOS area.
    assert sum(s for a, s, t in e820 if t == 1) == 4 * GiB - (0x100000 - 0x9FC00)
    assert e820[-1] == (HIGH_RAM_BASE, 1 * GiB, 1)
    mem.write(HIGH_RAM_BASE + 10, b"abc")
    assert mem.read(HIGH_RAM_BASE + 10, 3) == b"abc"
    for gpa, n in ((LOW_RAM_MAX - 2, 4), (LOW_RAM_MAX, 1), (5 * GiB, 1), (HIGH_RAM_BASE - 1, 2), (0, -1)):
        with pytest.raises(GuestMemoryError):
            mem.view(gpa, n)
    assert not mem.check(0xFEE00000, 4)
    mem.close()


def test_parse_size():
    assert parse_size("512M") == 512 * MiB
    assert parse_size("2G") == 2 * GiB
    assert parse_size("64") == 64 * MiB
    assert parse_size("1GiB") == GiB
    for bad in ("12X", "", "M", "1.5G", "-1M"):
        with pytest.raises(UserError):
            parse_size(bad)


@pytest.mark.parametrize("kind", ["guest", "host-page"])
def test_atomics_return_the_old_value_and_check_bounds(kind):
    """GuestMemory and HostPage (shared_info's shadow) share one set of atomics."""
    mem = GuestMemory(16 * MiB) if kind == "guest" else HostPage()
    a = 0x1000 - 8
    try:
        mem.write(a, bytes(8))
        assert mem.atomic_or64(a, 1 << 63) == 0 and mem.atomic_or64(a, 1) == 1 << 63
        assert mem.atomic_and64(a, 1) == (1 << 63) | 1 and mem.read(a, 8) == (1).to_bytes(8, "little")
        assert mem.atomic_or32(a + 4, 6) == 0 and mem.atomic_and32(a + 4, 2) == 6
        assert mem.atomic_xchg8(a + 1, 1) == 0 and mem.atomic_xchg8(a + 1, 0) == 1
        assert mem.atomic_xchg32(a + 4, 0xFFFF_FFFF) == 2 and mem.atomic_read32(a + 4) == 0xFFFF_FFFF
        # cmpxchg: stores only over the expected value, and says what it found either way.
        assert mem.atomic_cmpxchg32(a + 4, 5, 7) == 0xFFFF_FFFF and mem.atomic_read32(a + 4) == 0xFFFF_FFFF
        assert mem.atomic_cmpxchg32(a + 4, 0xFFFF_FFFF, 7) == 0xFFFF_FFFF and mem.atomic_read32(a + 4) == 7
        with pytest.raises(GuestMemoryError):
            mem.atomic_or32(a + 2, 1)                   # unaligned
        with pytest.raises(GuestMemoryError):
            mem.atomic_cmpxchg32(a + 2, 0, 1)
        with pytest.raises(GuestMemoryError):
            mem.atomic_or64(1 << 40 if kind == "guest" else 0x1000, 1)   # outside
    finally:
        if kind == "guest":
            mem.close()
