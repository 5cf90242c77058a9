"""PVH boot: an ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note.

References: Xen docs/misc/pvh.pandoc, xen/include/public/elfnote.h
(XEN_ELFNOTE_PHYS32_ENTRY = 18), xen/include/public/arch-x86/hvm/start_info.h
(struct hvm_start_info, hvm_modlist_entry, hvm_memmap_table_entry).
The ELF may be ELF32 or ELF64; segments are loaded at their physical address.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmm.boot import layout
from vmm.boot.cstruct import Int32ul, Int64ul, Struct
from vmm.errors import UserError
from vmm.memory import GuestMemory
from vmm.x86 import PAGE_SIZE

XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_HVM_START_MAGIC_VALUE = 0x336EC578

# xen/include/public/arch-x86/hvm/start_info.h, version 1.
HvmStartInfo = Struct(
    "magic" / Int32ul,
    "version" / Int32ul,
    "flags" / Int32ul,
    "nr_modules" / Int32ul,
    "modlist_paddr" / Int64ul,
    "cmdline_paddr" / Int64ul,
    "rsdp_paddr" / Int64ul,
    "memmap_paddr" / Int64ul,
    "memmap_entries" / Int32ul,
    "reserved" / Int32ul,
)
HvmModlistEntry = Struct(
    "paddr" / Int64ul,
    "size" / Int64ul,
    "cmdline_paddr" / Int64ul,
    "reserved" / Int64ul,
)
HvmMemmapEntry = Struct(
    "addr" / Int64ul,
    "size" / Int64ul,
    "type" / Int32ul,
    "reserved" / Int32ul,
)

PT_LOAD = 1
PT_NOTE = 4
EM_386 = 3
EM_X86_64 = 62


@dataclass
class ElfSegment:
    """A PT_LOAD or PT_NOTE program header."""
    type: int
    offset: int
    paddr: int
    filesz: int
    memsz: int


@dataclass
class ElfImage:
    """What the PVH loader needs of an ELF file."""
    elf_class: int          # 32 or 64
    entry: int
    segments: list[ElfSegment]


def parse_elf(data: bytes, path: str) -> ElfImage:
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise UserError(f"{path}: not an ELF file")
    ei_class, ei_data = data[4], data[5]
    if ei_data != 1:
        raise UserError(f"{path}: not a little-endian ELF")
    if ei_class == 1:
        fmt_hdr, fmt_ph, bits = "<HHIIIIIHHHHHH", "<IIIIIIII", 32
    elif ei_class == 2:
        if len(data) < 64:
            raise UserError(f"{path}: truncated ELF header")
        fmt_hdr, fmt_ph, bits = "<HHIQQQIHHHHHH", "<IIQQQQQQ", 64
    else:
        raise UserError(f"{path}: unknown ELF class {ei_class}")
    (e_type, e_machine, _ver, e_entry, e_phoff, _shoff, _flags, _ehsize,
     e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = struct.unpack_from(fmt_hdr, data, 16)
    if e_machine not in (EM_386, EM_X86_64):
        raise UserError(f"{path}: ELF machine {e_machine} is not x86")
    if e_phnum == 0:
        raise UserError(f"{path}: ELF has no program headers")
    if e_phentsize < struct.calcsize(fmt_ph) or e_phoff + e_phnum * e_phentsize > len(data):
        raise UserError(f"{path}: truncated ELF program headers")
    segs = []
    for i in range(e_phnum):
        f = struct.unpack_from(fmt_ph, data, e_phoff + i * e_phentsize)
        if bits == 32:
            p_type, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _pflags, _align = f
        else:
            p_type, _pflags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz, _align = f
        if p_type in (PT_LOAD, PT_NOTE):
            if p_offset + p_filesz > len(data):
                raise UserError(f"{path}: truncated ELF (segment {i} extends past the end of the file)")
            if p_memsz < p_filesz:
                raise UserError(f"{path}: bad ELF segment {i} (memsz < filesz)")
            segs.append(ElfSegment(p_type, p_offset, p_paddr, p_filesz, p_memsz))
    return ElfImage(bits, e_entry, segs)


def find_pvh_entry(data: bytes, img: ElfImage) -> int | None:
    """The XEN_ELFNOTE_PHYS32_ENTRY value from any PT_NOTE segment."""
    for seg in img.segments:
        if seg.type != PT_NOTE:
            continue
        off, end = seg.offset, seg.offset + seg.filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, off)
            name_off = off + 12
            desc_off = name_off + ((namesz + 3) & ~3)
            nxt = desc_off + ((descsz + 3) & ~3)
            if nxt > end:
                break
            name = data[name_off:name_off + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                if descsz == 4:
                    return struct.unpack_from("<I", data, desc_off)[0]
                if descsz == 8:  # Linux emits it with _ASM_PTR (.quad on 64-bit)
                    return struct.unpack_from("<Q", data, desc_off)[0]
            off = nxt
    return None


def load_pvh(mem: GuestMemory, data: bytes, path: str, cmdline: str,
             initrd: bytes | None, rsdp_addr: int = 0) -> tuple[int, int, int]:
    """Load; returns (entry, start_info_paddr, image_end).  ``rsdp_addr``: the
    ACPI RSDP (vmm/boot/acpi.py) for hvm_start_info.rsdp_paddr, 0 for none."""
    img = parse_elf(data, path)
    entry = find_pvh_entry(data, img)
    if entry is None:
        raise UserError(f"{path}: ELF has no XEN_ELFNOTE_PHYS32_ENTRY note (not a PVH kernel)")
    loads = [s for s in img.segments if s.type == PT_LOAD and s.memsz]
    if not loads:
        raise UserError(f"{path}: ELF has no loadable segments")
    image_end = 0
    for s in loads:
        if s.paddr < layout.KERNEL_LOAD or not mem.check(s.paddr, s.memsz) or s.paddr + s.memsz > mem.low_end:
            raise UserError(f"{path}: segment at {s.paddr:#x}+{s.memsz:#x} does not fit in guest RAM "
                            f"(1 MiB .. {mem.low_end:#x})")
        mem.write(s.paddr, memoryview(data)[s.offset:s.offset + s.filesz])    # (no copy of the segment)
        mem.fill(s.paddr + s.filesz, s.memsz - s.filesz)  # BSS
        image_end = max(image_end, s.paddr + s.memsz)
    if not any(s.paddr <= entry < s.paddr + s.memsz for s in loads):
        raise UserError(f"{path}: PVH entry {entry:#x} is outside the loaded segments")

    write_cmdline(mem, cmdline)
    nr_modules = 0
    if initrd is not None:
        addr = place_initrd(mem, len(initrd), image_end, mem.low_end, path)
        mem.write(addr, initrd)
        mem.write(layout.PVH_MODLIST, HvmModlistEntry.build(
            dict(paddr=addr, size=len(initrd), cmdline_paddr=0, reserved=0)))
        nr_modules = 1
    e820 = mem.e820()
    mem.write(layout.PVH_MEMMAP, b"".join(
        HvmMemmapEntry.build(dict(addr=a, size=s, type=t, reserved=0)) for a, s, t in e820))
    mem.write(layout.PVH_START_INFO, HvmStartInfo.build(dict(
        magic=XEN_HVM_START_MAGIC_VALUE, version=1, flags=0, nr_modules=nr_modules,
        modlist_paddr=layout.PVH_MODLIST if nr_modules else 0, cmdline_paddr=layout.CMDLINE,
        rsdp_paddr=rsdp_addr, memmap_paddr=layout.PVH_MEMMAP, memmap_entries=len(e820), reserved=0)))
    return entry, layout.PVH_START_INFO, image_end


def write_cmdline(mem: GuestMemory, cmdline: str) -> bytes:
    raw = cmdline.encode()
    if len(raw) > layout.CMDLINE_MAX:
        raise UserError(f"command line is {len(raw)} bytes; the maximum is {layout.CMDLINE_MAX}")
    if b"\0" in raw:
        raise UserError("command line contains a NUL byte")
    mem.write(layout.CMDLINE, raw + b"\0")
    return raw


def place_initrd(mem: GuestMemory, size: int, lowest: int, highest: int, what: str) -> int:
    """Highest page-aligned address in [lowest, highest) that fits ``size`` bytes."""
    top = min(highest, mem.low_end)
    addr = (top - size) & ~(PAGE_SIZE - 1)
    lowest = -(-lowest // PAGE_SIZE) * PAGE_SIZE
    if size <= 0 or addr < lowest:
        raise UserError(f"initrd ({size} bytes) does not fit in guest memory above the kernel "
                        f"({lowest:#x}..{top:#x}); use a larger --memory")
    return addr
