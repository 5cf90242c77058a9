"""The domain's vCPUs as Xen sees them: up or down, runstate accounting, and the
areas a guest registers per vCPU (runstate, secondary time area).

VCPUOP_down/up take a vCPU offline and back (``Vcpu.take_offline``/``bring_online``:
not a VMM pause); whether an HVM AP is up at all is KVM's (INIT/SIPI).  With KVM's
acceleration (``accel``: KvmXenAccel) KVM may keep a vCPU's runstate itself
(``XenVcpu.runstate_kvm``); then runstate reads and changes go through it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from xen import abi
from xen.guest_access import GuestFault


@dataclass
class XenVcpu:
    """Xen's per-vCPU state: registered areas, up/down, runstate accounting."""
    id: int
    runstate_gva: int | None = None
    runstate_abi: str = "64"
    time_area_gva: int | None = None
    time_area_cr3: int = 0
    up: bool = False
    # runstate accounting (public/vcpu.h): current state, when it began, time per state
    rs_state: int = 0
    rs_entry: int = 0
    rs_time: list = field(default_factory=lambda: [0, 0, 0, 0])
    runstate_kvm: bool = False        # KVM maintains the runstate (kernel transport) ...
    runstate_gpa: int | None = None   # ... in the area's page here (what KVM was told)
    kvm_runstate: dict | None = None  # KVM's times, in a snapshot (saved; restored by rebuilt)


class XenVcpus:
    """``vm_vcpus``: the Vm's vcpus (vmm.vcpu.Vcpu); ``clock``: XenTime; ``accel``: the
    KvmXenAccel, or None.  Indexing gives the XenVcpu record of a vCPU."""

    def __init__(self, vm_vcpus, clock, accel=None):
        self._vm_vcpus = vm_vcpus
        self.clock = clock
        self.accel = accel
        self.records = [XenVcpu(v.id, up=(v.id == 0)) for v in vm_vcpus]
        # The domain's VMASST bits (vm_assist): the one an HVM guest may set is about the
        # runstate area (VMASST_TYPE_runstate_update_flag), so they live here.
        self.vm_assists = 0

    def save(self) -> dict:
        """The records; where KVM keeps a runstate, the times it holds (kvmclock ns)."""
        records = []
        for r in self.records:
            d = dataclasses.asdict(r)
            d["kvm_runstate"] = self.runstate(r.id) if r.runstate_kvm else None
            records.append(d)
        return {"records": records, "vm_assists": self.vm_assists}

    def restore(self, state: dict) -> None:
        self.records = [XenVcpu(**r) for r in state["records"]]
        self.vm_assists = state["vm_assists"]

    def kvm_runstate_rebuilt(self) -> None:
        """Each runstate area KVM kept is registered with it again, with its saved times
        (kvmclock was restored before this).  One KVM refuses stays ours, as at
        registration (vcpu_op.register_runstate_memory_area)."""
        for xv in self.records:
            saved, xv.kvm_runstate = xv.kvm_runstate, None
            if not xv.runstate_kvm:
                continue
            xv.runstate_kvm = xv.runstate_gpa is not None and self.accel.runstate_area(xv.id, xv.runstate_gpa)
            if xv.runstate_kvm and saved is not None:
                self.accel.set_runstate_data(xv.id, saved)
            elif saved is not None:                # ours from here: go on from KVM's times
                xv.rs_state, xv.rs_entry, xv.rs_time = saved["state"], saved["state_entry_time"], list(saved["time"])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, vcpu: int) -> XenVcpu:
        return self.records[vcpu]

    def __iter__(self):
        return iter(self.records)

    # ------------------------------------------------------------ up / down
    def is_up(self, vcpu: int, caller: int) -> bool:
        """Xen: !_VPF_down.  An HVM AP is down until INIT/SIPI starts it, which
        happens inside KVM; so ask for its mp_state (through Vcpu.call: a vCPU ioctl
        from here would wait for its KVM_RUN to end).  If the vCPU doesn't answer
        within Vcpu.call's timeout, it is up: a vCPU waiting for INIT/SIPI sits in
        KVM_RUN and answers at once when kicked, so one that doesn't is busy in the VMM
        with an exit of its own, and only a started vCPU makes exits."""
        xv = self.records[vcpu]
        v = self._vm_vcpus[vcpu]
        if v.offline:
            return False                 # VCPUOP_down
        if vcpu == caller or xv.up:
            xv.up = True
            return True
        from kvm_bindings import consts
        try:
            mp_state = v.call(lambda v: v.fd.get_mp_state())
        except TimeoutError:
            return True
        up = mp_state not in (consts.KVM_MP_STATE_UNINITIALIZED, consts.KVM_MP_STATE_INIT_RECEIVED)
        xv.up = up
        return up

    def down(self, vcpu: int) -> None:
        """VCPUOP_down: take the vCPU offline; it parks before its next KVM_RUN (it may
        be the caller).  Not a VMM pause: a pause and resume leave it down."""
        self.set_runstate(vcpu, abi.RUNSTATE_offline)
        self._vm_vcpus[vcpu].take_offline()

    def up(self, vcpu: int) -> bool:
        """VCPUOP_up: bring back a vCPU taken down; False if it wasn't down."""
        v = self._vm_vcpus[vcpu]
        if not v.offline:
            return False
        self.set_runstate(vcpu, abi.RUNSTATE_running)    # while parked: Vcpu.call borrows its idle fd
        v.bring_online()
        return True

    # ------------------------------------------------------------ runstate
    def set_runstate(self, vcpu: int, state: int, mem=None) -> None:
        """Account a runstate transition (running <-> blocked around SCHEDOP_block/poll)
        and refresh the vCPU's registered runstate area, as Xen does at a context switch."""
        xv = self.records[vcpu]
        if xv.runstate_kvm:                       # KVM keeps this vCPU's runstate
            try:
                self._vm_vcpus[vcpu].call(lambda v: self.accel.runstate_current(vcpu, state))
            except TimeoutError:
                pass
            return
        now = self.clock.now()
        xv.rs_time[xv.rs_state] += now - xv.rs_entry
        xv.rs_state, xv.rs_entry = state, now
        if mem is not None and xv.runstate_gva is not None:
            try:
                self.write_runstate(vcpu, mem)
            except GuestFault:
                pass          # the guest unmapped its area: Xen skips the update too

    def runstate(self, vcpu: int) -> dict:
        if self.records[vcpu].runstate_kvm:
            try:
                return self._vm_vcpus[vcpu].call(lambda v: self.accel.runstate_data(vcpu))
            except TimeoutError:
                pass                              # our own accounting, as a fallback
        return self._runstate(vcpu)

    def _runstate(self, vcpu: int) -> dict:
        """vcpu_runstate_info with the current state's time accounted up to now.
        (Time a vCPU spends in HLT inside KVM counts as running: we can't see it.)"""
        xv = self.records[vcpu]
        now = self.clock.now()
        times = list(xv.rs_time)
        times[xv.rs_state] += now - xv.rs_entry
        return dict(state=xv.rs_state, state_entry_time=xv.rs_entry, time=times)

    def write_runstate(self, vcpu: int, mem) -> None:
        """With VMASST_TYPE_runstate_update_flag, XEN_RUNSTATE_UPDATE (bit 63 of
        state_entry_time) is set while the area is being rewritten."""
        xv = self.records[vcpu]
        if xv.runstate_gva is None:
            return
        st = abi.layout(abi.vcpu_runstate_info, xv.runstate_abi)
        info = self.runstate(vcpu)
        entry_off = abi.offset_of(abi.vcpu_runstate_info, "state_entry_time", xv.runstate_abi)
        flagged = self.vm_assists >> abi.VMASST_TYPE_runstate_update_flag & 1
        if flagged:
            mem.write_u64(xv.runstate_gva + entry_off, info["state_entry_time"] | abi.XEN_RUNSTATE_UPDATE)
        mem.write_struct(st, xv.runstate_gva, info)     # ends with the flag clear

    def write_time_area(self, vcpu: int, mem) -> None:
        xv = self.records[vcpu]
        if xv.time_area_gva is not None:
            self.clock.publish(vcpu, lambda data: mem.write(xv.time_area_gva, data), ("ta", vcpu))
