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
from vmm.boot.bzimage import (BOOT_FLAG, HDRS_MAGIC, LOADED_HIGH, MIN_PROTOCOL, SETUP_HEADER_OFFSET, SETUP_HEADER_SIZE,
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
    # (Hypothesis favours small draws: 0..2 -> valid, 3 -> other.)
    return st.integers(0, 3).flatmap(lambda k: other if k == 3 else st.just(valid))


@st.composite
def elf_images(draw):
    """A well-formed PVH ELF32/64 (a PT_NOTE with the Xen PHYS32_ENTRY note, PT_LOADs),
    then a drawn number of its fields replaced by anything (0 is the likeliest), a few
    bytes overwritten, and sometimes the file cut short."""
    bits = draw(st.sampled_from([32, 64]))
    fmt_ph = "<IIIIIIII" if bits == 32 else "<IIQQQQQQ"
    ehsize, phentsize = (52, 32) if bits == 32 else (64, 56)
    nsegs = draw(st.integers(2, 4))
    body = bytes(draw(st.binary(min_size=0, max_size=512)))
    data_off = ehsize + nsegs * phentsize
    note_len = 12 + 4 + 8
    f = {"entry": 0x100000, "namesz": 4, "descsz": 8, "e_phoff": ehsize, "e_phentsize": phentsize,
         "e_phnum": nsegs}
    for i in range(nsegs):
        f[f"type{i}"] = PT_NOTE if i == 0 else PT_LOAD
        f[f"off{i}"] = data_off
        f[f"filesz{i}"] = note_len if i == 0 else note_len + len(body)
        f[f"memsz{i}"] = f[f"filesz{i}"] + 0x1000
        f[f"paddr{i}"] = 0x100000 + 0x10000 * max(i - 1, 0)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(f)))
        f[key] = draw(st.one_of(st.integers(0, 0x20000), paddr, u32)) & 0xFFFF
        if key.startswith(("off", "filesz", "memsz", "paddr", "entry")):
            f[key] = draw(st.one_of(st.integers(0, MEM_SIZE + 0x1000), u32))
    wide = 0xFFFFFFFF if bits == 32 else (1 << 64) - 1
    note = struct.pack("<III", f["namesz"] & 0xFFFFFFFF, f["descsz"] & 0xFFFFFFFF, XEN_ELFNOTE_PHYS32_ENTRY)
    note += b"Xen\0" + struct.pack("<Q", f["entry"])
    phdrs = b""
    for i in range(nsegs):
        vals = [f[f"type{i}"], f[f"off{i}"] & wide, f[f"paddr{i}"] & wide, f[f"filesz{i}"] & wide,
                f[f"memsz{i}"] & wide]
        kind, off, pa, filesz, memsz = vals
        if bits == 32:
            phdrs += struct.pack(fmt_ph, kind, off, pa, pa, filesz, memsz, 7, 0x1000)
        else:
            phdrs += struct.pack(fmt_ph, kind, 7, off, pa, pa, filesz, memsz, 0x1000)
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    e = (f["entry"] & wide, f["e_phoff"] & wide, 0, 0, ehsize, f["e_phentsize"] & 0xFFFF, f["e_phnum"] & 0xFFFF)
    if bits == 32:
        hdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, *e, 0, 0, 0)
    else:
        hdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, *e, 0, 0, 0)
    image = bytearray(hdr + phdrs + note + body)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):
        image[draw(st.integers(0, len(image) - 1).map(lambda i: len(image) - 1 - i))] = draw(st.integers(0, 255))
    if draw(st.sampled_from([False] * 7 + [True])):
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
    """A setup header over random bytes, each checked field usually sane, then a
    protected-mode kernel of drawn length (often shorter than the header claims)."""
    raw = draw(st.binary(min_size=SETUP_HEADER_SIZE, max_size=SETUP_HEADER_SIZE))
    hdr = SetupHeader.parse(raw)
    hdr.boot_flag = draw(mostly(BOOT_FLAG, st.integers(0, 0xFFFF)))
    hdr.header = draw(mostly(HDRS_MAGIC, u32))
    hdr.jump = draw(mostly(0x66EB, st.integers(0, 0xFFFF)))                  # jmp to 0x202 + 0x66
    hdr.version = draw(mostly(MIN_PROTOCOL, st.integers(0, 0xFFFF)))
    hdr.loadflags = draw(mostly(LOADED_HIGH, st.integers(0, 255)))
    hdr.xloadflags = draw(mostly(1, st.integers(0, 0xFFFF)))                  # XLF_KERNEL_64
    hdr.setup_sects = draw(mostly(1, st.integers(0, 255)))
    hdr.syssize = draw(mostly(0, st.one_of(st.integers(0, 64), u32)))
    hdr.pref_address = draw(mostly(0x200000, st.one_of(st.integers(0, MEM_SIZE), u64)))
    hdr.init_size = draw(mostly(0x100000, st.one_of(st.integers(0, MEM_SIZE), u32)))
    hdr.initrd_addr_max = draw(mostly(0x7FFFFFFF, st.one_of(st.integers(0, MEM_SIZE), u32)))
    hdr.cmdline_size = draw(mostly(2048, st.one_of(st.integers(0, 64), u32)))
    head = draw(st.binary(min_size=SETUP_HEADER_OFFSET, max_size=SETUP_HEADER_OFFSET))
    image = head + SetupHeader.build(hdr)
    setup_end = ((hdr.setup_sects or 4) + 1) * 512
    image += bytes(max(0, setup_end - len(image))) if draw(mostly(True, st.just(False))) else b""
    image += draw(st.binary(min_size=0, max_size=256))
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


def test_bzimage_header_too_short_for_its_protocol(mem):
    """Found by the property above: a header claiming protocol 2.12 whose jump byte ends
    it at 0x202 would have had the initrd and command line fields silently dropped."""
    hdr = SetupHeader.parse(bytes(SETUP_HEADER_SIZE))
    hdr.boot_flag, hdr.header, hdr.version, hdr.setup_sects = BOOT_FLAG, HDRS_MAGIC, MIN_PROTOCOL, 1
    hdr.loadflags, hdr.xloadflags, hdr.initrd_addr_max, hdr.cmdline_size = LOADED_HIGH, 1, 0x7FFFFFFF, 2048
    hdr.pref_address, hdr.init_size, hdr.jump = 0x200000, 0x100000, 0x00EB
    image = bytes(SETUP_HEADER_OFFSET) + SetupHeader.build(hdr)
    image += bytes(1024 - len(image) + 64)
    with pytest.raises(UserError, match="setup header ends at 0x202"):
        load_bzimage(mem, image, "short.bzImage", "", b"\0")
    hdr.jump = 0x66EB
    load_bzimage(mem, bytes(SETUP_HEADER_OFFSET) + SetupHeader.build(hdr) + image[SETUP_HEADER_OFFSET
                                                                                   + SETUP_HEADER_SIZE:],
                 "ok.bzImage", "", b"\0")


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


# ---------------------------------------------------------------- xenstore requests and ring
# A guest's xenstore messages (xen/xenstore/daemon.py) and its ring page (ring.py) are
# untrusted: whatever they hold, the daemon answers every request with exactly one reply
# (plus watch events) and never raises; the ring code never raises whatever the indexes.
from vmm.errors import internal_errors                                  # noqa: E402
from xen.xenstore.daemon import HEADER_SIZE, XenstoreDaemon, message, parse_message   # noqa: E402
from xen.xenstore.populate import DomainInfo, populate_domain           # noqa: E402
from xen.xenstore.ring import OFF as XS_OFF                             # noqa: E402
from xen.xenstore.ring import XenstoreRing                              # noqa: E402

XS_ERRNAMES = {name.encode() + b"\0" for _, name in abi.XSD_ERRORS}
xs_words = st.sampled_from([b"data", b"a", b"control", b"shutdown", b"", b"@releaseDomain", b"/local",
                            b"domain", b"5", b"6", b"0", b"T", b"F", b"r5", b"n6", b"b0", b"..", b"x y",
                            b"/", b"//", b"1", b"-1", b"4294967295"])
xs_strings = st.lists(st.lists(xs_words, max_size=4).map(lambda ws: b"/".join(ws)), max_size=4)
xs_payload = st.one_of(xs_strings.map(lambda ss: b"".join(s + b"\0" for s in ss)),
                       xs_strings.map(lambda ss: b"\0".join(ss)), st.binary(max_size=64))
xs_type = st.one_of(st.sampled_from(list(abi.XS)), st.integers(0, 40), u32)


@st.composite
def xs_requests(draw):
    """(sender index, raw message): mostly well-formed headers, sometimes not."""
    payload = draw(xs_payload)
    tx = draw(st.one_of(st.just(0), st.integers(1, 3), u32))
    raw = message(draw(xs_type), draw(u32), tx, payload)
    k = draw(st.integers(0, 9))
    if k == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif k == 1:
        raw = raw[:12] + draw(u32).to_bytes(4, "little") + raw[16:]
    return draw(st.integers(0, 2)), raw


def xs_daemon():
    d = XenstoreDaemon()
    conns = []
    for domid in (5, 6):
        conns.append(d.introduce(domid))
        populate_domain(d, DomainInfo(domid=domid, name=f"g{domid}", max_memkb=1, target_memkb=1,
                                      store_port=1, store_ring_ref=1))
    return d, conns + [d.vmm]


def check_answer(raw: bytes, out: list[bytes]) -> None:
    replies = []
    for m in out:
        assert len(m) >= HEADER_SIZE
        t, rid, tx, payload = parse_message(m)
        assert len(payload) == len(m) - HEADER_SIZE <= abi.XENSTORE_PAYLOAD_MAX
        if t == abi.XS_WATCH_EVENT:
            assert (rid, tx) == (0, 0) and payload.count(b"\0") >= 2
        else:
            replies.append((t, rid, tx, payload))
    assert len(replies) == 1, out
    t, rid, tx, payload = replies[0]
    if t == abi.XS_ERROR:
        assert payload in XS_ERRNAMES, payload
    if len(raw) >= HEADER_SIZE:
        rt, rrid, rtx, _ = parse_message(raw)
        assert (rid, tx) == (rrid, rtx) and t in (rt, abi.XS_ERROR)


@FAST
@given(reqs=st.lists(xs_requests(), min_size=1, max_size=12))
def test_xenstore_answers_any_request(reqs):
    d, conns = xs_daemon()
    errors = len(internal_errors())
    for who, raw in reqs:
        check_answer(raw, d.handle(conns[who], raw))
    for c in conns:
        for m in c.take_output():
            assert parse_message(m)[0] == abi.XS_WATCH_EVENT
    assert len(internal_errors()) == errors


class _PageMem:
    def __init__(self):
        self.buf = bytearray(0x2000)

    def read(self, gpa, n):
        assert 0 <= gpa and gpa + n <= len(self.buf)
        return bytes(self.buf[gpa:gpa + n])

    def write(self, gpa, data):
        assert 0 <= gpa and gpa + len(data) <= len(self.buf)
        self.buf[gpa:gpa + len(data)] = data


ring_field = st.sampled_from(["req_cons", "req_prod", "rsp_cons", "rsp_prod", "connection", "error"])
ring_action = st.one_of(
    st.tuples(st.just("set"), ring_field, st.one_of(u32, st.integers(0, 2048))),
    st.tuples(st.just("send"), st.one_of(xs_requests().map(lambda r: r[1]), st.binary(max_size=300))),
    st.tuples(st.just("consume"), st.integers(0, 2048)),
    st.tuples(st.just("vmm_write"), st.integers(0, 3)))


@FAST
@given(start=st.tuples(u32, u32, u32, u32), junk=st.binary(min_size=0, max_size=2048),
       actions=st.lists(ring_action, max_size=20))
def test_xenstore_ring_survives_any_guest(start, junk, actions):
    """Any indexes, contents, connection values and message bytes: process() returns a
    bool and never raises; while no error is flagged, what we produce stays within the
    ring (rsp_prod - rsp_cons <= 1024 when the guest kept its cons sane)."""
    d, conns = xs_daemon()
    mem = _PageMem()
    gpa = 0x1000
    ring = XenstoreRing(d, conns[0], mem, gpa)
    ring.start()
    mem.write(gpa, junk)
    for f, v in zip(("req_cons", "req_prod", "rsp_cons", "rsp_prod"), start):
        mem.write(gpa + XS_OFF[f], v.to_bytes(4, "little"))
    get = lambda f: int.from_bytes(mem.read(gpa + XS_OFF[f], 4), "little")      # noqa: E731
    put = lambda f, v: mem.write(gpa + XS_OFF[f], (v & 0xFFFFFFFF).to_bytes(4, "little"))  # noqa: E731
    errors = len(internal_errors())
    for act in actions:
        if act[0] == "set":
            put(act[1], act[2])
        elif act[0] == "send":
            prod = get("req_prod")
            for i, b in enumerate(act[1][:1024]):
                mem.write(gpa + XS_OFF["req"] + ((prod + i) & 1023), bytes([b]))
            put("req_prod", prod + len(act[1][:1024]))
        elif act[0] == "consume":
            put("rsp_cons", get("rsp_cons") + act[1])
        else:
            d.write(f"/local/domain/5/data/k{act[1]}", "v")
        cons_before, prod_before = get("rsp_cons"), get("rsp_prod")
        assert ring.process() in (True, False)
        if ((prod_before - cons_before) & 0xFFFFFFFF) <= 1024 and not ring.error:
            assert (get("rsp_prod") - get("rsp_cons")) & 0xFFFFFFFF <= 1024   # (a reconnection zeroes both)
        assert ring.outstanding <= conns[0].quotas.outstanding
    assert len(internal_errors()) == errors
