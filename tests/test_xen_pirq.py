"""xen/pirq.py without a guest: the PIRQ table's Xen policies and the diverter's answers.

The irqchip and event channels around the table are stand-ins that record what the
table asks of them (no KVM ioctl is involved in anything tested here); the whole
path with real guests is tests/test_xen_guests.py (xen_pirq_*)."""

from __future__ import annotations

import types

import pytest

from kvm_bindings import XenEvtchnRoute
from xen import abi
from xen.hypercall import XenError
from xen.pirq import IRQ_MSI_EMU, PirqTable, msi_pirq


class Chip:
    def __init__(self):
        self.redriven, self.rebuilds = [], 0

    def redrive(self, gsi):
        self.redriven.append(gsi)

    def rebuild_msi_routes(self):
        self.rebuilds += 1


def table(nr_pirqs=64, accel=False):
    delivered = []
    # kernel_delivery: KVM delivers events (acceleration, while the guest's ABI is 2-level)
    dom = types.SimpleNamespace(vm=types.SimpleNamespace(irqchip=Chip()), accel_full=accel,
                                evtchn=types.SimpleNamespace(deliver_pirq=lambda p, via: delivered.append(p),
                                                             kernel_delivery=object() if accel else None))
    t = PirqTable(dom.vm.irqchip, dom.evtchn, nr_pirqs, 24)
    return t, dom, delivered


def run(work):
    for fn in work:
        fn()


def msi_addr(pirq):
    return ((pirq & 0xFFFFFF00) << 32) | 0xFEE00000 | (pirq & 0xFF) << 12


def test_msi_pirq_encoding():
    assert msi_pirq(msi_addr(0x1234), 0x4300) == 0x1234
    assert msi_pirq(0xFEE00000, 0x41) is None          # a vector: an ordinary MSI


def test_allocation_policy_and_enospc():
    t, _, _ = table(nr_pirqs=30)
    assert t.get_free(abi.MAP_PIRQ_TYPE_GSI) == 16      # irq.c get_free_pirq: GSI type from 16 up
    assert t.get_free(abi.MAP_PIRQ_TYPE_MSI) == 29      # others from the top down
    assert t.get_free(7) == 28
    assert t.map_gsi(9, -1) == (0, 17)                  # reserved 16 skipped
    for _ in range(18, 24):
        t.get_free(abi.MAP_PIRQ_TYPE_GSI)
    assert t.get_free(abi.MAP_PIRQ_TYPE_GSI) == 27      # GSI numbers used up: from the top
    for _ in range(24, 27):
        t.get_free(abi.MAP_PIRQ_TYPE_MSI)
    with pytest.raises(XenError) as e:
        t.get_free(abi.MAP_PIRQ_TYPE_MSI)
    assert e.value.errno == abi.XenErrno.ENOSPC
    assert t.map_gsi(10, -1) == (-abi.XenErrno.EINVAL, -abi.XenErrno.ENOSPC)


def test_map_range_checks_and_conflicts():
    t, dom, _ = table()
    for gsi in (-1, 24, 1 << 31):
        assert t.map_gsi(gsi, -1)[0] == -abi.XenErrno.EINVAL
    assert t.map_gsi(5, 64)[0] == -abi.XenErrno.EINVAL   # >= nr_pirqs
    assert t.map_gsi(5, 40) == (0, 40)
    assert dom.vm.irqchip.redriven == [5]
    assert t.map_gsi(5, 41) == (0, 41)                  # "already mapped": 0, nothing changes
    assert t.map_gsi(6, 40) == (0, 40)
    assert t.emuirq_pirq == {5: 40} and 41 not in t.pirqs
    with pytest.raises(XenError):
        t.status_flags(41)
    assert t.status_flags(40) == abi.XENIRQSTAT_needs_eoi
    for bad in (-1, 64, 1 << 40):
        t.unmap(bad)                                    # 0 whatever the pirq
        with pytest.raises(XenError):
            t.eoi(bad)


def test_gsi_edges_level_and_eoi():
    t, _, delivered = table()
    assert t.divert_gsi(20, True) is None               # not mapped: the I/OAPIC's
    t.map_gsi(20, 30)
    t.map_gsi(5, 31)
    assert t.divert_gsi(20, True) == []                 # the redrive after map: level learnt, no send
    run(t.divert_gsi(20, False))
    run(t.divert_gsi(20, True))
    run(t.divert_gsi(20, True))                         # another source on a high line: no edge
    assert delivered == [30]
    t.eoi(30)                                           # level GSI >= 16 still high: sent again
    assert delivered == [30, 30]
    run(t.divert_gsi(20, False))
    t.eoi(30)
    assert delivered == [30, 30]
    t.divert_gsi(5, False)
    run(t.divert_gsi(5, True))
    t.eoi(31)                                           # ISA: edge, never re-sent
    assert delivered == [30, 30, 31]
    t.unmap(30)
    assert t.divert_gsi(20, True) is None


def test_msi_diversion_follows_hvm_inject_msi():
    t, _, delivered = table()
    assert t.divert_msi(0xFEE00000, 0x41) is None       # not ours
    assert t.divert_msi(msi_addr(0), 0x4300) == []      # -ERANGE
    assert t.divert_msi(msi_addr(64), 0x4300) == []     # >= nr_pirqs: -EINVAL
    run(t.divert_msi(msi_addr(50), 0x4300))             # first use maps it (MSI emulation)
    assert t.pirqs[50].emuirq == IRQ_MSI_EMU and delivered == [50]
    assert t.status_flags(50) == 0                      # an emulated MSI needs no EOI (xen/pirq.py)
    assert t.divert_msi(msi_addr(51), 0) == []          # no entry and IRQ_MSI_EMU taken: -EBUSY
    t.bind(51, 7)
    run(t.divert_msi(msi_addr(51), 0))                  # bound: delivered, still unmapped
    assert delivered == [50, 51] and t.pirqs[51].emuirq == -1
    t.map_gsi(3, 20)
    assert t.divert_msi(msi_addr(20), 0) == []          # a GSI pirq: -EINVAL


def test_bind_unbind_snoop_and_routes():
    t, dom, _ = table(accel=True)
    vec = types.SimpleNamespace(address=msi_addr(40), data=0x4300, masked=True, removed=False,
                                name="00:03.0 msix[0]", unmask=lambda: None)
    t.msi_vector_changed(vec)
    assert t.msi_route(vec, 30) is False                # not bound yet
    assert t.bind(40, 9) is vec                         # masked: the caller unmasks it
    with pytest.raises(XenError) as e:
        t.bind(40, 10)
    assert e.value.errno == abi.XenErrno.EEXIST
    t.moved(40, 1)
    assert t.msi_route(vec, 30) == XenEvtchnRoute(30, 9, 1)
    kd, dom.evtchn.kernel_delivery = dom.evtchn.kernel_delivery, None
    assert t.msi_route(vec, 30) is False                # a FIFO guest: KVM only knows 2-level
    dom.evtchn.kernel_delivery = kd
    assert t.pirqs[40].emuirq == IRQ_MSI_EMU            # KVM delivers: mapped as the first inject would
    plain = types.SimpleNamespace(address=0xFEE00000, data=0x41)
    assert t.msi_route(plain, 31) is None
    t.unbound(40, 9)
    assert t.msi_route(vec, 30) is False
    vec.removed = True
    t.msi_vector_changed(vec)
    assert t.msi_vectors == {}
    dom.accel_full, dom.evtchn.kernel_delivery = False, None
    t.bind(40, 9)
    assert t.msi_route(vec, 30) is False                # no KVM Xen support: userspace
