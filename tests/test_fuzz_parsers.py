"""Property tests (Hypothesis) for the parsers of untrusted bytes.

Kernel images and initrds come from the user; page tables and hypercall arguments from a
hostile guest.  Whatever the bytes, a parser either succeeds within its bounds or raises
the one documented error: UserError (loaders: exit 2, one line), GuestFault (guest
pointers: -EFAULT).  Anything else is a VMM bug.  Example counts are kept small so the
whole file runs in a few seconds; no KVM is needed (GuestMemory is plain memory).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmm.boot import layout
from vmm.boot.bzimage import (HDRS_MAGIC, LOADED_HIGH, MIN_PROTOCOL, SETUP_HEADER_OFFSET, SETUP_HEADER_SIZE,
                              SetupHeader, load_bzimage)
from vmm.boot.pvh import PT_LOAD, PT_NOTE, XEN_ELFNOTE_PHYS32_ENTRY, load_pvh, place_initrd
from vmm.errors import UserError
from vmm.memory import GuestMemory
from vmm.x86 import CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA
from xen import abi
from xen.guest_access import MAX_COPY, GuestAccess, GuestFault

MEM_SIZE = 16 << 20
FAST = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def mem():
    m = GuestMemory(MEM_SIZE)
    yield m
    m.close()


u32 = st.integers(0, (1 << 32) - 1)
u64 = st.integers(0, (1 << 64) - 1)
# Addresses that matter to the loaders: around 1 MiB, around the end of RAM, anything.
paddr = st.one_of(st.integers(0, MEM_SIZE + 0x10000), st.sampled_from([0, 0xFFFFF, 0x100000, MEM_SIZE - 0x1000]), u64)
size = st.one_of(st.integers(0, 0x20000), u64)


# ---------------------------------------------------------------- PVH ELF
def mostly(valid, other):
    """``valid`` most of the time, so that deep paths are reached; ``other`` otherwise."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), other)


@st.composite
def elf_images(draw):
    """An ELF32/64: a PT_NOTE with the Xen PHYS32_ENTRY note and PT_LOADs, each field
    usually sane and sometimes anything, then a few bytes overwritten, sometimes cut."""
    bits = draw(st.sampled_from([32, 64]))
    fmt_ph = "<IIIIIIII" if bits == 32 else "<IIQQQQQQ"
    ehsize, phentsize = (52, 32) if bits == 32 else (64, 56)
    nsegs = draw(st.integers(1, 4))
    body = bytes(draw(st.binary(min_size=0, max_size=512)))
    entry = draw(mostly(0x100000, u32))
    descsz = draw(mostly(8, st.sampled_from([4, 0, 12, 0x7FFFFFFF])))
    note = struct.pack("<III", draw(mostly(4, st.sampled_from([0, 3, 0xFFFFFFFF]))), descsz,
                       XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + struct.pack("<Q", entry)
    phoff = ehsize
    data_off = phoff + nsegs * phentsize
    blob = note + body
    phdrs = b""
    for i in range(nsegs):
        kind = PT_NOTE if i == 0 else draw(mostly(PT_LOAD, st.sampled_from([PT_NOTE, 0])))
        off = draw(mostly(data_off, st.one_of(st.integers(0, data_off + len(blob) + 16), u32)))
        filesz = draw(mostly(len(note) if kind == PT_NOTE else len(blob), st.one_of(st.integers(0, 600), u32)))
        memsz = draw(mostly(filesz + 0x1000, st.one_of(st.integers(0, 0x40000), u32)))
        pa = draw(mostly(0x100000 + 0x10000 * i, paddr)) & (0xFFFFFFFF if bits == 32 else (1 << 64) - 1)
        if bits == 32:
            phdrs += struct.pack(fmt_ph, kind, off, pa, pa, filesz, memsz, 7, 0x1000)
        else:
            phdrs += struct.pack(fmt_ph, kind, 7, off, pa, pa, filesz, memsz, 0x1000)
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    if bits == 32:
        hdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry, phoff, 0, 0, ehsize, phentsize, nsegs, 0, 0, 0)
    else:
        hdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, phoff, 0, 0, ehsize, phentsize, nsegs, 0, 0, 0)
    image = bytearray(hdr + phdrs + blob)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):
        image[draw(st.integers(0, len(image) - 1))] = draw(st.integers(0, 255))
    if draw(st.integers(0, 7)) == 0:
        image = image[:draw(st.integers(1, len(image)))]
    return bytes(image)


initrds = st.one_of(st.none(), st.binary(min_size=1, max_size=64))


@FAST
@given(image=elf_images(), initrd=initrds)
def test_pvh_loader_accepts_or_says_why(mem, image, initrd):
    try:
        entry, start_info, end = load_pvh(mem, image, "fuzz.elf", "console=ttyS0", initrd)
    except UserError:
        return
    assert layout.KERNEL_LOAD <= entry < end <= mem.low_end
    assert start_info == layout.PVH_START_INFO


@FAST
@given(image=st.binary(min_size=0, max_size=300))
def test_pvh_loader_on_raw_bytes(mem, image):
    with pytest.raises(UserError):
        load_pvh(mem, b"\x7fELF" + image, "fuzz.elf", "", None)    # no loadable Xen note survives


# ---------------------------------------------------------------- bzImage
@st.composite
def bzimages(draw):
    raw = draw(st.binary(min_size=SETUP_HEADER_SIZE, max_size=SETUP_HEADER_SIZE))
    hdr = SetupHeader.parse(raw)
    hdr.header = HDRS_MAGIC if draw(st.integers(0, 9)) else hdr.header
    hdr.version = draw(st.one_of(st.just(MIN_PROTOCOL), st.integers(0, 0xFFFF)))
    hdr.loadflags |= LOADED_HIGH if draw(st.integers(0, 9)) else 0
    hdr.xloadflags |= 1 if draw(st.integers(0, 9)) else 0                 # XLF_KERNEL_64
    hdr.setup_sects = draw(st.one_of(st.integers(0, 8), st.integers(0, 255)))
    hdr.syssize = draw(st.one_of(st.integers(0, 64), u32))
    hdr.pref_address = draw(st.one_of(st.just(0x1000000), st.integers(0, MEM_SIZE), u64))
    hdr.init_size = draw(st.one_of(st.integers(0, 0x100000), u32))
    hdr.initrd_addr_max = draw(st.one_of(st.just(0x7FFFFFFF), st.integers(0, MEM_SIZE), u32))
    hdr.cmdline_size = draw(st.one_of(st.just(2048), st.integers(0, 64), u32))
    head = bytearray(draw(st.binary(min_size=0x200, max_size=0x200)))
    head[SETUP_HEADER_OFFSET:] = b""
    image = bytes(head) + SetupHeader.build(hdr)
    image += draw(st.binary(min_size=0, max_size=(hdr.setup_sects + 2) * 512 + 64 - len(image) if hdr.setup_sects < 8
                            else 64))
    return image


@FAST
@given(image=bzimages(), initrd=initrds, cmdline=st.text(max_size=80))
def test_bzimage_loader_accepts_or_says_why(mem, image, initrd, cmdline):
    try:
        entry, zero_page = load_bzimage(mem, image, "fuzz.bzImage", cmdline, initrd)
    except UserError:
        return
    assert entry == layout.KERNEL_LOAD + 0x200 and zero_page == layout.ZERO_PAGE
    if initrd is not None:
        hdr = SetupHeader.parse(mem.read(layout.ZERO_PAGE + SETUP_HEADER_OFFSET, SETUP_HEADER_SIZE))
        assert hdr.ramdisk_size == len(initrd)
        assert layout.KERNEL_LOAD < hdr.ramdisk_image and hdr.ramdisk_image + len(initrd) <= mem.low_end
        assert mem.read(hdr.ramdisk_image, len(initrd)) == initrd


# ---------------------------------------------------------------- initrd placement
@FAST
@given(size=st.one_of(st.integers(-4, MEM_SIZE + 1), u64), lowest=size, highest=size)
def test_initrd_placement_stays_in_bounds(mem, size, lowest, highest):
    try:
        addr = place_initrd(mem, size, lowest, highest, "fuzz")
    except UserError:
        return
    assert addr % 4096 == 0 and addr >= lowest and addr + size <= min(highest, mem.low_end)


# ---------------------------------------------------------------- the guest page walker
PT_AREA = 0x10000              # where the drawn page-table bytes go (64 KiB)


# Entries that point back into the area (with drawn flag bits) make deep walks likely.
pt_entry = st.one_of(st.builds(lambda page, flags: PT_AREA + page * 0x1000 | flags, st.integers(0, 15),
                               st.integers(0, 0xFFF)), u64, u32)
pt_writes = st.lists(st.tuples(st.integers(0, 0xFFFF // 8), pt_entry), max_size=48)


@FAST
@given(tables=pt_writes,
       cr0=st.sampled_from([0, CR0_PG, CR0_PG | CR0_WP]) | u32,
       cr3=st.one_of(st.integers(PT_AREA, PT_AREA + 0xF000), u64),
       cr4=st.sampled_from([0, CR4_PAE, CR4_PSE, CR4_PAE | CR4_PSE]) | u32,
       efer=st.sampled_from([0, EFER_LMA]) | u64,
       cpl=st.sampled_from([0, 3]),
       gva=st.one_of(st.integers(0, 1 << 32), u64),
       length=st.one_of(st.sampled_from([-1, 0, 8, MAX_COPY, MAX_COPY + 1]), st.integers(0, 9000),
                        st.integers(-2, MAX_COPY + 2)))
def test_page_walker_faults_or_stays_in_ram(mem, tables, cr0, cr3, cr4, efer, cpl, gva, length):
    mem.fill(PT_AREA, 0x10000)
    for slot, value in tables:
        mem.write_u64(PT_AREA + 8 * slot, value)
    ga = GuestAccess(mem, cr0, cr3, cr4, efer, cpl)
    try:
        data = ga.read(gva, length)
    except GuestFault:
        pass
    else:
        assert len(data) == length
    try:
        gpa = ga.translate(gva, write=True)
    except GuestFault:
        return
    assert gpa >= 0
    try:
        ga.write(gva, b"\0" * min(max(length, 0), 64))
    except GuestFault:
        pass


# ---------------------------------------------------------------- hypercall argument structs
STRUCTS = sorted((name, s) for name, s in vars(abi).items() if type(s).__name__ == "XenStruct")


@pytest.mark.parametrize("which", ["64", "32"])
@pytest.mark.parametrize("name,struct_", STRUCTS, ids=[n for n, _ in STRUCTS])
def test_every_abi_layout_decodes_any_bytes(name, struct_, which):
    """A guest's argument bytes always decode (no exception) and encode back to the
    struct's size; re-encoding is stable (a union encodes through its first member, so
    raw -> parse -> build is not the identity for unions)."""
    lay = abi.layout(struct_, which)
    n = abi.sizeof(struct_, which)                 # C's sizeof (a flexible array adds nothing)

    @settings(max_examples=5, deadline=None)
    @given(raw=st.binary(min_size=n, max_size=n + 16))
    def check(raw):
        value = lay.parse(raw)
        again = lay.build(value)
        assert len(again) >= n
        assert lay.build(lay.parse(again)) == again

    check()
