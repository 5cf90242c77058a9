"""Initial register state for the two boot protocols."""

from __future__ import annotations

from kvm_bindings import VcpuFd
from vmm.boot import layout
from vmm.x86 import CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, PAGE_SIZE, PTE_P, PTE_PS, PTE_RW


def _segment(seg, selector: int, type_: int, long_mode: bool = False) -> None:
    seg.base = 0
    seg.limit = 0xFFFFFFFF
    seg.selector = selector
    seg.type = type_
    seg.present = 1
    seg.dpl = 0
    seg.s = 1
    seg.l = 1 if long_mode else 0
    seg.db = 0 if long_mode else 1
    seg.g = 1
    seg.avl = 0
    seg.unusable = 0


def _tr(sregs) -> None:
    # VMX requires a usable busy TSS even though the guest never uses it.
    sregs.tr.base = 0
    sregs.tr.limit = 0xFFFF
    sregs.tr.selector = 0
    sregs.tr.type = 11
    sregs.tr.present = 1
    sregs.tr.s = 0
    sregs.tr.g = 0


def set_protected_mode_flat(vcpu: VcpuFd, entry: int, ebx: int) -> None:
    """PVH entry (Xen docs/misc/pvh.pandoc): 32-bit flat protected mode,
    paging off, CS/DS/ES/SS 4 GiB flat, %ebx = start_info, EFLAGS.IF clear."""
    sregs = vcpu.get_sregs()
    _segment(sregs.cs, 0x8, 0xB)
    for seg in (sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs):
        _segment(seg, 0x10, 0x3)
    _tr(sregs)
    sregs.cr0 = CR0_PE | CR0_ET
    sregs.cr3 = 0
    sregs.cr4 = 0
    sregs.efer = 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    for r in ("rax", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"):
        setattr(regs, r, 0)
    regs.rbx = ebx
    regs.rip = entry
    regs.rflags = 0x2
    vcpu.set_regs(regs)


def build_identity_page_tables(memory) -> None:
    """Identity-map 0..4 GiB with 2 MiB pages at layout.PML4/PDPT/PD."""
    memory.fill(layout.PML4, PAGE_SIZE * 6)
    memory.write_u64(layout.PML4, layout.PDPT | PTE_P | PTE_RW)
    for i in range(4):
        memory.write_u64(layout.PDPT + 8 * i, (layout.PD + PAGE_SIZE * i) | PTE_P | PTE_RW)
    pd = bytearray(4 * PAGE_SIZE)
    for i in range(2048):
        pd[8 * i:8 * i + 8] = ((i << 21) | PTE_P | PTE_RW | PTE_PS).to_bytes(8, "little")  # 2 MiB pages
    memory.write(layout.PD, bytes(pd))


GDT_ENTRIES = [
    0,
    0,
    0x00AF9B000000FFFF,  # 0x10: 64-bit code
    0x00CF93000000FFFF,  # 0x18: data
]


def set_long_mode(vcpu: VcpuFd, memory, entry: int, rsi: int) -> None:
    """Linux 64-bit boot protocol entry: long mode, identity-mapped paging,
    __BOOT_CS=0x10, __BOOT_DS=0x18, %rsi = boot_params, interrupts off."""
    build_identity_page_tables(memory)
    memory.write(layout.BOOT_GDT, b"".join(e.to_bytes(8, "little") for e in GDT_ENTRIES))
    sregs = vcpu.get_sregs()
    _segment(sregs.cs, 0x10, 0xB, long_mode=True)
    for seg in (sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs):
        _segment(seg, 0x18, 0x3)
    _tr(sregs)
    sregs.gdt.base = layout.BOOT_GDT
    sregs.gdt.limit = 8 * len(GDT_ENTRIES) - 1
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG
    sregs.cr3 = layout.PML4
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    for r in ("rax", "rbx", "rcx", "rdx", "rdi", "rsp", "rbp"):
        setattr(regs, r, 0)
    regs.rsi = rsi
    regs.rip = entry
    regs.rflags = 0x2
    vcpu.set_regs(regs)
