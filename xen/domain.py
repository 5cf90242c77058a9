"""A Xen HVM domain on top of a Vm: it composes the subsystems and wires them.

Each subsystem gets only what it needs (ARCHITECTURE.md "The Xen domain"):
SharedInfo (placement of shared_info/vcpu_info, the width latch), the port ABI
(TwoLevelAbi), EventChannels, Upcall, XenTime/TimePublisher/Timers, GrantTable,
PagePlacement, XenVcpus, PirqTable, HvmParams, and the hypercall families
(xen/ops, wired by ``xen.ops.register_all``).

Lock order (ARCHITECTURE.md): ``XenDomain.lock`` (params, console line,
shared_info moves) -> ``EventChannels.lock`` (the port table) -> device locks ->
the IrqChip.  Hypercall handlers run on the calling vCPU's thread; timers on the
``xen-timers`` thread.  Blocking hypercalls (SCHEDOP_block/poll) wait on
``XenDomain.events`` and are woken by every event-channel delivery.
"""

from __future__ import annotations

import uuid
from typing import Callable

from vmm.vm import Vm
from vmm.locks import ordered_condition, ordered_lock
from xen import abi
from xen.config import XenConfig  # noqa: F401  (its home; imported from here too)
from xen.cpuid import xen_leaves
from xen.evtchn import EventChannels
from xen.evtchn_2l import TwoLevelAbi
from xen.gnttab import GrantTable
from xen.hvm_params import HvmParams
from xen.hypercall import HypercallTable
from xen.kvm_accel import KvmXenAccel
from xen.kvm_evtchn import KvmSendPorts
from xen.kvm_timer import KvmTimers
from xen.kvm_accel import available as accel_available
from xen.ops.sched_op import Shutdown
from xen.pirq import PirqTable
from xen.placement import PagePlacement
from xen.shared_info import SharedInfo
from xen.time import IA32_TSC, TimePublisher, Timers, XenTime
from xen.trace_events import TP_XEN_DOMAIN as TP_XEN
from xen.transport import KernelTransport, PortTransport, choose_transport
from xen.upcall import Upcall
from xen.vcpus import XenVcpus

DOMID = 1          # our guest's domain id (dom0 would be the VMM's own backends)


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
        self.handle = uuid.uuid4().bytes         # xen_domain_handle_t (XENVER_guest_handle)
        self.shutdown = Shutdown(vm.request_exit)

        kind = choose_transport(vm.kvm, config.hypercalls)
        # KVM's own Xen support, where the host has it (xen/kvm_accel.py)
        self.accel = (KvmXenAccel(vm, config.kvm_accel and accel_available(vm.kvm))
                      if kind == "kernel" else None)
        self.accel_full = bool(self.accel and self.accel.full)
        self.fifo = config.fifo if config.fifo is not None else not self.accel_full
        full = self.accel if self.accel_full else None        # KVM delivers events, writes pvclocks

        self.placement = PagePlacement.for_vm(vm)
        self.shared = SharedInfo(vm.memory)
        if self.accel is not None:            # KVM's shared_info layout follows the latch
            self.shared.width_listeners.append(lambda compat: self.accel.set_long_mode(not compat))
        self.upcall = Upcall(vm, self.shared, full, self.intx_gsi, lambda: self.running)
        self.shared.inject_upcall = self.upcall.inject
        self.evtchn = EventChannels(TwoLevelAbi(self.shared), self.shared, len(vm.vcpus), self.domid,
                                    self.notify_events, self.upcall, kernel_delivery=full)
        self.pirqs = PirqTable(vm.irqchip, self.evtchn, config.nr_pirqs, vm.irqchip.nr_pins)
        self.evtchn.pirqs = self.pirqs
        self.clock = XenTime.from_vcpu(vm.vcpus[0].fd)
        self.time = TimePublisher(self.clock, self.shared, kvm_pvclock=self.accel_full)
        self.timers = Timers(self.clock, self.timer_fired)
        # Each vCPU's singleshot timer runs in KVM while KVM delivers its VIRQ_TIMER
        self.kvm_timers = (KvmTimers(vm.vcpus, self.evtchn, self.timers, lambda: self.shared.gpa is not None,
                                     self.upcall.kvm_raises)
                           if self.accel_full else None)
        self.evtchn.kvm_timers = self.kvm_timers
        # EVTCHNOP_send on IPI and loopback ports answered by KVM (xen/kvm_evtchn.py)
        self.evtchn.kvm_sends = KvmSendPorts(self.accel, self.upcall.kvm_raises) if self.accel_full else None
        if self.accel_full:
            self.upcall.changed = self._upcall_changed
        self.vcpus = XenVcpus(vm.vcpus, self.clock, self.accel)
        self.gnttab = GrantTable(vm.memory, self.placement)
        self.hvm_params = HvmParams(self.lock, on_set={abi.HVM_PARAM_CALLBACK_IRQ: self.upcall.set_callback_irq})
        self.hypercalls = HypercallTable()
        from xen.ops import register_all
        register_all(self)

        self.transport = KernelTransport(self) if kind == "kernel" else PortTransport(self)
        if self.accel:
            self.accel.set_kvm_event_channels = self.transport.set_kvm_event_channels
            self.accel.start()
        vm.irqchip.set_diverter(self.pirqs)         # GSIs and MSIs the guest maps to PIRQs
        if self.accel_full:
            self.clock.follow_kvm_clock(vm.fd)
        vm.add_cpuid_leaves(lambda vcpu_id: xen_leaves(vcpu_id, config.version, self.domid, self.clock.tsc_khz,
                                                       apic_virt=config.apic_virt))
        self.time.write_wallclock()
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

    # ------------------------------------------------------------ snapshot (ARCHITECTURE.md "Snapshots")
    def hold_timers(self):
        """Xen's timers fire nothing while a snapshot is taken; returns the release."""
        self.timers.hold()
        return self.timers.release

    def save(self) -> dict:
        """Every subsystem's primary state (vCPUs paused, timers held).  With KVM's Xen
        acceleration the one state KVM holds that is not also ours is each runstate area's
        times (saved with the vCPU records); the rest KVM was told by us, and ``rebuilt``
        tells it again."""
        tsc = self.vm.vcpus[0].call(lambda v: v.fd.get_msrs([IA32_TSC])[IA32_TSC])
        timers = self.timers.save()
        if self.kvm_timers is not None:   # KVM's singleshot timers are saved as ours
            timers["singleshot"].update({str(v): d for v, d in self.kvm_timers.save().items()})
        # Each part under its own lock (the vCPUs are paused: no hypercall runs meanwhile).
        return {"clock": self.clock.save(tsc), "timers": timers, "shared": self.shared.save(),
                "placement": self.placement.save(), "gnttab": self.gnttab.save(),
                "evtchn": self.evtchn.save(), "pirqs": self.pirqs.save(), "upcall": self.upcall.save(),
                "vcpus": self.vcpus.save(), "hvm_params": self.hvm_params.save(),
                "shutdown_code": self.shutdown.code}

    def restore(self, state: dict) -> None:
        """Primary state, in dependency order; nothing derived (``rebuilt`` does that)."""
        self._saved = state
        self.shared.restore(state["shared"])
        self.placement.restore(state["placement"])
        self.gnttab.restore(state["gnttab"])
        self.evtchn.restore(state["evtchn"])
        self.pirqs.restore(state["pirqs"])
        self.upcall.restore(state["upcall"])
        self.vcpus.restore(state["vcpus"])
        self.hvm_params.restore(state["hvm_params"])
        self.timers.restore(state["timers"])
        self.shutdown.code = state["shutdown_code"]

    def placement_rebuilt(self) -> None:
        """The placed pages' overlay slots: before memory is loaded into them."""
        self.placement.rebuilt()

    def rebuilt(self) -> None:
        """After the vCPUs and the devices are back: system time continues from the saved
        pair (vCPU 0's restored TSC), the width latch, the PIRQ pins and routes, the
        callback via and upcall vectors (re-raising pending upcalls), the pvclocks."""
        tsc = self.vm.vcpus[0].call(lambda v: v.fd.get_msrs([IA32_TSC])[IA32_TSC])
        self.clock.restore(self._saved["clock"], tsc)
        if self.accel_full:
            self.clock.follow_kvm_clock(self.vm.fd)     # kvmclock was restored: KVM's pvclocks
        self.shared.rebuilt()                          # (KVM's long-mode flag)
        if self.accel_full:
            self._kvm_rebuilt()
        self.pirqs.rebuilt()
        self.upcall.rebuilt()                          # (KVM's upcall vectors)
        for v in self.vcpus:
            self.time.publish(v.id)

    def _kvm_rebuilt(self) -> None:
        """KVM's Xen attributes from our primary state: where shared_info and each
        vcpu_info are, the runstate areas KVM kept and their times.  (The vCPU ids are set
        when the domain is built, the upcall vectors by ``upcall.rebuilt``.)"""
        if self.shared.gpa is not None:
            self.accel.shared_info(self.shared.gpa, self.shared.default_vcpu_info_gpas(v.id for v in self.vcpus))
        for vcpu, gpa in sorted(self.shared.vcpu_info_gpa.items()):
            self.accel.vcpu_info(vcpu, gpa)
        self.vcpus.kvm_runstate_rebuilt()
        self.kvm_timers.rebuilt()                      # the saved deadlines of KVM's timers
        self.evtchn.kvm_rebuilt()                      # FIFO: not KVM's; the ports KVM sends on

    # ------------------------------------------------------------ events
    def notify_events(self) -> None:
        with self.events:
            self.events.notify_all()

    def _upcall_changed(self) -> None:
        """Which vCPUs' upcalls KVM raises may have changed: what KVM delivers follows."""
        self.kvm_timers.sync()
        self.evtchn.kvm_sends_changed()

    def timer_fired(self, vcpu: int) -> None:
        self.time.publish(vcpu)
        self.evtchn.raise_virq(vcpu, abi.VIRQ.TIMER)

    def shared_info_mapped(self, gpa: int) -> None:
        """The guest placed shared_info: publish time into it, tell KVM."""
        self.time.write_wallclock()
        for v in self.vcpus:
            self.time.publish(v.id)
        if self.accel_full:
            self.accel.shared_info(gpa, self.shared.default_vcpu_info_gpas(v.id for v in self.vcpus))
            self.kvm_timers.sync()                     # KVM can deliver VIRQ_TIMER now

    def intx_gsi(self, value: int) -> int | None:
        """HVM_PARAM_CALLBACK_IRQ type PCI_INTX -> the GSI of that device's pin.  Like Xen
        (hvm_set_callback_via) only the slot and the pin count: there is one bus 0."""
        if self._pci_intx_gsi is None:
            return None
        _domain, _bus, devfn, intx = abi.callback_irq_pci_intx(value)
        return self._pci_intx_gsi(devfn >> 3, intx + 1)        # intx 0 is INTA, pin 1
