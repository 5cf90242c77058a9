"""copy_from_guest / copy_to_guest: hypercall arguments are guest-VIRTUAL.

A hypercall's pointers are linear addresses in the calling vCPU's address
space at the time of the call, as Xen's HVM copy routines treat them
(xen/arch/x86/hvm/hvm.c: hvm_copy_{from,to}_guest_linear).  We walk the
guest's page tables ourselves from the control registers KVM reported with
the exit (legacy 2-level, PAE 3-level, 4-level long mode; paging off), honour
present / writable (with CR0.WP) / user bits, and copy page by page so a
structure that crosses a page boundary works when both pages are mapped.

Every failure — not present, not writable, not RAM (MMIO holes included),
non-canonical, a length over the bound — raises ``GuestFault`` and becomes
-EFAULT for the guest.  We don't set Accessed/Dirty bits (Xen's walker does;
no guest we know depends on it for hypercall buffers).
"""

from __future__ import annotations

from vmm.memory import GuestMemory, GuestMemoryError

from vmm.x86 import (CR0_PG, CR0_WP, CR3_PAE_PDPT_MASK, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA, PAGE_SIZE,
                     PDE_4M_ADDR_MASK_32, PTE_ADDR_MASK_32, PTE_P, PTE_PS, PTE_RW, PTE_US)
from vmm.x86 import PTE_ADDR_MASK_64 as ADDR_MASK_64

PAGE_MASK = ~(PAGE_SIZE - 1)
LARGE_2M = 1 << 21            # a PAE PDE with PS maps 2 MiB
MAX_COPY = 1 << 20            # no hypercall argument we accept is larger


class GuestFault(Exception):
    """A guest pointer we cannot follow: the hypercall returns -EFAULT."""


class GuestAccess:
    """The calling vCPU's view of memory for one hypercall."""

    def __init__(self, memory: GuestMemory, cr0: int, cr3: int, cr4: int, efer: int, cpl: int):
        self.memory = memory
        self.cr0, self.cr3, self.cr4, self.efer, self.cpl = cr0, cr3, cr4, efer, cpl
        self._tlb: dict[tuple[int, bool], int] = {}

    @classmethod
    def from_sregs(cls, memory: GuestMemory, sregs) -> "GuestAccess":
        return cls(memory, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, sregs.cs.dpl)

    # ------------------------------------------------------------ walk
    def _entry(self, gpa: int, size: int) -> int:
        try:
            return int.from_bytes(self.memory.view(gpa, size), "little")
        except GuestMemoryError:
            raise GuestFault(f"page table at {gpa:#x} is not RAM") from None

    def _check(self, entry: int, write: bool, what: str, gva: int) -> None:
        if not entry & PTE_P:
            raise GuestFault(f"{what} not present for {gva:#x}")
        if write and not entry & PTE_RW and (self.cr0 & CR0_WP or self.cpl == 3):
            raise GuestFault(f"{what} read-only for {gva:#x}")
        if self.cpl == 3 and not entry & PTE_US:
            raise GuestFault(f"{what} supervisor-only for {gva:#x}")

    def translate(self, gva: int, write: bool = False) -> int:
        """Guest-virtual -> guest-physical (raises GuestFault)."""
        page = gva & PAGE_MASK
        hit = self._tlb.get((page, write))
        if hit is not None:
            return hit | (gva & ~PAGE_MASK)
        gpa = self._walk(gva, write)
        self._tlb[(page, write)] = gpa & PAGE_MASK
        return gpa

    def _walk(self, gva: int, write: bool) -> int:
        if not self.cr0 & CR0_PG:
            if not self.efer & EFER_LMA:
                gva &= 0xFFFFFFFF
            return gva
        if self.efer & EFER_LMA:
            if self.cr4 & CR4_LA57:
                raise GuestFault("5-level paging is not supported")
            top = gva >> 47
            if top not in (0, (1 << 17) - 1):
                raise GuestFault(f"non-canonical address {gva:#x}")
            table = self.cr3 & ADDR_MASK_64
            for level, shift in ((4, 39), (3, 30), (2, 21), (1, 12)):
                e = self._entry(table + 8 * ((gva >> shift) & 511), 8)
                self._check(e, write, f"level-{level} entry", gva)
                if level in (3, 2) and e & PTE_PS:
                    size = 1 << shift
                    return (e & ADDR_MASK_64 & ~(size - 1)) | (gva & (size - 1))
                table = e & ADDR_MASK_64
            return table | (gva & ~PAGE_MASK)
        gva &= 0xFFFFFFFF
        if self.cr4 & CR4_PAE:
            pdpte = self._entry((self.cr3 & CR3_PAE_PDPT_MASK) + 8 * (gva >> 30), 8)
            if not pdpte & PTE_P:
                raise GuestFault(f"PDPTE not present for {gva:#x}")
            pde = self._entry((pdpte & ADDR_MASK_64) + 8 * ((gva >> 21) & 511), 8)
            self._check(pde, write, "PDE", gva)
            if pde & PTE_PS:
                return (pde & ADDR_MASK_64 & ~(LARGE_2M - 1)) | (gva & (LARGE_2M - 1))
            pte = self._entry((pde & ADDR_MASK_64) + 8 * ((gva >> 12) & 511), 8)
            self._check(pte, write, "PTE", gva)
            return (pte & ADDR_MASK_64) | (gva & ~PAGE_MASK)
        pde = self._entry((self.cr3 & PTE_ADDR_MASK_32) + 4 * (gva >> 22), 4)
        self._check(pde, write, "PDE", gva)
        if pde & PTE_PS and self.cr4 & CR4_PSE:
            return (pde & PDE_4M_ADDR_MASK_32) | (gva & ~PDE_4M_ADDR_MASK_32)
        pte = self._entry((pde & PTE_ADDR_MASK_32) + 4 * ((gva >> 12) & 1023), 4)
        self._check(pte, write, "PTE", gva)
        return (pte & PTE_ADDR_MASK_32) | (gva & ~PAGE_MASK)

    # ------------------------------------------------------------ copies
    def _chunks(self, gva: int, length: int, write: bool):
        if not 0 <= length <= MAX_COPY:
            raise GuestFault(f"length {length} out of bounds")
        done = 0
        while done < length:
            addr = gva + done
            n = min(length - done, PAGE_SIZE - (addr & ~PAGE_MASK))
            gpa = self.translate(addr, write)
            try:
                view = self.memory.view(gpa, n)
            except GuestMemoryError:
                raise GuestFault(f"{addr:#x} -> {gpa:#x} is not RAM") from None
            yield done, view
            done += n

    def read(self, gva: int, length: int) -> bytes:
        if not 0 <= length <= MAX_COPY:      # before the buffer: bytearray(-1) is a ValueError
            raise GuestFault(f"length {length} out of bounds")
        out = bytearray(length)
        for off, view in self._chunks(gva, length, False):
            out[off:off + len(view)] = view
        return bytes(out)

    def write(self, gva: int, data: bytes) -> None:
        # Translate everything first: a fault must not leave a partial write.
        chunks = list(self._chunks(gva, len(data), True))
        for off, view in chunks:
            view[:] = data[off:off + len(view)]

    def read_struct(self, struct, gva: int):
        return struct.parse(self.read(gva, struct.sizeof()))

    def write_struct(self, struct, gva: int, value) -> None:
        self.write(gva, struct.build(value))

    def read_u32(self, gva: int) -> int:
        return int.from_bytes(self.read(gva, 4), "little")

    def read_u64(self, gva: int) -> int:
        return int.from_bytes(self.read(gva, 8), "little")

    def write_u32(self, gva: int, value: int) -> None:
        self.write(gva, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def write_u64(self, gva: int, value: int) -> None:
        self.write(gva, (value & (1 << 64) - 1).to_bytes(8, "little"))

    def read_cstring(self, gva: int, max_len: int) -> bytes:
        data = self.read(gva, max_len)
        nul = data.find(b"\0")
        return data if nul < 0 else data[:nul]
