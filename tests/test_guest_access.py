"""The guest page walker behind hypercall pointers (xen/guest_access.py).

Page tables are built by hand in real guest memory for each paging mode the
walker supports; the guest tests (xen_negative, xen_compat32) cover the
4-level case end to end.
"""

from __future__ import annotations

import pytest

from vmm.memory import GuestMemory
from vmm.x86 import CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, PTE_P, PTE_PS, PTE_RW, PTE_US
from xen.guest_access import GuestAccess, GuestFault

P, RW, US, PS = PTE_P, PTE_RW, PTE_US, PTE_PS


@pytest.fixture
def mem():
    m = GuestMemory(32 << 20)
    yield m
    m.close()


def long_mode(mem, cpl=0, wp=True) -> GuestAccess:
    """PML4 at 0x10000; VA 0x400000 -> PA 0x800000 (4K, RW), VA 0x401000 -> PA 0x900000
    (4K, read-only), VA 0x40000000 -> PA 0 (2M page), VA 0x600000 not present."""
    mem.write_u64(0x10000, 0x11000 | P | RW | US)          # PML4[0]
    mem.write_u64(0x11000, 0x12000 | P | RW | US)          # PDPT[0]
    mem.write_u64(0x11000 + 8, 0x13000 | P | RW | US)      # PDPT[1] (VA 1 GiB)
    mem.write_u64(0x12000 + 8 * 2, 0x14000 | P | RW | US)  # PD[2] (VA 4 MiB)
    mem.write_u64(0x14000 + 8 * 0, 0x800000 | P | RW | US)
    mem.write_u64(0x14000 + 8 * 1, 0x900000 | P | US)      # read-only
    mem.write_u64(0x14000 + 8 * 2, 0xA00000 | P | RW)      # supervisor-only
    mem.write_u64(0x13000, 0x000000 | P | RW | US | PS)    # 2M page at VA 1 GiB
    return GuestAccess(mem, CR0_PG | (CR0_WP if wp else 0), 0x10000, CR4_PAE, EFER_LMA, cpl)


def test_four_level_translation_and_copies(mem):
    ga = long_mode(mem)
    assert ga.translate(0x400123) == 0x800123
    assert ga.translate(0x40000000 + 0x1234) == 0x1234
    mem.write(0x800FFC, b"ABCD")
    mem.write(0x900000, b"EFGH")
    assert ga.read(0x400FFC, 8) == b"ABCDEFGH"          # crosses into the next (non-contiguous) page
    ga.write(0x400FF0, b"x" * 16)
    assert mem.read(0x800FF0, 16) == b"x" * 16


def test_faults(mem):
    ga = long_mode(mem)
    with pytest.raises(GuestFault, match="not present"):
        ga.read(0x600000, 4)
    with pytest.raises(GuestFault, match="read-only"):
        ga.write(0x401000, b"no")
    with pytest.raises(GuestFault, match="non-canonical"):
        ga.read(0x0000800000000000, 1)
    with pytest.raises(GuestFault, match="out of bounds"):
        ga.read(0x400000, 2 << 20)
    # A write that would cross into a read-only page changes nothing.
    mem.write(0x800FFE, b"\0\0")
    with pytest.raises(GuestFault):
        ga.write(0x400FFE, b"zzzz")
    assert mem.read(0x800FFE, 2) == b"\0\0"
    # CR0.WP clear: the kernel may write read-only pages; at CPL 3 never, nor supervisor pages.
    assert long_mode(mem, wp=False).translate(0x401000, write=True) == 0x900000
    with pytest.raises(GuestFault, match="supervisor-only"):
        long_mode(mem, cpl=3).read(0x402000, 1)


def test_not_ram_is_a_fault(mem):
    ga = long_mode(mem)
    mem.write_u64(0x14000 + 8 * 3, 0xFEE00000 | P | RW)   # the LAPIC page
    with pytest.raises(GuestFault, match="not RAM"):
        ga.read(0x403000, 4)


def test_pae_and_legacy_paging_and_paging_off(mem):
    # PAE (32-bit): PDPT at 0x20000, PD at 0x21000, 2M page and a 4K page.
    mem.write_u64(0x20000, 0x21000 | P)
    mem.write_u64(0x21000, 0x200000 | P | RW | PS)          # VA 0 -> 2M page at 2 MiB
    mem.write_u64(0x21000 + 8, 0x22000 | P | RW)            # VA 2 MiB -> PT
    mem.write_u64(0x22000 + 8 * 5, 0x700000 | P | RW)
    pae = GuestAccess(mem, CR0_PG, 0x20000, CR4_PAE, 0, 0)
    assert pae.translate(0x1234) == 0x201234
    assert pae.translate(0x205010) == 0x700010
    # legacy 2-level with a 4M PSE page and a 4K page
    mem.write_u32(0x30000, 0x400000 | P | RW | PS)          # VA 0 -> 4M page at 4 MiB
    mem.write_u32(0x30000 + 4, 0x31000 | P | RW)            # VA 4 MiB -> PT
    mem.write_u32(0x31000 + 4 * 2, 0x600000 | P | RW)
    legacy = GuestAccess(mem, CR0_PG, 0x30000, CR4_PSE, 0, 0)
    assert legacy.translate(0x3000) == 0x403000
    assert legacy.translate(0x402008) == 0x600008
    off = GuestAccess(mem, 0, 0, 0, 0, 0)
    assert off.translate(0x1_0000_1234) == 0x1234            # 32-bit wrap with paging off
