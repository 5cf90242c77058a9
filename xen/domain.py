"""A Xen HVM domain on top of a Vm: the state hypercalls act on, and its wiring.

Lock order (ARCHITECTURE.md): ``XenDomain.lock`` (params, placement) ->
``EventChannels.lock`` (the port table) -> device locks -> the IrqChip.
Hypercall handlers run on the calling vCPU's thread; timers on the
``xen-timers`` thread.  Blocking hypercalls (SCHEDOP_block/poll) wait on
``XenDomain.events`` and are woken by every event-channel delivery.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable

from vmm.irqchip import IrqChipError
from vmm.memory import IOAPIC_BASE, GuestMemoryError
from vmm.vm import Vm
from vmm.x86 import PAGE_SIZE
from vmm.locks import ordered_condition, ordered_lock
from xen import abi
from xen.cpuid import xen_leaves
from xen.evtchn import EventChannels
from xen.evtchn_2l import TwoLevelAbi
from xen.gnttab import GrantTable
from xen.guest_access import GuestFault
from xen.hypercall import XenError
from xen.hypercall import HypercallTable
from xen.kvm_accel import KvmXenAccel
from xen.kvm_accel import available as accel_available
from xen.pirq import PirqTable
from xen.shared_info import SharedInfo
from xen.time import Timers, XenTime
from xen.trace_events import TP_XEN_DOMAIN as TP_XEN
from xen.transport import KernelTransport, PortTransport, choose_transport
from xen.upcall import Upcall

MAX_PLACED_GPA = 1 << 39          # within any x86-64 host's guest physical address width
PLATFORM_MMIO_BAR = "xen-platform.bar1"   # where Linux HVM places its grant frames

DOMID = 1          # our guest's domain id (dom0 would be the VMM's own backends)


@dataclass
class XenConfig:
    version: tuple[int, int] = (4, 17)
    hypercalls: str = "auto"            # auto | kernel | port
    kvm_accel: bool = True              # kernel transport: let KVM deliver events and answer poll (xen/kvm_accel.py)
    nr_pirqs: int = 256                 # PIRQs of the domain (Xen: nr_static_irqs + extra_guest_irqs)
    # CPUID base+4 XEN_HVM_CPUID_APIC_ACCESS_VIRT | X2APIC_VIRT: "the hardware virtualizes the
    # (x2)APIC", so Linux uses native MSIs instead of PIRQs (arch/x86/pci/xen.c xen_hvm_msi_init)
    apic_virt: bool = False


@dataclass
class XenVcpu:
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
    runstate_kvm: bool = False        # KVM maintains the runstate (kernel transport)


class XenDomain:
    domid = DOMID

    def __init__(self, vm: Vm, config: XenConfig, console_out: Callable[[bytes], None],
                 pci_intx_gsi: Callable[[int, int], int] | None = None):
        self.vm = vm
        self.config = config
        self.console_out = console_out
        self._pci_intx_gsi = pci_intx_gsi     # (slot, pin 1..4) -> GSI: the PCI bus's swizzle
        self.running = True
        self.lock = ordered_lock("xen.domain")
        self.events = ordered_condition("xen.events")
        self._pages_lock = ordered_lock("xen.pages")     # placed pages; below GrantTable/SharedInfo locks
        self._placed: dict[int, object] = {}    # overlay gpa -> the Xen page placed there
        self.hvm_params: dict[int, int] = {}
        self.shutdown_code: int | None = None
        self.vm_assists = 0
        self.removed_gfns: set[int] = set()    # decrease_reservation record
        self.vcpus = [XenVcpu(v.id, up=(v.id == 0)) for v in vm.vcpus]
        self.handle = uuid.uuid4().bytes         # xen_domain_handle_t (XENVER_guest_handle)

        kind = choose_transport(vm.kvm, config.hypercalls)
        # KVM's own Xen support, where the host has it (xen/kvm_accel.py)
        self.accel = (KvmXenAccel(self, config.kvm_accel and accel_available(vm.kvm))
                      if kind == "kernel" else None)
        self.accel_full = bool(self.accel and self.accel.full)

        self.shared = SharedInfo(vm.memory)
        if self.accel is not None:            # KVM's shared_info layout follows the latch
            self.shared.width_listeners.append(lambda compat: self.accel.set_long_mode(not compat))
        self.upcall = Upcall(self)
        self.shared.inject_upcall = self.upcall.inject
        self.evtchn = EventChannels(self, TwoLevelAbi(self.shared),
                                    kernel_delivery=self.accel if self.accel_full else None)
        self.pirqs = PirqTable(self, config.nr_pirqs, vm.irqchip.nr_pins)
        self.clock = XenTime(self)
        self.timers = Timers(self, self.clock)
        self.gnttab = GrantTable(self)
        self.hypercalls = HypercallTable()
        from xen.ops import register_all
        register_all(self)

        self.transport = KernelTransport(self) if kind == "kernel" else PortTransport(self)
        if self.accel:
            self.accel.start()
        vm.irqchip.set_diverter(self.pirqs)         # GSIs and MSIs the guest maps to PIRQs
        if self.accel_full:
            self.clock.follow_kvm_clock(vm.fd)
        vm.add_cpuid_leaves(lambda vcpu_id: xen_leaves(vcpu_id, config.version, self.domid, self.clock.tsc_khz,
                                                       apic_virt=config.apic_virt))
        self.write_wallclock()
        vm.at_exit(self.stop)
        self.hypercalls.count_enabled = vm.stats_enabled
        vm.stats_sources.append(lambda: {f"hcall:{k}": n for k, n in self.hypercalls.counts.items()})
        if TP_XEN.enabled:
            TP_XEN.emit(what=f"xen {config.version[0]}.{config.version[1]} hypercalls={kind} "
                             f"irqchip={vm.irqchip.name}")

    @property
    def compat(self) -> bool:
        """The shared_info layout the guest latched (SharedInfo.latch_width sets it)."""
        return self.shared.compat

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.timers.start()

    def stop(self) -> None:
        self.running = False
        self.timers.stop()
        self.notify_events()

    # ------------------------------------------------------------ events
    def notify_events(self) -> None:
        with self.events:
            self.events.notify_all()

    def timer_fired(self, vcpu: int) -> None:
        self.publish_time(vcpu)
        self.evtchn.raise_virq(vcpu, abi.VIRQ.TIMER)

    # ------------------------------------------------------------ placed pages
    def place_page(self, gpa: int, owner) -> None:
        """XENMEM_add_to_physmap puts a Xen page (shared_info, a grant frame) at ``gpa``.
        In RAM, that RAM page becomes it.  Elsewhere -- an HVM Linux puts its grant frames
        in the platform device's BAR, a PVH one in "unpopulated" address space above RAM --
        we back the page with an overlay memory slot, as Xen's p2m would.  Not over the
        I/OAPIC/LAPIC/firmware range below 4 GiB, nor beyond the guest's address width."""
        with self._pages_lock:
            if self.vm.memory.is_ram(gpa, PAGE_SIZE):
                return
            if gpa in self._placed:
                if self._placed[gpa] == owner:
                    return
                # Xen would let the new page replace the old one there; we refuse rather
                # than leave shared_info or a grant frame pointing at a page it lost.
                raise XenError(abi.XenErrno.EINVAL, f"gpfn {gpa >> 12:#x} holds {self._placed[gpa]}")
            if IOAPIC_BASE <= gpa < 1 << 32 or gpa + PAGE_SIZE > MAX_PLACED_GPA:
                raise XenError(abi.XenErrno.EINVAL, f"gpfn {gpa >> 12:#x}: no page can be placed there")
            m = self.vm.mmio_bus.find(gpa)
            if m is not None and m.name != PLATFORM_MMIO_BAR:
                # a memory slot there would hide the device from the guest
                raise XenError(abi.XenErrno.EINVAL, f"gpfn {gpa >> 12:#x} is {m.name}'s MMIO")
            try:
                self.vm.map_overlay(gpa, PAGE_SIZE)
            except GuestMemoryError as e:
                raise XenError(abi.XenErrno.EINVAL, str(e)) from None
            self._placed[gpa] = owner

    def release_page(self, gpa: int, owner) -> None:
        """``owner`` moved away from ``gpa``: drop the overlay there if it is still its."""
        with self._pages_lock:
            if self._placed.get(gpa) == owner:
                del self._placed[gpa]
                self.vm.unmap_overlay(gpa)

    def shared_info_mapped(self, gpa: int) -> None:
        """The guest placed shared_info: publish time into it, tell KVM."""
        self.write_wallclock()
        for v in self.vcpus:
            self.publish_time(v.id)
        if self.accel_full:
            self.accel.shared_info(gpa, self.shared.default_vcpu_info_gpas(v.id for v in self.vcpus))

    def vcpu_info_moved(self, vcpu: int, gpa: int) -> None:
        if self.accel_full:
            self.accel.vcpu_info(vcpu, gpa)

    def intx_gsi(self, value: int) -> int | None:
        """HVM_PARAM_CALLBACK_IRQ type PCI_INTX -> the GSI of that device's pin.  Like Xen
        (hvm_set_callback_via) only the slot and the pin count: there is one bus 0."""
        if self._pci_intx_gsi is None:
            return None
        _domain, _bus, devfn, intx = abi.callback_irq_pci_intx(value)
        return self._pci_intx_gsi(devfn >> 3, intx + 1)        # intx 0 is INTA, pin 1

    def irqchip_eoi_listener(self, gsi: int, fn: Callable[[], None], add: bool = True) -> None:
        try:
            if add:
                self.vm.irqchip.add_eoi_listener(gsi, fn)
            else:
                self.vm.irqchip.remove_eoi_listener(gsi, fn)
        except IrqChipError:
            pass   # kernel irqchip: the poll in Upcall does the deassert

    # ------------------------------------------------------------ time
    def write_wallclock(self) -> None:
        sec, nsec = self.clock.wallclock()
        lay = self.shared.layout

        def put(offset: int, value: int) -> None:
            mem, addr = self.shared.si_at(offset)
            mem.write(addr, value.to_bytes(4, "little"))
        mem, addr = self.shared.si_at(lay.wc_version)
        ver = (int.from_bytes(mem.read(addr, 4), "little") | 1) + 1
        put(lay.wc_version, ver - 1)                         # odd: update in progress
        put(lay.wc_sec, sec & 0xFFFFFFFF)
        put(lay.wc_nsec, nsec)
        if lay.wc_sec_hi is not None:
            put(lay.wc_sec_hi, sec >> 32)
        put(lay.wc_version, ver)                             # even

    def publish_time(self, vcpu: int) -> None:
        """Refresh vcpu_info.time (and the registered secondary time area)."""
        if self.accel_full:
            return          # KVM keeps the pvclock of the vcpu_info it knows about
        at = self.shared.vcpu_info_at(vcpu, self.shared.layout.time)
        if at is None:
            return
        mem, addr = at
        self.clock.publish(vcpu, lambda data: mem.write(addr, data), ("vi", vcpu))

    def vcpu_is_up(self, vcpu: int, caller: int) -> bool:
        """Xen: !_VPF_down.  An HVM AP is down until INIT/SIPI starts it, which
        happens inside KVM; so ask for its mp_state (through Vcpu.call: a vCPU ioctl
        from here would wait for its KVM_RUN to end).  If the vCPU doesn't answer
        within Vcpu.call's timeout, it is up: a vCPU waiting for INIT/SIPI sits in
        KVM_RUN and answers at once when kicked, so one that doesn't is busy in the VMM
        with an exit of its own, and only a started vCPU makes exits."""
        xv = self.vcpus[vcpu]
        v = self.vm.vcpus[vcpu]
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

    def vcpu_down(self, vcpu: int) -> None:
        """VCPUOP_down: take the vCPU offline; it parks before its next KVM_RUN (it may
        be the caller).  Not a VMM pause: a pause and resume leave it down."""
        self.set_runstate(vcpu, abi.RUNSTATE_offline)
        self.vm.vcpus[vcpu].take_offline()

    def vcpu_up(self, vcpu: int) -> bool:
        """VCPUOP_up: bring back a vCPU taken down; False if it wasn't down."""
        v = self.vm.vcpus[vcpu]
        if not v.offline:
            return False
        self.set_runstate(vcpu, abi.RUNSTATE_running)    # while parked: Vcpu.call borrows its idle fd
        v.bring_online()
        return True

    # ------------------------------------------------------------ runstate
    def set_runstate(self, vcpu: int, state: int, mem=None) -> None:
        """Account a runstate transition (running <-> blocked around SCHEDOP_block/poll)
        and refresh the vCPU's registered runstate area, as Xen does at a context switch."""
        xv = self.vcpus[vcpu]
        if xv.runstate_kvm:                       # KVM keeps this vCPU's runstate
            try:
                self.vm.vcpus[vcpu].call(lambda v: self.accel.runstate_current(vcpu, state))
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
        if self.vcpus[vcpu].runstate_kvm:
            try:
                return self.vm.vcpus[vcpu].call(lambda v: self.accel.runstate_data(vcpu))
            except TimeoutError:
                pass                              # our own accounting, as a fallback
        return self._runstate(vcpu)

    def _runstate(self, vcpu: int) -> dict:
        """vcpu_runstate_info with the current state's time accounted up to now.
        (Time a vCPU spends in HLT inside KVM counts as running: we can't see it.)"""
        xv = self.vcpus[vcpu]
        now = self.clock.now()
        times = list(xv.rs_time)
        times[xv.rs_state] += now - xv.rs_entry
        return dict(state=xv.rs_state, state_entry_time=xv.rs_entry, time=times)

    def write_runstate(self, vcpu: int, mem) -> None:
        """With VMASST_TYPE_runstate_update_flag, XEN_RUNSTATE_UPDATE (bit 63 of
        state_entry_time) is set while the area is being rewritten."""
        xv = self.vcpus[vcpu]
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
        xv = self.vcpus[vcpu]
        if xv.time_area_gva is not None:
            self.clock.publish(vcpu, lambda data: mem.write(xv.time_area_gva, data), ("ta", vcpu))
