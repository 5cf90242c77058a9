"""Guest physical memory: anonymous mappings registered as KVM memory slots.

Layout (the PC layout Linux and our test guests expect):

    0           .. 0x9fc00       RAM
    0x9fc00     .. 0xa0000       reserved (EBDA)
    0xa0000     .. 0xf0000       legacy VGA/ROM hole (backed, not reported)
    0xe0000     .. (tables end)  ACPI (E820 type 3) once vmm/boot/acpi.py wrote tables
    0xf0000     .. 0x100000      reserved (BIOS area)
    0x100000    .. low_end       RAM                (low_end <= 3 GiB)
    0xc0000000  .. 0xfec00000    PCI MMIO hole
    0xfec00000                   I/OAPIC
    0xfee00000                   LAPIC
    4 GiB       .. 4 GiB + rest  RAM above the hole

All guest-supplied addresses go through ``check``/``view``, which refuse any
range that is not entirely inside one region.

Besides RAM there may be *overlays*: pages the VMM backs outside RAM because
the guest asked a hypervisor to place something there (Xen grant frames in the
platform device's BAR, as Xen's p2m does).  They are regions like RAM for
access, but not RAM: not in the e820, not in the RAM size.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from kvm_bindings import (atomic_and32, atomic_and64, atomic_cmpxchg32, atomic_or32, atomic_or64, atomic_xchg8,
                          atomic_xchg32, ffi)
from vmm.x86 import PAGE_SIZE

MiB = 1 << 20
GiB = 1 << 30

LOW_RAM_MAX = 0xC000_0000      # start of the 32-bit MMIO hole
HIGH_RAM_BASE = 1 << 32
PCI_MMIO_BASE = 0xC000_0000
IOAPIC_BASE = 0xFEC0_0000
LAPIC_BASE = 0xFEE0_0000
EBDA_START = 0x9_FC00
LEGACY_HOLE_START = 0xA_0000
BIOS_START = 0xF_0000
HIGH_MEMORY_START = 0x10_0000  # 1 MiB
MIN_MEMORY = 16 * MiB

E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3                  # ACPI tables (reclaimable once read)


class GuestMemoryError(ValueError):
    """A guest physical range is not RAM (outside, or crossing a hole)."""


@dataclass
class Region:
    """One mapping of guest-physical memory: RAM, or an overlay page the VMM placed."""
    gpa: int
    size: int
    mapping: mmap.mmap
    view: memoryview
    base: object = None        # cffi uint8_t * to the mapping, for atomics
    overlay: bool = False      # VMM-placed page(s) outside RAM (see module doc)

    @property
    def end(self) -> int:
        return self.gpa + self.size


class AtomicAccess:
    """Atomics on memory the guest may be using concurrently (event-channel bitmaps,
    upcall_pending): the same lock-prefixed RMW the guest does.  Each returns the old
    value; ``addr`` must be aligned to the width.  A subclass gives ``_ptr``."""

    def _ptr(self, addr: int, width: int, ctype: str):
        raise NotImplementedError

    def atomic_or64(self, addr: int, value: int) -> int:
        return atomic_or64(self._ptr(addr, 8, "__u64 *"), value)

    def atomic_and64(self, addr: int, value: int) -> int:
        return atomic_and64(self._ptr(addr, 8, "__u64 *"), value)

    def atomic_or32(self, addr: int, value: int) -> int:
        return atomic_or32(self._ptr(addr, 4, "__u32 *"), value)

    def atomic_and32(self, addr: int, value: int) -> int:
        return atomic_and32(self._ptr(addr, 4, "__u32 *"), value)

    def atomic_xchg8(self, addr: int, value: int) -> int:
        return atomic_xchg8(self._ptr(addr, 1, "__u8 *"), value)

    def atomic_xchg32(self, addr: int, value: int) -> int:
        return atomic_xchg32(self._ptr(addr, 4, "__u32 *"), value)

    def atomic_cmpxchg32(self, addr: int, old: int, new: int) -> int:
        """Store ``new`` iff the word is ``old``; returns the word found (== old: stored).
        The building block of lock-free protocols shared with the guest (FIFO event words)."""
        return atomic_cmpxchg32(self._ptr(addr, 4, "__u32 *"), old, new)

    def atomic_read32(self, addr: int) -> int:
        """A single aligned 32-bit load (a word the guest changes under us)."""
        return atomic_or32(self._ptr(addr, 4, "__u32 *"), 0)


class GuestMemory(AtomicAccess):
    def __init__(self, size: int):
        if size < MIN_MEMORY:
            raise ValueError(f"memory size {size} is below the minimum of {MIN_MEMORY // MiB} MiB")
        self.size = size
        # Replaced, never mutated (copy-on-write): vCPU threads iterate it without a lock.
        self.regions: tuple[Region, ...] = ()
        low = min(size, LOW_RAM_MAX)
        try:
            self._add(0, low)
            if size > low:
                self._add(HIGH_RAM_BASE, size - low)
        except GuestMemoryError as e:
            self.close()
            raise GuestMemoryError(f"{size >> 20} MiB is more guest memory than this host will map ({e})") from None
        self.low_end = low
        self.acpi_tables: tuple[int, int] | None = None
        self.reserved: list[tuple[int, int]] = []    # more E820_RESERVED ranges (mark_reserved)

    def _add(self, gpa: int, size: int, overlay: bool = False) -> Region:
        try:
            m = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0))
        except (OSError, OverflowError) as e:     # more than the host will map for us
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise GuestMemoryError(reason) from None
        r = Region(gpa, size, m, memoryview(m), ffi.cast("uint8_t *", ffi.from_buffer(m)), overlay)
        self.regions = (*self.regions, r)
        return r

    @property
    def ram_regions(self) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if not r.overlay)

    def is_ram(self, gpa: int, length: int) -> bool:
        return any(r.gpa <= gpa and gpa + length <= r.end for r in self.ram_regions)

    def add_overlay(self, gpa: int, size: int) -> Region:
        """Back [gpa, gpa + size) with fresh zeroed memory; it must not touch any region.
        (The caller registers it with KVM: vmm.vm.Vm.map_overlay.)"""
        if gpa % PAGE_SIZE or size <= 0 or size % PAGE_SIZE:
            raise GuestMemoryError(f"overlay {gpa:#x}+{size:#x} is not page-aligned")
        if any(r.gpa < gpa + size and gpa < r.end for r in self.regions):
            raise GuestMemoryError(f"overlay {gpa:#x}+{size:#x} overlaps guest memory")
        return self._add(gpa, size, overlay=True)

    def remove_overlay(self, region: Region) -> None:
        self.regions = tuple(r for r in self.regions if r is not region)

    def e820(self) -> list[tuple[int, int, int]]:
        """(addr, size, type) entries, sorted."""
        table = [(0, EBDA_START, E820_RAM),
                 (EBDA_START, LEGACY_HOLE_START - EBDA_START, E820_RESERVED),
                 *([(*self.acpi_tables, E820_ACPI)] if self.acpi_tables else []),
                 (BIOS_START, HIGH_MEMORY_START - BIOS_START, E820_RESERVED),
                 (HIGH_MEMORY_START, self.low_end - HIGH_MEMORY_START, E820_RAM)]
        ram = self.ram_regions
        if len(ram) > 1:
            r = ram[1]
            table.append((r.gpa, r.size, E820_RAM))
        table += [(gpa, size, E820_RESERVED) for gpa, size in self.reserved]
        return sorted(table)

    def mark_reserved(self, gpa: int, size: int) -> None:
        """Report [gpa, gpa + size) as E820_RESERVED: pages the VMM backs outside RAM for
        the guest to find (Xen's special pages), which its allocator must leave alone.
        Only outside RAM: a reserved range inside RAM would contradict the RAM entry."""
        if size <= 0 or any(r.gpa < gpa + size and gpa < r.end for r in self.ram_regions):
            raise GuestMemoryError(f"reserved range {gpa:#x}+{size:#x} overlaps RAM")
        self.reserved.append((gpa, size))

    def mark_acpi_tables(self, gpa: int, size: int) -> None:
        """Report [gpa, gpa + size) as E820_ACPI from now on: the ACPI tables
        live there.  The range must lie in the unreported legacy hole."""
        if size <= 0 or gpa < LEGACY_HOLE_START or gpa + size > BIOS_START:
            raise GuestMemoryError(f"ACPI tables at {gpa:#x}+{size:#x} are not inside "
                                   f"{LEGACY_HOLE_START:#x}..{BIOS_START:#x}")
        self.acpi_tables = (gpa, size)

    def _find(self, gpa: int, length: int) -> Region:
        if length < 0:
            raise GuestMemoryError(f"negative length {length}")
        for r in self.regions:
            if r.gpa <= gpa and gpa + length <= r.end:
                return r
        raise GuestMemoryError(f"guest range {gpa:#x}+{length:#x} is not RAM")

    def check(self, gpa: int, length: int) -> bool:
        try:
            self._find(gpa, length)
            return True
        except GuestMemoryError:
            return False

    def view(self, gpa: int, length: int) -> memoryview:
        """A writable view of guest RAM (no copy).  Raises GuestMemoryError."""
        r = self._find(gpa, length)
        off = gpa - r.gpa
        return r.view[off:off + length]

    def read(self, gpa: int, length: int) -> bytes:
        return bytes(self.view(gpa, length))

    def write(self, gpa: int, data: bytes) -> None:
        self.view(gpa, len(data))[:] = data

    def fill(self, gpa: int, length: int, byte: int = 0) -> None:
        v = self.view(gpa, length)
        chunk = bytes([byte]) * min(length, MiB)
        for off in range(0, length, MiB):
            n = min(MiB, length - off)
            v[off:off + n] = chunk[:n]

    def read_u32(self, gpa: int) -> int:
        return int.from_bytes(self.view(gpa, 4), "little")

    def read_u64(self, gpa: int) -> int:
        return int.from_bytes(self.view(gpa, 8), "little")

    def write_u32(self, gpa: int, value: int) -> None:
        self.view(gpa, 4)[:] = value.to_bytes(4, "little")

    def write_u64(self, gpa: int, value: int) -> None:
        self.view(gpa, 8)[:] = value.to_bytes(8, "little")

    def _ptr(self, gpa: int, width: int, ctype: str):
        """The cffi pointer for an atomic at ``gpa`` (AtomicAccess)."""
        if gpa % width:
            raise GuestMemoryError(f"unaligned atomic at {gpa:#x}")
        r = self._find(gpa, width)
        return ffi.cast(ctype, r.base + (gpa - r.gpa))

    def close(self, retired: list[Region] = ()) -> None:
        """Unmap every region, and ``retired`` ones (overlays removed earlier, kept mapped)."""
        for r in (*self.regions, *retired):
            r.base = None
            r.view.release()
            try:
                r.mapping.close()
            except BufferError:
                pass
        self.regions = ()


class HostPage(AtomicAccess):
    """A page of VMM memory with GuestMemory's access methods, addressed by offset:
    where a Xen page lives before the guest places it (shared_info's shadow)."""

    def __init__(self, size: int = PAGE_SIZE):
        self.size = size
        self._mapping = mmap.mmap(-1, size)
        self._base = ffi.cast("uint8_t *", ffi.from_buffer(self._mapping))

    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise GuestMemoryError(f"range {offset:#x}+{length:#x} is outside the {self.size:#x}-byte page")
        return memoryview(self._mapping)[offset:offset + length]

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.view(offset, length))

    def write(self, offset: int, data: bytes) -> None:
        self.view(offset, len(data))[:] = data

    def _ptr(self, offset: int, width: int, ctype: str):
        if offset % width:
            raise GuestMemoryError(f"unaligned atomic at offset {offset:#x}")
        self.view(offset, width)
        return ffi.cast(ctype, self._base + offset)
