"""xen/abi: struct sizes and offsets against Xen's public headers, and round-trips.

Expected values come from the headers (xen/include/public/*.h), from Xen's own
tools/include/xen-foreign/reference.size (x86_32 / x86_64 struct sizes) and from
what KVM hard-codes for shared_info (wallclock at 0xC00, wc_sec_hi at 0xC0C,
pending/mask bitmaps at 0x800/0xA00 for 64-bit guests).  Independent
cross-checks use struct.pack formats with explicit padding.
"""

from __future__ import annotations

import random
import struct

import construct
import pytest

from xen import abi

BOTH = pytest.mark.parametrize("which", abi.ABIS)


# --------------------------------------------------------------------------- sizes

# (C struct, sizeof on x86_64, sizeof on x86_32)
SIZES = [
    ("vcpu_time_info", 32, 32),             # xen.h "/* 32 bytes */"; reference.size
    ("arch_vcpu_info", 16, 24),             # reference.size
    ("vcpu_info", 64, 64),                  # xen.h "/* 64 bytes (x86) */"; reference.size
    ("arch_shared_info", 48, 28),           # reference.size
    ("shared_info", 3136, 2344),            # reference.size
    ("multicall_entry", 64, 32),
    ("vcpu_runstate_info", 48, 44),         # KVM: compat_vcpu_runstate_info is 44, packed
    ("vcpu_register_runstate_memory_area", 8, 8),
    ("vcpu_register_time_memory_area", 8, 8),
    ("vcpu_set_periodic_timer", 8, 8),
    ("vcpu_set_singleshot_timer", 16, 12),
    ("vcpu_register_vcpu_info", 16, 16),
    ("vcpu_get_physid", 8, 8),
    ("evtchn_alloc_unbound", 8, 8),
    ("evtchn_bind_interdomain", 12, 12),
    ("evtchn_bind_virq", 12, 12),
    ("evtchn_bind_pirq", 12, 12),
    ("evtchn_bind_ipi", 8, 8),
    ("evtchn_close", 4, 4),
    ("evtchn_send", 4, 4),
    ("evtchn_status", 24, 24),
    ("evtchn_bind_vcpu", 8, 8),
    ("evtchn_unmask", 4, 4),
    ("evtchn_reset", 2, 2),
    ("evtchn_init_control", 24, 24),
    ("evtchn_expand_array", 8, 8),
    ("evtchn_set_priority", 8, 8),
    ("evtchn_op", 28, 28),                  # cmd + union (largest: evtchn_status)
    ("evtchn_fifo_control_block", 72, 72),
    ("sched_shutdown", 4, 4),
    ("sched_poll", 24, 16),
    ("sched_remote_shutdown", 8, 8),
    ("xen_hvm_param", 16, 16),
    ("xen_hvm_evtchn_upcall_vector", 8, 8),
    ("xen_hvm_pagetable_dying", 16, 16),
    ("xen_memory_reservation", 32, 20),
    ("xen_memory_domain", 2, 2),
    ("xen_add_to_physmap", 24, 16),
    ("xen_add_to_physmap_batch", 32, 20),
    ("xen_remove_from_physmap", 16, 8),
    ("xen_memory_map", 16, 8),
    ("e820entry", 20, 20),
    ("xen_compile_info", 144, 144),
    ("xen_platform_parameters", 8, 4),
    ("xen_feature_info", 8, 8),
    ("xen_build_id", 4, 4),                 # flexible array member
    ("gnttab_setup_table", 24, 16),
    ("gnttab_query_size", 16, 16),
    ("gnttab_set_version", 4, 4),
    ("gnttab_get_version", 8, 8),
    ("gnttab_get_status_frames", 16, 12),
    ("physdev_eoi", 4, 4),
    ("physdev_pirq_eoi_gmfn", 8, 4),
    ("physdev_irq_status_query", 8, 8),
    ("physdev_map_pirq", 40, 36),           # x86_32: table_base 4-byte aligned
    ("physdev_unmap_pirq", 8, 8),
    ("physdev_get_free_pirq", 8, 8),
]


@pytest.mark.parametrize("name,size64,size32", SIZES)
def test_sizeof(name, size64, size32):
    xs = abi.STRUCTS[name]
    assert abi.sizeof(name, "64") == xs.sizeof("64") == size64
    assert abi.sizeof(name, "32") == xs.sizeof("32") == size32
    if name != "xen_build_id":
        assert abi.layout(name, "64").sizeof() == size64
        assert abi.layout(xs, "32").sizeof() == size32
    assert xs.header


def test_struct_objects_are_named_like_c():
    for cname, xs in abi.STRUCTS.items():
        if "." not in cname:                # anonymous inner structs: "outer.member"
            assert getattr(abi, cname) is xs, cname
        if xs.same_on_both_abis:
            assert xs.abi64 is xs.abi32


# ------------------------------------------------------------ vcpu_info, shared_info

def test_vcpu_info_offsets():
    assert abi.VCPU_INFO_SIZE == 64
    assert abi.VCPU_INFO_EVTCHN_UPCALL_PENDING == 0
    assert abi.VCPU_INFO_EVTCHN_UPCALL_MASK == 1
    assert abi.VCPU_INFO_EVTCHN_PENDING_SEL == abi.VCPU_INFO_EVTCHN_PENDING_SEL_64 == 8
    assert abi.VCPU_INFO_EVTCHN_PENDING_SEL_32 == 4
    assert abi.VCPU_INFO_TIME == 32
    for which, sel in (("64", 8), ("32", 4)):
        o = abi.VCPU_INFO_OFFSETS[which]
        assert (o.evtchn_upcall_pending, o.evtchn_upcall_mask, o.evtchn_pending_sel, o.time) == (0, 1, sel, 32)
        vi = abi.layout(abi.vcpu_info, which)
        assert abi.offset_of(vi, "arch") == 2 * sel
        assert abi.offset_of(vi, "time.tsc_to_system_mul") == 32 + 24
        assert abi.offset_of(vi, "time.flags") == 32 + 29


def test_shared_info_offsets_64():
    # KVM (arch/x86/kvm/xen.c) hard-codes these for 64-bit guests.
    assert abi.EVTCHN_PENDING_OFFSET == 0x800
    assert abi.EVTCHN_MASK_OFFSET == 0xA00
    assert abi.WC_VERSION == 0xC00
    assert abi.WC_SEC == 0xC04
    assert abi.WC_NSEC == 0xC08
    assert abi.WC_SEC_HI == 0xC0C
    assert abi.SHARED_INFO_SIZE == 0xC40
    si = abi.layout(abi.shared_info, "64")
    assert abi.offset_of(si, "wc_sec_hi") == 0xC0C
    assert abi.offset_of(si, "arch.max_pfn") == 0xC10


def test_shared_info_offsets_32():
    assert abi.EVTCHN_PENDING_OFFSET_32 == 0x800
    assert abi.EVTCHN_MASK_OFFSET_32 == 0x880
    assert abi.WC_VERSION_32 == 0x900
    assert abi.WC_SEC_32 == 0x904
    assert abi.WC_NSEC_32 == 0x908
    assert abi.WC_SEC_HI_32 == 0x90C + 24       # arch.wc_sec_hi, after 6 longs
    assert abi.SHARED_INFO_SIZE_32 == 0x928
    assert abi.offset_of(abi.shared_info, "arch.wc_sec_hi", "32") == abi.WC_SEC_HI_32
    with pytest.raises(KeyError):
        abi.offset_of(abi.shared_info, "wc_sec_hi", "32")


@BOTH
def test_shared_info_vcpu_slots(which):
    assert abi.XEN_LEGACY_MAX_VCPUS == 32
    for i in (0, 1, 31):
        assert abi.offset_of(abi.shared_info, f"vcpu_info[{i}]", which) == 64 * i
        assert abi.offset_of(abi.shared_info, f"vcpu_info[{i}].time", which) == 64 * i + 32
    o = abi.SHARED_INFO_OFFSETS[which]
    assert o.vcpu_info == 0 and o.evtchn_pending == 32 * 64


@BOTH
def test_evtchn_2l_bitmaps_cover_all_channels(which):
    nr = {"64": abi.EVTCHN_2L_NR_CHANNELS_64, "32": abi.EVTCHN_2L_NR_CHANNELS_32}[which]
    assert nr == {"64": 4096, "32": 1024}[which]
    o = abi.SHARED_INFO_OFFSETS[which]
    assert (o.evtchn_mask - o.evtchn_pending) * 8 == nr
    assert (o.wc_version - o.evtchn_mask) * 8 == nr
    # evtchn_pending_sel (one xen_ulong_t) has one bit per word of evtchn_pending
    word = abi.VCPU_INFO_OFFSETS[which].evtchn_pending_sel       # == sizeof(xen_ulong_t)
    assert (o.evtchn_mask - o.evtchn_pending) // word == word * 8
    assert abi.EVTCHN_2L_NR_CHANNELS == 4096


# ---------------------------------------------------------- key structs, cross-checked

def test_physdev_map_pirq_layout():
    # Reference notes: offsets 0/4/8/12/16/20/24/32, 40 bytes (64-bit).
    names = ["domid", "type", "index", "pirq", "bus", "devfn", "entry_nr", "table_base"]
    assert [abi.offset_of(abi.physdev_map_pirq, n, "64") for n in names] == [0, 4, 8, 12, 16, 20, 24, 32]
    assert [abi.offset_of(abi.physdev_map_pirq, n, "32") for n in names] == [0, 4, 8, 12, 16, 20, 24, 28]
    fields = dict(domid=abi.DOMID_SELF, type=abi.MAP_PIRQ_TYPE_GSI, index=9, pirq=-1, bus=0, devfn=0x18,
                  entry_nr=0, table_base=0xFEBF0000)
    vals = [fields[n] for n in names]
    assert abi.physdev_map_pirq.abi64.build(fields) == struct.pack("<H2xiiiiii4xQ", *vals)
    assert abi.physdev_map_pirq.abi32.build(fields) == struct.pack("<H2xiiiiiiQ", *vals)
    assert struct.calcsize("@HiiiiiiQ") == 40      # the native x86_64 C layout agrees


def test_xen_add_to_physmap():
    d = dict(domid=abi.DOMID_SELF, size=0, space=abi.XENMAPSPACE_shared_info, idx=0, gpfn=0xFEFFF)
    b64 = abi.xen_add_to_physmap.abi64.build(d)
    assert b64 == struct.pack("<HHIQQ", 0x7FF0, 0, 0, 0, 0xFEFFF) and len(b64) == 24
    assert abi.xen_add_to_physmap.abi32.build(d) == struct.pack("<HHIII", 0x7FF0, 0, 0, 0, 0xFEFFF)
    assert abi.xen_add_to_physmap.abi64.parse(b64).gpfn == 0xFEFFF


def test_xen_memory_reservation():
    d = dict(extent_start=0x1000, nr_extents=3, extent_order=9, mem_flags=0, domid=abi.DOMID_SELF)
    assert abi.xen_memory_reservation.abi64.build(d) == struct.pack("<QQIIH6x", 0x1000, 3, 9, 0, 0x7FF0)
    assert abi.xen_memory_reservation.abi32.build(d) == struct.pack("<IIIIH2x", 0x1000, 3, 9, 0, 0x7FF0)


def test_xen_add_to_physmap_batch():
    d = dict(domid=1, space=abi.XENMAPSPACE_gmfn_foreign, size=4, u=dict(foreign_domid=7),
             idxs=0x100, gpfns=0x200, errs=0x300)
    assert abi.xen_add_to_physmap_batch.abi64.build(d) == struct.pack("<HHHHQQQ", 1, 4, 4, 7, 0x100, 0x200, 0x300)
    assert abi.xen_add_to_physmap_batch.abi32.build(d) == struct.pack("<HHHHIII", 1, 4, 4, 7, 0x100, 0x200, 0x300)


def test_xen_memory_map_and_e820():
    assert abi.xen_memory_map.abi64.build(dict(nr_entries=2, buffer=0x5000)) == struct.pack("<I4xQ", 2, 0x5000)
    assert abi.xen_memory_map.abi32.build(dict(nr_entries=2, buffer=0x5000)) == struct.pack("<II", 2, 0x5000)
    e = abi.e820entry.abi64.build(dict(addr=0x100000, size=0x7FF00000, type=1))
    assert e == struct.pack("<QQI", 0x100000, 0x7FF00000, 1)


def test_vcpu_runstate_info():
    assert abi.offset_of(abi.vcpu_runstate_info, "state_entry_time", "64") == 8
    assert abi.offset_of(abi.vcpu_runstate_info, "state_entry_time", "32") == 4
    assert abi.offset_of(abi.vcpu_runstate_info, "time[3]", "32") == 4 + 8 + 24
    d = dict(state=abi.RUNSTATE_running, state_entry_time=abi.XEN_RUNSTATE_UPDATE | 5, time=[1, 2, 3, 4])
    assert abi.vcpu_runstate_info.abi64.build(d) == struct.pack("<i4xQ4Q", 0, (1 << 63) | 5, 1, 2, 3, 4)
    assert abi.vcpu_runstate_info.abi32.build(d) == struct.pack("<iQ4Q", 0, (1 << 63) | 5, 1, 2, 3, 4)


def test_vcpu_structs():
    d = dict(mfn=0x1234, offset=0x40)
    assert abi.vcpu_register_vcpu_info.abi64.build(d) == struct.pack("<QII", 0x1234, 0x40, 0)
    assert abi.vcpu_register_vcpu_info.abi32 is abi.vcpu_register_vcpu_info.abi64
    d = dict(timeout_abs_ns=10**9, flags=abi.VCPU_SSHOTTMR_future)
    assert abi.vcpu_set_singleshot_timer.abi64.build(d) == struct.pack("<QI4x", 10**9, 1)
    assert abi.vcpu_set_singleshot_timer.abi32.build(d) == struct.pack("<QI", 10**9, 1)
    # addr union: p (u64) covers it; h/v are 8 bytes on x86_64 but 4 on x86_32.
    ra = abi.vcpu_register_runstate_memory_area
    assert not ra.same_on_both_abis
    raw = struct.pack("<Q", 0xFFFF888000001000)
    assert ra.abi64.parse(raw).addr.h == 0xFFFF888000001000
    assert ra.abi32.parse(raw).addr.h == 0x00001000
    assert ra.abi32.build(dict(addr=dict(h=0xC0001000))) == struct.pack("<I4x", 0xC0001000)
    assert ra.abi64.build(ra.abi64.parse(raw)) == raw


def test_sched_poll():
    d = dict(ports=0xFFFF8880000A0000, nr_ports=2, timeout=123)
    assert abi.sched_poll.abi64.build(d) == struct.pack("<QI4xQ", 0xFFFF8880000A0000, 2, 123)
    assert abi.offset_of(abi.sched_poll, "timeout", "64") == 16
    d["ports"] = 0xC00A0000
    assert abi.sched_poll.abi32.build(d) == struct.pack("<IIQ", 0xC00A0000, 2, 123)
    assert abi.offset_of(abi.sched_poll, "timeout", "32") == 8


def test_hvm_op_structs():
    b = abi.xen_hvm_param.abi64.build(dict(domid=abi.DOMID_SELF, index=abi.HVM_PARAM_CALLBACK_IRQ,
                                           value=(2 << 56) | 0xF3))
    assert b == struct.pack("<HHIQ", 0x7FF0, 0, 0, (2 << 56) | 0xF3)
    assert abi.offset_of(abi.xen_hvm_param, "value") == 8
    uv = abi.xen_hvm_evtchn_upcall_vector
    assert uv.abi64.build(dict(vcpu=1, vector=0xF3)) == struct.pack("<IB3x", 1, 0xF3)
    assert abi.xen_hvm_pagetable_dying.abi32.build(dict(domid=abi.DOMID_SELF, gpa=0x1000)) == \
        struct.pack("<H6xQ", 0x7FF0, 0x1000)


def test_evtchn_structs():
    assert abi.evtchn_bind_virq.abi64.build(dict(virq=abi.VIRQ_TIMER, vcpu=1, port=0)) == struct.pack("<III", 0, 1, 0)
    assert abi.evtchn_bind_interdomain.abi64.build(dict(remote_dom=0, remote_port=5, local_port=0)) == \
        struct.pack("<H2xII", 0, 5, 0)
    assert abi.evtchn_init_control.abi32.build(dict(control_gfn=0x1234, offset=0, vcpu=1, link_bits=0)) == \
        struct.pack("<QIIB7x", 0x1234, 0, 1, 0)
    st = dict(dom=abi.DOMID_SELF, port=3, status=abi.EVTCHNSTAT_interdomain, vcpu=0,
              u=dict(interdomain=dict(dom=0, port=9)))
    raw = abi.evtchn_status.abi64.build(st)
    assert raw == struct.pack("<H2xIIIH2xI", 0x7FF0, 3, 2, 0, 0, 9)
    assert abi.offset_of(abi.evtchn_status, "u.interdomain.port") == 20
    p = abi.evtchn_status.abi64.parse(raw)
    assert p.u.interdomain.port == 9 and p.u.pirq == 0 and p.u.unbound.dom == 0
    # A non-first union member builds too (padded to the union size).
    assert abi.evtchn_status.abi64.build(dict(st, status=abi.EVTCHNSTAT_virq, u=dict(virq=1)))[16:] == \
        struct.pack("<II", 1, 0)


def test_evtchn_op_compat():
    # __HYPERVISOR_event_channel_op_compat(struct evtchn_op *): cmd, then the union.
    raw = struct.pack("<IIII", abi.EVTCHNOP_bind_ipi, 2, 0, 0) + bytes(12)
    op = abi.evtchn_op.abi64.parse(raw)
    assert op.cmd == abi.EVTCHNOP.bind_ipi
    arg = abi.EVTCHNOP_ARG[abi.EVTCHNOP(op.cmd)]
    assert arg is abi.evtchn_bind_ipi
    assert abi.offset_of(abi.evtchn_op, "u") == 4
    assert op.u.bind_ipi.vcpu == 2
    assert abi.evtchn_op.abi64.build(op) == raw
    assert abi.evtchn_op.abi32.build(dict(cmd=abi.EVTCHNOP_send, u=dict(send=dict(port=7)))) == \
        struct.pack("<II", 4, 7) + bytes(20)


def test_grant_table_structs():
    d = dict(dom=abi.DOMID_SELF, nr_frames=1, status=0, frame_list=0xFFFF888000002000)
    assert abi.gnttab_setup_table.abi64.build(d) == struct.pack("<H2xIh6xQ", 0x7FF0, 1, 0, 0xFFFF888000002000)
    d["frame_list"] = 0xC0002000
    assert abi.gnttab_setup_table.abi32.build(d) == struct.pack("<H2xIh2xI", 0x7FF0, 1, 0, 0xC0002000)
    q = dict(dom=abi.DOMID_SELF, nr_frames=1, max_nr_frames=64, status=abi.GNTST_okay)
    assert abi.gnttab_query_size.abi64.build(q) == struct.pack("<H2xIIh2x", 0x7FF0, 1, 64, 0)


def test_version_structs():
    assert abi.xen_feature_info.abi64.build(dict(submap_idx=0, submap=0x701)) == struct.pack("<II", 0, 0x701)
    assert abi.offset_of(abi.xen_build_id, "buf") == 4
    assert abi.xen_build_id.abi64.build(dict(len=4, buf=b"\x01\x02\x03\x04")) == b"\x04\0\0\0\x01\x02\x03\x04"
    assert abi.xen_build_id.abi64.parse(b"\x02\0\0\0ab").buf == b"ab"
    ci = abi.xen_compile_info.abi64.build(dict(compiler="gcc", compile_by="vmm", compile_domain="", compile_date="x"))
    assert len(ci) == 144 and ci[64:67] == b"vmm" and ci[:4] == b"gcc\0"
    assert abi.offset_of(abi.xen_compile_info, "compile_date") == 112
    assert abi.xen_platform_parameters.abi32.build(dict(virt_start=0xF5800000)) == struct.pack("<I", 0xF5800000)


# ---------------------------------------------------------------------- round-trips

def _zero_padding_mask(st, n: int) -> bytes:
    """Which bytes survive parse -> build (compiler padding is rebuilt as 0)."""
    return st.build(st.parse(b"\x7f" * n))


@pytest.mark.parametrize("name", sorted(abi.STRUCTS))
@BOTH
def test_parse_build_round_trip(name, which):
    xs = abi.STRUCTS[name]
    st = xs[which]
    n = xs.sizeof(which)
    extra = 5 if name in ("xen_build_id", "xen_varbuf") else 0      # flexible arrays
    rng = random.Random(f"{name}/{which}")
    data = bytes(rng.randrange(1, 0x80) for _ in range(n + extra))  # ASCII: char[] fields decode
    mask = _zero_padding_mask(st, n + extra)
    expected = bytes(b if m else 0 for b, m in zip(data, mask))
    obj = st.parse(data)
    assert st.build(obj) == expected
    assert st.build(st.parse(expected)) == expected


@BOTH
def test_shared_info_round_trip_fields(which):
    st = abi.layout(abi.shared_info, which)
    raw = bytearray(abi.sizeof(abi.shared_info, which))
    o = abi.SHARED_INFO_OFFSETS[which]
    struct.pack_into("<III", raw, o.wc_version, 2, 1_700_000_000, 500)
    struct.pack_into("<I", raw, o.wc_sec_hi, 1)
    raw[o.evtchn_pending] = 0b10
    raw[64 + abi.VCPU_INFO_EVTCHN_UPCALL_PENDING] = 1
    si = st.parse(bytes(raw))
    assert (si.wc_version, si.wc_sec, si.wc_nsec) == (2, 1_700_000_000, 500)
    assert (si.wc_sec_hi if which == "64" else si.arch.wc_sec_hi) == 1
    assert si.evtchn_pending[0] == 2 and si.vcpu_info[1].evtchn_upcall_pending == 1
    assert st.build(si) == bytes(raw)


# -------------------------------------------------------------- helpers and errors

def test_layout_and_offset_of_errors():
    assert abi.layout("vcpu_info", "64") is abi.vcpu_info.abi64
    assert abi.layout(abi.vcpu_info, 32) is abi.vcpu_info.abi32
    with pytest.raises(ValueError):
        abi.layout(abi.vcpu_info, "x32")
    with pytest.raises(TypeError):
        abi.offset_of(abi.shared_info, "wc_version")        # differs between ABIs: abi needed
    assert abi.offset_of(abi.xen_hvm_param, "index") == 4   # same on both: abi optional
    assert abi.offset_of("physdev_map_pirq", "table_base", "32") == 28
    with pytest.raises(KeyError):
        abi.offset_of(abi.vcpu_info.abi64, "nope")
    with pytest.raises(KeyError):
        abi.offset_of(abi.vcpu_info.abi64, "time[1]")       # not an array
    assert isinstance(abi.vcpu_info.abi64, construct.Struct)


# -------------------------------------------------------------------- constants

def test_hypercall_numbers():
    H = abi.Hypercall
    assert (H.set_trap_table, H.memory_op, H.set_timer_op, H.event_channel_op_compat, H.xen_version,
            H.console_io, H.grant_table_op, H.vm_assist, H.vcpu_op, H.sched_op, H.event_channel_op,
            H.physdev_op, H.hvm_op, H.dm_op, H.hypfs_op, H.arch_0, H.arch_7) == \
        (0, 12, 15, 16, 17, 18, 20, 21, 24, 29, 32, 33, 34, 41, 42, 48, 55)
    assert 11 not in abi.HYPERCALL_NAMES and 43 not in abi.HYPERCALL_NAMES
    assert abi.HYPERCALL_NAMES[34] == "hvm_op"
    assert abi.hypercall_name(29) == "sched_op" and abi.hypercall_name(99) == "hypercall_99"
    assert abi.HYPERCALL_ARG_REGS["64"][:5] == ("rdi", "rsi", "rdx", "r10", "r8")
    assert abi.HYPERCALL_STUB_SIZE == 32


def test_errno():
    E = abi.XenErrno
    assert [E.EPERM, E.ENOENT, E.ESRCH, E.EINTR, E.EIO, E.ENXIO, E.E2BIG, E.ENOEXEC, E.EBADF, E.ECHILD,
            E.EAGAIN, E.ENOMEM, E.EACCES, E.EFAULT, E.EBUSY, E.EEXIST, E.EXDEV, E.ENODEV, E.EISDIR,
            E.EINVAL, E.ENFILE, E.EMFILE, E.ENOSPC, E.EROFS, E.EMLINK, E.EDOM, E.ERANGE, E.EDEADLK,
            E.ENAMETOOLONG, E.ENOLCK, E.ENOSYS, E.ENOTEMPTY, E.ENODATA, E.ETIME, E.EBADMSG, E.EOVERFLOW,
            E.EILSEQ, E.ERESTART, E.ENOTSOCK, E.EOPNOTSUPP, E.EADDRINUSE, E.EADDRNOTAVAIL, E.ENOBUFS,
            E.EISCONN, E.ENOTCONN, E.ETIMEDOUT, E.ECONNREFUSED] == \
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 24, 28, 30, 31, 33,
         34, 35, 36, 37, 38, 39, 61, 62, 74, 75, 84, 85, 88, 95, 98, 99, 105, 106, 107, 110, 111]
    assert E.EWOULDBLOCK is E.EAGAIN and E.EDEADLOCK is E.EDEADLK


def test_subop_constants():
    assert (abi.XENVER_version, abi.XENVER_get_features, abi.XENVER_build_id, abi.XENVER_commandline2) == (0, 6, 10, 14)
    assert (abi.XEN_EXTRAVERSION_LEN, abi.XEN_CHANGESET_INFO_LEN, abi.XEN_CAPABILITIES_INFO_LEN) == (16, 64, 1024)
    assert (abi.XENFEAT_hvm_callback_vector, abi.XENFEAT_hvm_safe_pvclock, abi.XENFEAT_hvm_pirqs) == (8, 9, 10)
    assert [abi.XENMEM[n] for n in ("increase_reservation", "decrease_reservation", "maximum_ram_page",
                                    "current_reservation", "maximum_reservation", "populate_physmap",
                                    "add_to_physmap", "memory_map", "machine_memory_map",
                                    "add_to_physmap_batch")] == [0, 1, 2, 3, 4, 6, 7, 9, 10, 23]
    assert [int(m) for m in abi.XENMAPSPACE] == [0, 1, 2, 3, 4, 5]
    assert abi.XENMAPIDX_grant_table_status == 0x80000000
    assert (abi.HVMOP_set_param, abi.HVMOP_get_param, abi.HVMOP_pagetable_dying,
            abi.HVMOP_set_evtchn_upcall_vector) == (0, 1, 9, 23)
    P = abi.HVM_PARAM
    assert (P.CALLBACK_IRQ, P.STORE_PFN, P.STORE_EVTCHN, P.PAE_ENABLED, P.IOREQ_PFN, P.BUFIOREQ_PFN,
            P.TIMER_MODE, P.HPET_ENABLED, P.IDENT_PT, P.ACPI_S_STATE, P.VM86_TSS, P.VPT_ALIGN,
            P.CONSOLE_PFN, P.CONSOLE_EVTCHN) == (0, 1, 2, 4, 5, 6, 10, 11, 12, 14, 15, 16, 17, 18)
    assert abi.HVM_NR_PARAMS == max(P) + 1 == 39
    assert [int(m) for m in abi.VCPUOP][:14] == list(range(14))
    assert abi.VCPUOP_register_vcpu_time_memory_area == 13 and abi.VCPU_SSHOTTMR_future == 1
    assert [abi.SCHEDOP[n] for n in ("yield", "block", "shutdown", "poll", "remote_shutdown",
                                     "shutdown_code", "watchdog", "pin_override")] == list(range(8))
    assert abi.SCHEDOP_yield == 0
    assert [int(m) for m in abi.SHUTDOWN] == [0, 1, 2, 3, 4, 5]
    assert [int(m) for m in abi.EVTCHNOP] == list(range(15))
    assert [int(m) for m in abi.EVTCHNSTAT] == list(range(6))
    assert abi.BIND_PIRQ__WILL_SHARE == 1 and abi.DOMID_SELF == 0x7FF0
    assert (abi.VIRQ_TIMER, abi.VIRQ_DEBUG, abi.VIRQ_CONSOLE, abi.VIRQ_DOM_EXC, abi.VIRQ_TBUF,
            abi.VIRQ_DEBUGGER, abi.VIRQ_XENOPROF, abi.VIRQ_CON_RING, abi.VIRQ_PCPU_STATE,
            abi.VIRQ_MEM_EVENT, abi.VIRQ_ARGO, abi.VIRQ_ENOMEM, abi.VIRQ_XENPMU) == \
        (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13)
    assert abi.NR_VIRQS == 24 and abi.VIRQ_PER_VCPU == {0, 1, 7, 13}
    assert (abi.VMASST_CMD_enable, abi.VMASST_CMD_disable) == (0, 1)
    assert (abi.VMASST_TYPE_4gb_segments, abi.VMASST_TYPE_4gb_segments_notify,
            abi.VMASST_TYPE_writable_pagetables, abi.VMASST_TYPE_pae_extended_cr3,
            abi.VMASST_TYPE_architectural_iopl, abi.VMASST_TYPE_runstate_update_flag,
            abi.VMASST_TYPE_m2p_strict) == (0, 1, 2, 3, 4, 5, 32)
    assert (abi.CONSOLEIO_write, abi.CONSOLEIO_read) == (0, 1)
    assert [int(m) for m in abi.GNTTABOP] == list(range(13))
    assert (abi.PHYSDEVOP_irq_status_query, abi.PHYSDEVOP_eoi, abi.PHYSDEVOP_map_pirq,
            abi.PHYSDEVOP_unmap_pirq, abi.PHYSDEVOP_pirq_eoi_gmfn_v1, abi.PHYSDEVOP_get_free_pirq,
            abi.PHYSDEVOP_pirq_eoi_gmfn_v2) == (5, 12, 13, 14, 17, 23, 28)
    assert [int(m) for m in abi.MAP_PIRQ_TYPE] == [0, 1, 2, 3, 4]
    assert (abi.XENIRQSTAT_needs_eoi, abi.XENIRQSTAT_shared) == (1, 2)
    assert [int(m) for m in abi.RUNSTATE] == [0, 1, 2, 3]
    assert abi.XEN_RUNSTATE_UPDATE == 1 << 63 and abi.XEN_PVCLOCK_TSC_STABLE_BIT == 1


def test_flat_c_names_are_the_enum_members():
    assert abi.EVTCHNOP_send is abi.EVTCHNOP.send
    assert abi.HVM_PARAM_STORE_PFN is abi.HVM_PARAM.STORE_PFN
    assert abi.SCHEDOP_yield is abi.SCHEDOP["yield"]
    assert abi.VMASST_TYPE_4gb_segments is abi.VMASST_TYPE._4gb_segments
    assert abi.XEN_HVM_CPUID_UPCALL_VECTOR is abi.XEN_HVM_CPUID.UPCALL_VECTOR


def test_callback_irq_encoding():
    assert abi.HVM_PARAM_CALLBACK_IRQ_TYPE_MASK == 0xFF << 56
    v = abi.callback_irq_value(abi.HVM_PARAM_CALLBACK_TYPE_VECTOR, 0xF3)
    assert v == (2 << 56) | 0xF3 and abi.callback_irq_type(v) == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR
    assert abi.callback_irq_type(1) == abi.HVM_PARAM_CALLBACK_TYPE_GSI
    intx = (1 << 56) | (0 << 32) | (0 << 16) | (0x18 << 8) | 2
    assert abi.callback_irq_pci_intx(intx) == (0, 0, 0x18, 2)
    assert (abi.HVM_PARAM_CALLBACK_TYPE_GSI, abi.HVM_PARAM_CALLBACK_TYPE_PCI_INTX) == (0, 1)


def test_cpuid():
    assert abi.XEN_CPUID_SIGNATURE == b"XenVMMXenVMM"
    assert abi.XEN_CPUID_FIRST_LEAF == 0x40000000
    F = abi.XEN_HVM_CPUID
    assert (F.APIC_ACCESS_VIRT, F.X2APIC_VIRT, F.IOMMU_MAPPINGS, F.VCPU_ID_PRESENT, F.DOMID_PRESENT,
            F.EXT_DEST_ID, F.UPCALL_VECTOR) == (1, 2, 4, 8, 16, 32, 64)
    assert abi.XEN_CPUID_LEAF_HVM == 4 and abi.XEN_CPUID_MAX_NUM_LEAVES == 5
