"""A virtual machine: KVM VM fd, guest memory, interrupt controller, buses, vCPUs.

Construction order matters to KVM and is fixed here: VM -> memory slots ->
irqchip (must precede vCPUs) -> vCPUs -> devices and higher layers (by the caller:
vmm/machine.py's phases; Xen adds its CPUID leaves) -> CPUID, once (``configure_cpuid``;
taking ``boot_vcpu`` does it) -> boot state -> start.  The VM ends when some thread calls ``request_exit``: the
first request wins and decides the process exit code; every vCPU is kicked.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from kvm_bindings import Kvm, KvmError, buffer_address, consts
from vmm import exitcodes
from vmm.bus import MmioBus, PioBus
from vmm.coalesced import CoalescedWrites
from vmm.port_cache import PortReadCache
from vmm.cpuid import configure_cpuid
from vmm.errors import internal_errors
from vmm.irqchip import IrqChip, create_irqchip
from vmm.memory import GuestMemory, GuestMemoryError
from vmm.trace_events import TP_VM_EXIT
from vmm.vcpu import Vcpu, install_kick_handler
from vmm.locks import ordered_lock
from vmm.x86 import PAGE_SIZE

TSS_ADDR = 0xFEFFD000          # as QEMU: three pages just below 4 GiB - 16 MiB... in the MMIO hole
IDENTITY_MAP_ADDR = 0xFEFFC000

REQUIRED_CAPS = ("KVM_CAP_USER_MEMORY", "KVM_CAP_IMMEDIATE_EXIT", "KVM_CAP_IRQCHIP",
                 "KVM_CAP_SIGNAL_MSI", "KVM_CAP_EXT_CPUID")


class VmSetupError(RuntimeError):
    pass


@dataclass
class VmConfig:
    """What Vm creates: memory, vCPUs, the irqchip."""
    memory: int = 256 << 20
    cpus: int = 1
    irqchip: str = "kernel"          # "kernel" or "split"
    stats: bool = False              # count exits (and, in higher layers, e.g. hypercalls) from the start


class Vm:
    def __init__(self, config: VmConfig, kvm: Kvm | None = None):
        self.config = config
        self.kvm = kvm or Kvm()
        for cap in REQUIRED_CAPS:
            if not self.kvm.check_extension(getattr(consts, cap)):
                raise VmSetupError(f"host KVM lacks {cap}")
        max_vcpus = self.kvm.check_extension(consts.KVM_CAP_MAX_VCPUS) or \
            self.kvm.check_extension(consts.KVM_CAP_NR_VCPUS) or 1
        if not 1 <= config.cpus <= min(max_vcpus, 255):
            raise VmSetupError(f"{config.cpus} vCPUs requested; this host allows 1..{min(max_vcpus, 255)}")
        self.fd = self.kvm.create_vm()
        self._closed = False
        self.stats_enabled = config.stats      # devices and Xen read it when attached
        self.stats: Counter[str] = Counter()
        self.stats_sources: list = []
        self.exit_code: int | None = None
        self.exit_reason = ""
        self._exit_event = threading.Event()
        self._exit_lock = ordered_lock("vm.exit")
        self._at_exit: list = []
        if self.kvm.check_extension(consts.KVM_CAP_SET_TSS_ADDR):
            self.fd.set_tss_addr(TSS_ADDR)
            self.fd.set_identity_map_addr(IDENTITY_MAP_ADDR)

        self.memory = GuestMemory(config.memory)
        for slot, region in enumerate(self.memory.regions):
            self.fd.set_user_memory_region(slot, region.gpa, region.size, buffer_address(region.mapping))
        self._overlays: dict[int, tuple[int, object]] = {}    # gpa -> (memslot, Region)
        # Removed overlays stay mapped until close(): another thread may still hold a raw
        # pointer into one (an atomic on shared_info as the guest moves it).
        self._retired_overlays: list = []
        self._overlay_lock = ordered_lock("vm.overlay")
        self._max_memslots = self.kvm.check_extension(consts.KVM_CAP_NR_MEMSLOTS) or 32

        self.irqchip: IrqChip = create_irqchip(self.fd, config.irqchip)
        self.pio_bus = PioBus()
        self.mmio_bus = MmioBus()
        self.vcpus: list[Vcpu] = []
        for i in range(config.cpus):
            self.vcpus.append(Vcpu(self, self.fd.create_vcpu(i)))
        # KVM's ring of coalesced port writes (vmm/coalesced.py): devices ask it for zones.
        self.coalesced = CoalescedWrites(self.fd, self.kvm, self.vcpus[0].fd, self.pio_bus.handlers)
        # Port reads answered in C (vmm/port_cache.py): devices publish side-effect-free registers.
        self.port_cache = PortReadCache()
        self._cpuid_leaves: list = []           # fn(vcpu_id) -> {(function, index): (eax, ebx, ecx, edx)}
        self._cpuid_configured = False
        self.started_at = 0.0

    # ------------------------------------------------------------ overlay pages
    def map_overlay(self, gpa: int, size: int = PAGE_SIZE):
        """Back [gpa, gpa + size), outside RAM, with fresh VMM memory and a KVM memory
        slot of its own, so the guest reads and writes it like RAM (Xen placing a
        grant frame in the platform device's BAR).  Returns the memory Region.
        Raises GuestMemoryError if the range touches RAM or another overlay."""
        with self._overlay_lock:
            used = {slot for slot, _ in self._overlays.values()}
            slot = next((s for s in range(len(self.memory.ram_regions), self._max_memslots) if s not in used), None)
            if slot is None:
                raise GuestMemoryError(f"no free memory slot for an overlay at {gpa:#x}")
            region = self.memory.add_overlay(gpa, size)
            try:
                self.fd.set_user_memory_region(slot, gpa, size, buffer_address(region.mapping))
            except KvmError as e:              # e.g. beyond the host's guest address width
                self.memory.remove_overlay(region)
                self._retired_overlays.append(region)
                raise GuestMemoryError(f"KVM refused an overlay at {gpa:#x}: {e}") from None
            self._overlays[gpa] = (slot, region)
            return region

    def unmap_overlay(self, gpa: int) -> None:
        with self._overlay_lock:
            entry = self._overlays.pop(gpa, None)
            if entry is None:
                return
            slot, region = entry
            self.fd.set_user_memory_region(slot, gpa, 0, 0)        # size 0 deletes the slot
            self.memory.remove_overlay(region)
            self._retired_overlays.append(region)

    def is_overlay(self, gpa: int) -> bool:
        return gpa in self._overlays

    # ------------------------------------------------------------ CPUID
    def add_cpuid_leaves(self, leaves) -> None:
        """A higher layer's CPUID leaves (Xen's hypervisor range): ``leaves(vcpu_id)`` ->
        {(function, index): (eax, ebx, ecx, edx)}, composed into the one configuration."""
        if self._cpuid_configured:
            raise VmSetupError("CPUID is configured already: add leaves before boot state is set")
        self._cpuid_leaves.append(leaves)

    def configure_cpuid(self) -> None:
        """Set every vCPU's CPUID, once: KVM's supported leaves plus the added ones.  Before
        any boot state (KVM checks e.g. EFER.LME against the guest's CPUID), so
        ``boot_vcpu`` and ``start`` call it; later calls do nothing."""
        if self._cpuid_configured:
            return
        self._cpuid_configured = True
        for v in self.vcpus:
            extra: dict = {}
            for leaves in self._cpuid_leaves:
                extra.update(leaves(v.id))
            configure_cpuid(self.kvm, v.fd, v.id, extra)

    # ------------------------------------------------------------ lifecycle
    def at_exit(self, fn) -> None:
        """Run ``fn()`` once, in the thread that called ``wait``, after the guest ended."""
        self._at_exit.append(fn)

    def start(self) -> None:
        self.configure_cpuid()
        install_kick_handler()
        self.started_at = time.monotonic()
        for v in self.vcpus:
            v.start()
        self.coalesced.start()

    def request_exit(self, code: int, reason: str) -> None:
        """End the VM (first caller wins).  Safe from any thread, including vCPUs."""
        with self._exit_lock:
            if self.exit_code is not None:
                return
            self.exit_code = code
            self.exit_reason = reason
        if TP_VM_EXIT.enabled:
            TP_VM_EXIT.emit(code=code, reason=reason)
        for v in self.vcpus:
            v.stop()
        self._exit_event.set()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the guest ends or ``timeout`` seconds pass; returns the exit code."""
        ended = self._exit_event.wait(timeout)
        if not ended:
            self.request_exit(exitcodes.TIMEOUT, f"timed out after {timeout:g} s")
        for v in self.vcpus:
            v.join(2.0)
        for v in self.vcpus:
            if v.thread is not None and v.thread.is_alive():  # still stuck in KVM_RUN?
                v.kick()
                v.join(2.0)
        self.coalesced.close()                  # the guest's last coalesced writes (console output)
        for fn in self._at_exit:
            fn()
        self._at_exit.clear()
        return self.exit_code  # type: ignore[return-value]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.coalesced.close()
        self.irqchip.close()
        for v in self.vcpus:
            if v.thread is None or not v.thread.is_alive():
                v.fd.close()
        self.fd.close()
        self.memory.close(self._retired_overlays)

    def collect_stats(self) -> Counter[str]:
        total: Counter[str] = Counter(self.stats)
        total.update(self.coalesced.collect_stats())
        for source in self.stats_sources:        # e.g. the Xen domain's hypercall counts
            total.update(source())
        for v in self.vcpus:
            total.update(v.stats)
            total["exits"] += v.exits
            total.update(self.port_cache.stats(v.cached_reads))
        errors = len(internal_errors())
        if errors:
            total["internal-errors"] = errors
        return total

    # ------------------------------------------------------------ pause, snapshot state
    def pause(self, timeout: float = 5.0) -> None:
        """Every vCPU out of guest code (Vcpu.pause); resume() undoes it."""
        for v in self.vcpus:
            v.pause(timeout)

    def resume(self) -> None:
        for v in self.vcpus:
            v.resume()

    @property
    def paused(self) -> bool:
        return all(v.pause_requested for v in self.vcpus)

    def save_state(self) -> dict:
        """Primary state of the VM that KVM holds (vCPUs paused): kvmclock, the in-kernel
        irqchip's, every vCPU's (vmm/vcpu.py save_state)."""
        msrs = self.kvm.msr_index_list()
        return {"clock": self.fd.get_clock(), "irqchip": self.irqchip.save(),
                "vcpus": [v.save_state(msrs) for v in self.vcpus]}

    def restore_state(self, state: dict) -> list[str]:
        """Before start(): CPUID (once), the irqchip's kernel state, each vCPU's, kvmclock.
        Returns notes (MSRs KVM refused) for the trace."""
        if len(state["vcpus"]) != len(self.vcpus):
            raise VmSetupError(f"the snapshot has {len(state['vcpus'])} vCPUs, this VM {len(self.vcpus)}")
        self.configure_cpuid()
        self.irqchip.restore(state["irqchip"])
        notes = []
        for v, s in zip(self.vcpus, state["vcpus"]):
            refused = v.restore_state(s)
            if refused:
                notes.append(f"vcpu{v.id}: KVM refused MSRs {', '.join(hex(i) for i in refused)}")
        self.fd.set_clock(state["clock"])
        return notes

    @property
    def boot_vcpu(self):
        """vCPU 0's fd, for setting the boot state: CPUID is configured first."""
        self.configure_cpuid()
        return self.vcpus[0].fd


__all__ = ["Vm", "VmConfig", "VmSetupError", "KvmError"]
