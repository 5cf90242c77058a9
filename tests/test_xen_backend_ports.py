"""Backend ports (xen/evtchn.py bind_backend): the VMM as "domain 0", the remote end of
an interdomain channel, as the PV console and xenstore need.  On a real VM with a
XenDomain, no guest: the calls are the ones EVTCHNOP_* make."""

from __future__ import annotations

import pytest

from devices.ioapic import attach_ioapic
from vmm.vm import Vm, VmConfig
from xen import abi
from xen.domain import XenConfig, XenDomain
from xen.evtchn import ECS_FREE, ECS_INTERDOMAIN
from xen.hypercall import XenError


@pytest.fixture
def xen():
    vm = Vm(VmConfig(memory=16 << 20, irqchip="split"))
    attach_ioapic(vm)
    domain = XenDomain(vm, XenConfig(hypercalls="port"), lambda b: None)
    try:
        yield domain
    finally:
        domain.stop()
        vm.close()


def test_backend_port_is_interdomain_with_dom0(xen):
    ev = xen.evtchn
    a = ev.bind_backend("console", lambda: None)
    b = ev.bind_backend("xenstore", lambda: None)
    sa, sb = ev.status(abi.DOMID_SELF, a), ev.status(abi.DOMID_SELF, b)
    assert a != b and sa.state == sb.state == ECS_INTERDOMAIN
    assert sa.remote_dom == sb.remote_dom == abi.DOMID_BACKEND == 0
    assert sa.remote_port != sb.remote_port and sa.remote_port > 0


def test_guest_send_calls_on_notify_after_the_port_lock(xen):
    ev = xen.evtchn
    seen = []
    port = ev.bind_backend("console", lambda: seen.append(ev.lock.locked()))
    other = ev.bind_ipi(0)
    ev.send(other)                          # someone else's port: not the backend's
    assert seen == []
    ev.send(port)
    ev.send(port)
    assert seen == [False, False]           # called twice, never under the port lock
    assert not ev.port_abi.is_pending(port)   # the guest's own send doesn't make its end pending


def test_notify_guest_makes_the_port_pending_and_raises_the_upcall(xen):
    ev = xen.evtchn
    port = ev.bind_backend("xenstore", lambda: None)
    kicks = xen.upcall.kicks[0]
    assert ev.notify_guest(port)
    assert ev.port_abi.is_pending(port) and xen.shared.upcall_pending(0)
    assert xen.upcall.kicks[0] == kicks + 1
    assert ev.notify_guest(port)            # already pending: no second upcall
    assert xen.upcall.kicks[0] == kicks + 1


def test_guest_close_frees_the_port_and_rebind_recreates_it(xen):
    ev = xen.evtchn
    seen = []
    port = ev.bind_backend("console", lambda: seen.append(1))
    ev.notify_guest(port)
    ev.close(port)
    assert ev.status(abi.DOMID_SELF, port).state == ECS_FREE
    assert not ev.port_abi.is_pending(port)
    assert not ev.notify_guest(port)        # the backend learns the guest closed it
    with pytest.raises(XenError) as e:
        ev.send(port)
    assert e.value.errno == abi.XenErrno.EINVAL and seen == []
    again = ev.bind_backend("console", lambda: seen.append(2))
    assert ev.status(abi.DOMID_SELF, again).state == ECS_INTERDOMAIN
    ev.send(again)
    assert seen == [2]


def test_a_guest_port_reused_after_close_is_not_the_backend_s(xen):
    """After the guest closed a backend port, a new guest binding on that number must not
    reach the old backend."""
    ev = xen.evtchn
    seen = []
    port = ev.bind_backend("console", lambda: seen.append(1))
    ev.close(port)
    ipi = ev.bind_ipi(0)
    assert ipi == port
    ev.send(ipi)
    assert seen == [] and not ev.notify_guest(ipi)


def test_reset_frees_backend_ports(xen):
    ev = xen.evtchn
    port = ev.bind_backend("console", lambda: None)
    ev.reset(abi.DOMID_SELF)
    assert ev.status(abi.DOMID_SELF, port).state == ECS_FREE and not ev.notify_guest(port)
