"""KVM's in-kernel Xen support, used where the host offers it (kernel transport).

With ``KVM_XEN_HVM_CONFIG_EVTCHN_SEND`` KVM answers SCHEDOP_poll (and
EVTCHNOP_send for ports registered with it) inside the kernel, so it must know
where shared_info and every vcpu_info live and which upcall vectors to inject;
event deliveries then go through ``KVM_XEN_HVM_EVTCHN_SEND`` so KVM can wake a
vCPU polling in the kernel.  The VMM still owns the port table, the hypercalls
that exit, the timers (KVM runs each vCPU's singleshot timer once its VIRQ_TIMER is
bound: xen/kvm_timer.py) and the GSI/INTx callback line (KVM doesn't drive it).

On by default with the kernel transport (``vmm run --xen-no-kvm-accel`` turns
it off; KVM then degrades SCHEDOP_poll to a yield).  KVM writes the pvclock
itself, from its kvmclock: our system time follows that clock (XenTime.follow_kvm_clock).
Deviations of stock KVM's own SCHEDOP_poll from Xen (6.1, and upstream as of
2025): the timeout is taken as relative nanoseconds (Xen: absolute system
time), a 32-bit caller's poll is a yield (6.1), and the time a vCPU blocks in
it counts as running in its runstate.  We can't intercept it; the nested test
host's KVM carries a fix (vmm/testhost/kvm_fixes/), and on a KVM without it
tests/test_xen_guests.py keeps the affected guests as strict xfails.

uAPI: include/uapi/linux/kvm.h (KVM_XEN_ATTR_TYPE_*, KVM_XEN_VCPU_ATTR_TYPE_*),
Documentation/virt/kvm/api.rst.  vCPU attributes must be set on the vCPU's own
thread or while it is not in KVM_RUN: ``Vcpu.call`` takes care of that.
"""

from __future__ import annotations

from typing import Callable

from kvm_bindings import KvmError, consts, ffi
from vmm.locks import ordered_lock
from xen.trace_events import TP_XEN_KVM as TP_ACCEL

NEEDED = (consts.KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL | consts.KVM_XEN_HVM_CONFIG_SHARED_INFO
          | consts.KVM_XEN_HVM_CONFIG_EVTCHN_2LEVEL | consts.KVM_XEN_HVM_CONFIG_EVTCHN_SEND
          | consts.KVM_XEN_HVM_CONFIG_RUNSTATE)


def available(kvm) -> bool:
    return kvm.check_extension(consts.KVM_CAP_XEN_HVM) & NEEDED == NEEDED


class KvmXenAccel:
    def __init__(self, vm, full: bool):
        """full: the host has everything in NEEDED; else only the long-mode flag is ours to set."""
        self.vm = vm
        self.full = full
        # KVM_XEN_HVM_CONFIG's EVTCHN_SEND on/off: the kernel transport's (it owns that config),
        # attached once the transport exists (XenDomain).
        self.set_kvm_event_channels: Callable[[bool], None] = lambda on: None
        self._lock = ordered_lock("xen.kvm_accel")
        self.long_mode: int | None = None

    def start(self) -> None:
        """Once the config (EVTCHN_SEND) is in place and before the vCPUs run."""
        if self.full:
            for v in self.vm.vcpus:
                self.vcpu_attr(v, consts.KVM_XEN_VCPU_ATTR_TYPE_VCPU_ID, vcpu_id=v.id)

    # ------------------------------------------------------------ plumbing
    def _trace(self, what: str) -> None:
        if TP_ACCEL.enabled:
            TP_ACCEL.emit(what=what)

    def vm_attr(self, type_: int, **u) -> None:
        """KVM_XEN_HVM_SET_ATTR: ``u`` names the union's fields (a struct field from a dict)."""
        attr = ffi.new("struct kvm_xen_hvm_attr *")
        attr.type = type_
        for k, val in u.items():
            if k == "gfn":
                attr.u.shared_info.gfn = val
            else:
                setattr(attr.u, k, val)
        self.vm.fd.xen_hvm_set_attr(attr)

    @staticmethod
    def vcpu_attr(v, type_: int, **u) -> None:
        """KVM_XEN_VCPU_SET_ATTR on ``v`` (its own thread, or not in KVM_RUN: Vcpu.call)."""
        attr = ffi.new("struct kvm_xen_vcpu_attr *")
        attr.type = type_
        for k, val in u.items():
            setattr(attr.u, k, val)
        v.fd.xen_vcpu_set_attr(attr)

    # ------------------------------------------------------------ placement
    def set_long_mode(self, long_mode: bool) -> None:
        with self._lock:
            if self.long_mode != int(long_mode):
                self.vm_attr(consts.KVM_XEN_ATTR_TYPE_LONG_MODE, long_mode=int(long_mode))
                self.long_mode = int(long_mode)

    def shared_info(self, gpa: int, default_vcpu_info: dict[int, int]) -> None:
        """(The long-mode flag was set as the width was latched: SharedInfo.latch_width.)"""
        self.vm_attr(consts.KVM_XEN_ATTR_TYPE_SHARED_INFO, gfn=gpa >> 12)
        self._trace(f"shared_info gfn {gpa >> 12:#x}")
        for vcpu, vi in default_vcpu_info.items():
            self.vcpu_info(vcpu, vi)

    def vcpu_info(self, vcpu: int, gpa: int) -> None:
        self.vm.vcpus[vcpu].call(lambda v: self.vcpu_attr(v, consts.KVM_XEN_VCPU_ATTR_TYPE_VCPU_INFO, gpa=gpa),
                                 wait=False)
        self._trace(f"vcpu{vcpu} vcpu_info {gpa:#x}")

    def runstate_area(self, vcpu: int, gpa: int) -> bool:
        """KVM keeps the runstate area up to date.  (Time in its own SCHEDOP_poll counts as
        running on stock KVM, blocked with the test host's fix; see the module docstring.)"""
        try:
            self.vcpu_attr(self.vm.vcpus[vcpu], consts.KVM_XEN_VCPU_ATTR_TYPE_RUNSTATE_ADDR, gpa=gpa)
        except KvmError as e:
            self._trace(f"vcpu{vcpu} runstate area {gpa:#x} refused: {e}")
            return False
        self._trace(f"vcpu{vcpu} runstate area {gpa:#x}")
        return True

    def runstate_current(self, vcpu: int, state: int) -> None:
        """Tell KVM about a state it can't see (our SCHEDOP_block); caller's own thread."""
        attr = ffi.new("struct kvm_xen_vcpu_attr *")
        attr.type = consts.KVM_XEN_VCPU_ATTR_TYPE_RUNSTATE_CURRENT
        attr.u.runstate.state = state
        try:
            self.vm.vcpus[vcpu].fd.xen_vcpu_set_attr(attr)
        except KvmError:
            pass

    def runstate_data(self, vcpu: int):
        attr = ffi.new("struct kvm_xen_vcpu_attr *")
        attr.type = consts.KVM_XEN_VCPU_ATTR_TYPE_RUNSTATE_DATA
        self.vm.vcpus[vcpu].fd.xen_vcpu_get_attr(attr)
        r = attr.u.runstate
        return dict(state=r.state, state_entry_time=r.state_entry_time,
                    time=[r.time_running, r.time_runnable, r.time_blocked, r.time_offline])

    def set_runstate_data(self, vcpu: int, data: dict) -> None:
        """A snapshot's runstate times back into KVM (its state_entry_time must be the sum
        of the four times and not after kvmclock: api.rst).  One KVM refuses restarts
        its accounting from zero: traced, not fatal."""
        attr = ffi.new("struct kvm_xen_vcpu_attr *")
        attr.type = consts.KVM_XEN_VCPU_ATTR_TYPE_RUNSTATE_DATA
        r = attr.u.runstate
        r.state, r.state_entry_time = data["state"], data["state_entry_time"]
        r.time_running, r.time_runnable, r.time_blocked, r.time_offline = data["time"]
        try:
            self.vm.vcpus[vcpu].call(lambda v: v.fd.xen_vcpu_set_attr(attr))
        except KvmError as e:
            self._trace(f"vcpu{vcpu} runstate times refused: {e}")
            return
        self._trace(f"vcpu{vcpu} runstate times restored (state {data['state']})")

    # ------------------------------------------------------------ upcalls and events
    def upcall_vector(self, vcpu: int, vector: int) -> None:
        self.vm.vcpus[vcpu].call(lambda v: self.vcpu_attr(v, consts.KVM_XEN_VCPU_ATTR_TYPE_UPCALL_VECTOR,
                                                           vector=vector), wait=False)
        self._trace(f"vcpu{vcpu} upcall vector {vector:#x}")

    def global_vector(self, vector: int) -> None:
        self.vm_attr(consts.KVM_XEN_ATTR_TYPE_UPCALL_VECTOR, vector=vector)
        self._trace(f"global callback vector {vector:#x}")

    def stop_event_delivery(self) -> None:
        """The guest left the 2-level ABI (EVTCHNOP_init_control): KVM only knows 2-level.
        EventChannels stops sending through it (its kernel_delivery is dropped) and
        delivers events itself; PIRQ routes stop pointing KVM at ports (pirq.msi_route asks
        kernel_delivery; EventChannels rebuilds them); and KVM_XEN_HVM_CONFIG_EVTCHN_SEND
        goes off, since KVM's SCHEDOP_poll tests the 2-level pending bitmap and is woken only
        by its own deliveries: a FIFO guest polling a port there would sleep through our
        events.  KVM then answers SCHEDOP_poll as a yield (returns at once; Linux's pollers
        loop), as without acceleration.  No port is registered with KVM_XEN_ATTR_TYPE_EVTCHN,
        and the vCPU timers KVM ran were taken back before the switch (KvmTimers.hold), so
        nothing else of KVM's delivers events.  Upcalls are unchanged: FIFO marks evtchn_upcall_pending too,
        and KVM's global-vector injection only tests that flag."""
        self.set_kvm_event_channels(False)
        self._trace("event delivery moves to the VMM (the guest left 2-level event channels); "
                    "KVM's SCHEDOP_poll is a yield from now on")

    def resume_event_delivery(self) -> None:
        """Back to 2-level (EVTCHNOP_reset of a FIFO domain): KVM delivers and polls again."""
        self.set_kvm_event_channels(True)
        self._trace("event delivery back to KVM (2-level event channels again)")

    def send(self, port: int, vcpu: int) -> str | None:
        """Deliver through KVM: pending/mask/selector bits, upcall, and pollers.
        Returns None, or why KVM refused."""
        try:
            self.vm.fd.xen_evtchn_send(port, vcpu)
        except KvmError as e:
            return str(e)
        return None
