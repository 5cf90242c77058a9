"""Building a machine: a plain spec in, a built ``Machine`` out, in named phases.

This module is the **composition root**: the one module of ``vmm`` that imports
``devices`` and ``xen`` (tests/test_layering.py), because it is where a machine is
assembled from them.  ``vmm run`` (vmm/cli.py) maps its arguments to a
:class:`MachineSpec` and calls :func:`build`; tests, benchmarks and later snapshot
restore and a control API build their VMs the same way::

    machine = build(MachineSpec(kernel="hello.elf", serial="file:out.txt"))
    try:
        machine.start()
        code = machine.wait(60)
    finally:
        machine.close()

The build runs in **phases**, kvmtool's init levels (``core_init`` ... ``late_init``).
:data:`PHASES` is the one table of their order, each with what it needs from which
earlier phase and why (tests/test_machine.py checks every need points backwards).
Each phase's work is a list of *contributions*, functions of the ``Machine`` under
construction registered with :func:`contributes`; within a phase they run in
registration order.  :class:`MachineBuilder` can replace a phase's contributions
(a restore swaps ``boot`` for loading saved state) or add to one (a test device).
:func:`build` runs every phase but ``late``; ``Machine.start()`` runs ``late``.

The spec holds plain values only (``to_dict``/``from_dict``), so a snapshot can save
the spec it was built from and a restore can build the same machine again.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from devices.board import PcDevices, attach_pc_devices
from devices.legacy import PVPANIC_PORT
from devices.pci_testdev import PciTestDev, attach_pci_testdev
from devices.rtc import CENTURY as RTC_CENTURY, RTC_BASE
from devices.serial import COM1_BASE, COM1_IRQ
from kvm_bindings import KvmError
from vmm import exitcodes, trace
from vmm.boot import BootInfo, load_kernel
from vmm.boot.acpi import write_acpi_tables
from vmm.console import Console, LineSink
from vmm.errors import UserError
from vmm.irqchip import IrqChipError
from vmm.locks import ordered_lock
from vmm.trace_events import TP_SNAPSHOT_STEP
from vmm.vm import Vm, VmConfig, VmSetupError
from xen.config import XenConfig

# Imported where they are used, not here: every `vmm run` imports this module, and most
# machines have no Xen (the domain, its toolstack and the ABI tables: ~20 ms on the host,
# ~25x that in the nested test host), no virtio, no snapshot and no control socket.
if TYPE_CHECKING:
    from devices.virtio.pci import VirtioPciDevice
    from vmm.snapshot import SnapshotReader
    from xen.domain import XenDomain
    from xen.platform_pci import XenPlatformDevice
    from xen.toolstack import Toolstack


class BuildError(RuntimeError):
    """The VMM could not build the machine (not the user's input): ``vmm run`` exits 1."""


# ---------------------------------------------------------------- the spec
@dataclass
class MachineSpec:
    """What to build, independent of any command line.  Plain values only.

    Bad values raise ``UserError`` from :meth:`validate` (or, for what only KVM can
    judge, from :func:`build`); the messages name the ``vmm run`` option of each field.
    """
    kernel: str = ""                    # PVH ELF or bzImage
    initrd: str | None = None
    cmdline: str = ""
    memory: int = 256 << 20             # bytes
    cpus: int = 1
    irqchip: str | None = None          # "kernel" | "split"; None: split with Xen, else kernel
    serial: str = "stdio"               # COM1: stdio | file:PATH | none
    debugcon: str = "off"               # the 0xE9 port: off | stderr | file:PATH
    acpi: bool = True
    pci: bool = True
    pci_testdev: bool = False
    virtio_rng: bool = False            # a virtio-rng device (devices/virtio/rng.py)
    drives: list = field(default_factory=list)     # virtio-blk disks: {"path": str, "readonly": bool}
    nets: list = field(default_factory=list)       # virtio-net NICs: {"tap": str, "mac": str | None}
    xen_platform: bool = False          # the Xen platform PCI device without Xen (implied by xen)
    xen: XenConfig | None = None        # a Xen HVM domain (xen/domain.py), or none
    xen_console: str = "both"           # with xen: terminal input to "serial", "pv" (hvc0) or "both"
    xen_name: str = "guest"             # with xen: the domain's name in xenstore (libxl's c_info.name)
    xenstore: list = field(default_factory=list)   # with xen: (path, value) written as the toolstack
    shutdown_timeout: float = 30.0      # with xen: SIGTERM asks the guest (control/shutdown), then
                                        # stops it after this many seconds; 0: stop at once
    stats: bool = False                 # count exits, hypercalls (Vm.collect_stats)
    trace: list[str] = field(default_factory=list)     # trace point globs to enable

    def __post_init__(self):
        if self.irqchip is None:
            self.irqchip = "split" if self.xen is not None else "kernel"

    @property
    def wants_xen_platform(self) -> bool:
        return self.xen_platform or self.xen is not None

    def validate(self, restoring: bool = False) -> None:
        """The checks that need no KVM; ``UserError`` with one line on the first problem.
        ``restoring``: the machine is built from a snapshot, which holds the guest: the
        kernel and initrd files are not read."""
        if not self.pci and (self.pci_testdev or self.xen_platform):
            raise UserError("--pci-testdev and --xen-platform-device need the PCI bus: drop --no-pci")
        if not self.pci and (self.virtio_rng or self.drives or self.nets):
            raise UserError("--virtio-rng, --drive and --net need the PCI bus: drop --no-pci")
        if self.nets:
            from devices.virtio.net import check_tap_name, parse_mac     # (virtio: imported when used)
        for n in self.nets:
            try:
                check_tap_name(n["tap"])
                if n.get("mac") is not None:
                    parse_mac(n["mac"])
            except ValueError as e:
                raise UserError(f"--net: {e}") from None
        # A restore reopens the disks the saved machine had: say so, the user gave no --drive.
        drive = "--drive (recorded in the snapshot)" if restoring else "--drive"
        for d in self.drives:
            path, ro = d["path"], d.get("readonly", False)
            if not os.path.exists(path):
                raise UserError(f"{drive}: file not found: {path}")
            if os.path.isdir(path):
                raise UserError(f"{drive}: {path} is a directory")
            if ro and not os.access(path, os.R_OK):
                raise UserError(f"{drive}: {path} is not readable")
            if not ro and not os.access(path, os.R_OK | os.W_OK):
                raise UserError(f"{drive}: {path} is not readable and writable (add ,readonly for a read-only disk)")
        if (self.xenstore or self.xen_name != "guest") and self.xen is None:
            raise UserError("--xenstore and --xen-name need --xen")
        if not restoring and not os.path.exists(self.kernel):
            raise UserError(f"kernel not found: {self.kernel}")
        if not restoring and self.initrd and not os.path.exists(self.initrd):
            raise UserError(f"initrd not found: {self.initrd}")
        if self.xen is not None:
            if not self.pci:
                raise UserError("--xen needs the PCI bus (for the Xen platform device): drop --no-pci")
            if self.shutdown_timeout < 0:
                raise UserError(f"--xen-shutdown-timeout: {self.shutdown_timeout} is negative")
            if not 16 <= self.xen.nr_pirqs <= 1 << 16:
                # Below 16 not even the ISA IRQs fit; Xen's own limit is nr_irqs (extra_guest_irqs).
                raise UserError(f"--xen-nr-pirqs: {self.xen.nr_pirqs} is out of range (16..65536)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MachineSpec":
        d = dict(d)
        d["xenstore"] = [tuple(kv) for kv in d.get("xenstore", [])]
        if d.get("xen") is not None:
            x = dict(d["xen"])
            x["version"] = tuple(x["version"])
            d["xen"] = XenConfig(**x)
        return cls(**d)


# ---------------------------------------------------------------- the phases
@dataclass(frozen=True)
class Phase:
    """A build phase: what it does, and what it needs from which earlier phase."""
    name: str
    does: str
    needs: dict[str, str]          # an earlier phase -> why this one needs it


PHASES: tuple[Phase, ...] = (
    Phase("core", "trace points on, the console sinks, the Vm (VM fd, RAM slots, irqchip, vCPUs "
                  "in the order KVM requires: vmm/vm.py), stats on from the start (VmConfig.stats)",
          {}),
    Phase("platform", "the PC devices on the PIO bus, the userspace I/OAPIC (split irqchip), the PCI "
                      "host bridge and config ports (devices/board.py)",
          {"core": "devices take their interrupt lines from the Vm's irqchip and write to the sinks"}),
    Phase("pci", "PCI functions: the Xen platform device, the PCI test device, then the virtio devices "
                 "(rng, then each --drive, then each --net) (slots and BARs are assigned at plug time, so "
                 "plugging in this order keeps their addresses)",
          {"platform": "they are plugged on the PCI bus"}),
    Phase("hypervisor", "the Xen domain: transport, event channels, the PIRQ table as the irqchip's "
                        "diverter, Xen's CPUID leaves; then what Xen's toolstack adds (special pages, "
                        "the PV console and xenstore backends, their HVM params)",
          {"platform": "its GSI/INTx callback line goes through the PCI bus's swizzle (PciBus.intx_gsi)",
           "core": "it is built on the Vm (irqchip, vCPUs) and counts hypercalls if the Vm counts"}),
    Phase("firmware", "the ACPI tables (RSDP, XSDT, MADT, FADT, DSDT) in guest RAM, describing the "
                      "finished device set",
          {"core": "one MADT entry per vCPU, the tables go into guest RAM",
           "platform": "COM1, the RTC, the PCI bus's _PRT"}),
    Phase("boot", "load the kernel and initrd, set vCPU 0's boot state (a restore replaces this "
                  "phase with loading saved state)",
          {"firmware": "the loader hands the guest the RSDP address (and E820 covers the tables)",
           "hypervisor": "boot state configures CPUID, once: every CPUID leaf (Xen's) is added before"}),
    Phase("late", "things that run: SIGINT ends the VM, SIGTERM asks the guest first, console input, Xen's timer thread, "
                  "restored virtio devices' threads, the vCPUs (run by Machine.start(), not by build)",
          {"boot": "a vCPU must not run before its boot state is set",
           "platform": "console input feeds COM1",
           "pci": "the virtio devices whose threads start",
           "hypervisor": "the Xen timer thread delivers into the domain"}),
)
PHASE_NAMES = tuple(p.name for p in PHASES)
BUILD_PHASES = PHASE_NAMES[:-1]       # build(); Machine.start() runs "late"

Contribution = Callable[["Machine"], None]
CONTRIBUTIONS: dict[str, list[Contribution]] = {name: [] for name in PHASE_NAMES}


def contributes(phase: str):
    """Register the decorated ``fn(machine)`` as a contribution to ``phase``."""
    if phase not in CONTRIBUTIONS:
        raise ValueError(f"no phase {phase!r} (phases: {', '.join(PHASE_NAMES)})")

    def register(fn: Contribution) -> Contribution:
        CONTRIBUTIONS[phase].append(fn)
        return fn
    return register


# ---------------------------------------------------------------- the machine
class Machine:
    """A built VM and everything attached to it.  Attributes a phase fills in stay
    None when the spec doesn't ask for them (``xen`` without Xen, ``pci`` with
    ``pci=False``)."""

    def __init__(self, spec: MachineSpec, late: list[Contribution]):
        self.spec = spec
        self.vm: Vm | None = None
        self.console: Console | None = None
        self.debugcon: LineSink | None = None
        self.pc: PcDevices | None = None
        self.xen_platform: XenPlatformDevice | None = None
        self.pci_testdev: PciTestDev | None = None
        self.virtio: list[VirtioPciDevice] = []    # virtio-rng, then the --drive disks, then the --net NICs, in order
        self.xen: XenDomain | None = None
        self.toolstack: Toolstack | None = None
        self.rsdp = 0                            # 0: no ACPI
        self.boot_info: BootInfo | None = None
        self.phases_run: list[str] = []
        self._late = late
        self._cleanups: list[Callable[[], None]] = []
        self._started = False
        self._closed = False
        self.graceful_stop: GracefulStop | None = None     # set by the late phase (main thread only)
        # Serialises the control API's pause/resume/snapshot (ARCHITECTURE.md, lock order).
        self._control_lock = ordered_lock("vm.control")

    @property
    def pci(self):
        return self.pc.pci if self.pc is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at close(); cleanups run last registered first."""
        self._cleanups.append(fn)

    def run_phase(self, name: str, contributions: list[Contribution]) -> None:
        for fn in contributions:
            fn(self)
        self.phases_run.append(name)

    def start(self) -> None:
        """The ``late`` phase: signal handlers, console input, device threads, vCPUs."""
        if self._started:
            raise RuntimeError("the machine is started already")
        self._started = True
        self.run_phase("late", self._late)

    def wait(self, timeout: float | None = None) -> int:
        """Until the guest ends, or ``timeout`` seconds (exit 124); returns the exit code."""
        return self.vm.wait(timeout)

    def close(self) -> None:
        """Release everything (idempotent): sinks flushed and closed, the tty restored,
        signal handlers put back, the VM's fds and memory."""
        if self._closed:
            return
        self._closed = True
        while self._cleanups:
            self._cleanups.pop()()


    # ------------------------------------------------------------ control (vmm/api.py's commands)
    def status(self) -> dict:
        vm = self.vm
        ended = vm.exit_code is not None
        state = "exited" if ended else "paused" if vm.paused else "running" if self._started else "created"
        return {"state": state, "uptime": round(time.monotonic() - vm.started_at, 3) if vm.started_at else 0.0,
                "vcpus": [{"id": v.id, "state": v.state.value, "offline": v.offline} for v in vm.vcpus],
                **({"exit_code": vm.exit_code, "exit_reason": vm.exit_reason} if ended else {})}

    def pause(self) -> None:
        with self._control_lock:
            self.vm.pause()
            _step("pause", "vcpus", f"{len(self.vm.vcpus)} paused")

    def resume(self) -> None:
        with self._control_lock:
            self.vm.resume()
            _step("resume", "vcpus", f"{len(self.vm.vcpus)} resumed")

    def request_shutdown(self) -> None:
        """As SIGTERM: ask a Xen guest to power off, else end the VM (GracefulStop)."""
        stop = self.graceful_stop or GracefulStop(self)
        stop.requested()

    def snapshot(self, path: str) -> dict:
        """Pause, save every part's state and the memory to ``path`` (atomically: a temp file
        renamed), resume unless it was paused.  Raises SnapshotError (one line)."""
        from vmm.snapshot import SnapshotError
        with self._control_lock:
            if self.vm.exit_code is not None:
                raise SnapshotError("the guest has ended: nothing to snapshot")
            unsupported = snapshot_unsupported(self)
            if unsupported:
                raise SnapshotError(f"cannot snapshot this machine: {unsupported}")
            was_paused = self.vm.paused
            t0 = time.monotonic()
            self.vm.pause()
            _step("save", "pause", f"paused in {time.monotonic() - t0:.3f}s")
            try:
                return self._write_snapshot(path, t0)
            finally:
                if not was_paused:
                    self.vm.resume()
                    _step("save", "resume", "")

    def api_handlers(self) -> dict:
        """The control socket's commands (vmm/api.py) on this machine."""
        from vmm.api import ApiError
        from vmm.snapshot import SnapshotError

        def snapshot(req: dict) -> dict:
            to = req.get("to")
            if not isinstance(to, str) or not to:
                raise ApiError('snapshot needs "to": a file name')
            try:
                return self.snapshot(to)
            except (SnapshotError, TimeoutError) as e:
                raise ApiError(str(e)) from None

        def paused(fn):
            def run(req: dict) -> dict:
                if self.vm.exit_code is not None:
                    raise ApiError("the guest has ended")
                try:
                    fn()
                except TimeoutError as e:
                    raise ApiError(str(e)) from None
                return self.status()
            return run

        return {"status": lambda req: self.status(), "pause": paused(self.pause), "resume": paused(self.resume),
                "stats": lambda req: {"stats": dict(self.vm.collect_stats())},
                "shutdown": lambda req: self.request_shutdown(), "snapshot": snapshot}

    def _write_snapshot(self, path: str, t0: float) -> dict:
        from vmm.snapshot import SnapshotError, SnapshotWriter
        self.vm.coalesced.drain()                # the guest's coalesced writes reach their devices
        hold = _quiesce(self)
        try:
            # Diverted deliveries in flight land first (after the quiesce: its threads send none after).
            self.vm.irqchip.flush_deliveries()
            # Xen's first: with KVM's acceleration its runstate times are kvmclock times,
            # which must not be later than the kvmclock the VM's section saves.
            xen = None
            if self.xen is not None:
                try:
                    xen = self.xen.save()
                except ValueError as e:            # a state snapshots don't save yet
                    raise SnapshotError(f"cannot snapshot this machine: {e}") from None
                if self.toolstack is not None:
                    xen["toolstack"] = self.toolstack.save()
                _step("save", "xen", "")
            sections = {"spec": self.spec.to_dict(), "vm": self.vm.save_state()}
            _step("save", "vm", f"{len(self.vm.vcpus)} vCPUs")
            sections["devices"] = {name: part.save() for name, part in snapshot_parts(self)}
            _step("save", "devices", ", ".join(sections["devices"]))
            if xen is not None:
                sections["xen"] = xen
            with SnapshotWriter(path) as w:
                for name, state in sections.items():
                    w.json(name, state)
                saved = w.memory((r.gpa, r.view) for r in self.vm.memory.regions)
        finally:
            hold()
        info = {"path": os.path.abspath(path), "bytes": w.size, "memory_saved": saved,
                "memory_size": self.vm.memory.size, "seconds": round(time.monotonic() - t0, 3)}
        _step("save", "done", f"{w.size} bytes ({saved} of memory) in {info['seconds']}s")
        return info


class MachineBuilder:
    """The phases' contributions for one build, which a caller may change first."""

    def __init__(self, spec: MachineSpec):
        self.spec = spec
        self.contributions = {name: list(fns) for name, fns in CONTRIBUTIONS.items()}
        self.restoring = False          # a restore: the spec's kernel and initrd are not read

    def replace(self, phase: str, *fns: Contribution) -> "MachineBuilder":
        """Run ``fns`` instead of ``phase``'s contributions (a restore: ``boot``)."""
        self.contributions[_known(phase)] = list(fns)
        return self

    def add(self, phase: str, fn: Contribution) -> "MachineBuilder":
        """Run ``fn`` after ``phase``'s own contributions."""
        self.contributions[_known(phase)].append(fn)
        return self

    def build(self) -> Machine:
        """Validate the spec and run every phase but ``late``.  A failure closes what
        was built and raises (``UserError``: bad input; ``BuildError``: the VMM's)."""
        self.spec.validate(restoring=self.restoring)
        m = Machine(self.spec, self.contributions["late"])
        try:
            for name in BUILD_PHASES:
                m.run_phase(name, self.contributions[name])
        except BaseException:
            m.close()
            raise
        return m


def _known(phase: str) -> str:
    if phase not in CONTRIBUTIONS:
        raise ValueError(f"no phase {phase!r} (phases: {', '.join(PHASE_NAMES)})")
    return phase


def build(spec: MachineSpec) -> Machine:
    return MachineBuilder(spec).build()


# ---------------------------------------------------------------- core
@contributes("core")
def _enable_trace(m: Machine) -> None:
    for pattern in m.spec.trace:
        trace.enable(pattern)


@contributes("core")
def _open_sinks(m: Machine) -> None:
    s = m.spec
    # --serial none silences COM1 only: a Xen guest's other consoles (console_io, hvc0) still
    # print on stdout.
    m.console = Console("stdio" if s.serial == "none" and s.xen is not None else s.serial)
    m.on_close(m.console.close)
    m.debugcon = LineSink(m.spec.debugcon)
    m.on_close(m.debugcon.close)


@contributes("core")
def _create_vm(m: Machine) -> None:
    s = m.spec
    try:
        m.vm = Vm(VmConfig(memory=s.memory, cpus=s.cpus, irqchip=s.irqchip, stats=s.stats))
    except ValueError as e:
        raise UserError(f"--memory: {e}") from None
    except (VmSetupError, IrqChipError) as e:
        raise UserError(str(e)) from None
    except KvmError as e:
        raise BuildError(f"cannot create the VM: {e}") from None
    m.on_close(m.vm.close)


# ---------------------------------------------------------------- platform
@contributes("platform")
def _pc_devices(m: Machine) -> None:
    com1 = m.console.source("serial") if m.spec.serial != "none" else (lambda data: None)
    m.pc = attach_pc_devices(m.vm, com1, pci=m.spec.pci,
                             debugcon_out=m.debugcon.write if m.debugcon.enabled else None)
    m.on_close(m.pc.serial.stop)            # its character-timeout timer
    m.on_close(m.pc.acpi_pm.stop)           # its PM timer's SCI timer
    if m.pc.pit is not None:
        m.on_close(m.pc.pit.stop)           # its timer thread, before the VM it pulses closes


# ---------------------------------------------------------------- pci
@contributes("pci")
def _xen_platform_device(m: Machine) -> None:
    if m.spec.wants_xen_platform:
        from xen.platform_pci import attach_xen_platform
        m.xen_platform = attach_xen_platform(m.vm, m.pci)


@contributes("pci")
def _pci_testdev(m: Machine) -> None:
    if m.spec.pci_testdev:
        dev = m.pci_testdev = attach_pci_testdev(m.pci)
        m.on_close(dev.stop_timer)          # its burst thread, if the guest started one


@contributes("pci")
def _virtio_devices(m: Machine) -> None:
    s = m.spec
    if not (s.virtio_rng or s.drives or s.nets):
        return
    # Imported here: a machine without virtio doesn't pay for it at every start.
    from devices.virtio.blk import VirtioBlk
    from devices.virtio.net import VirtioNet, parse_mac
    from devices.virtio.rng import VirtioRng
    if s.virtio_rng:
        _plug_virtio(m, VirtioRng(m.vm.memory))
    for d in s.drives:
        try:
            dev = VirtioBlk(m.vm.memory, d["path"], readonly=d.get("readonly", False))
        except OSError as e:
            raise UserError(f"--drive: cannot open {d['path']}: {e.strerror or e}") from None
        _plug_virtio(m, dev)
    for n in s.nets:
        mac = parse_mac(n["mac"]) if n.get("mac") is not None else None
        try:
            dev = VirtioNet(m.vm.memory, n["tap"], mac=mac)
        except OSError as e:
            hint = {errno.EINVAL: " (an interface that is not a tap?)",
                    errno.EBUSY: " (another process has it open)",
                    errno.EPERM: " (create it first: ip tuntap add NAME mode tap user USER)"}.get(e.errno, "")
            raise UserError(f"--net: cannot open tap {n['tap']}: {e.strerror or e}{hint}") from None
        _plug_virtio(m, dev)


def _plug_virtio(m: Machine, dev: VirtioPciDevice) -> None:
    from devices.virtio.pci import attach_virtio
    m.on_close(dev.close)                   # its thread (stopped at the VM's end) and files
    attach_virtio(m.pci, dev)
    m.virtio.append(dev)


# ---------------------------------------------------------------- hypervisor
@contributes("hypervisor")
def _xen_domain(m: Machine) -> None:
    config = m.spec.xen
    if config is None:
        return
    from xen.domain import XenDomain
    from xen.transport import choose_transport
    try:
        choose_transport(m.vm.kvm, config.hypercalls)      # a clear error for an unusable transport
    except ValueError as e:
        raise UserError(str(e)) from None
    m.xen = XenDomain(m.vm, config, m.console.source("xen"), m.pci.intx_gsi)


@contributes("hypervisor")
def _xen_toolstack(m: Machine) -> None:
    """What libxl and dom0's daemons give a domU: special pages, the PV console, xenstore
    (xen/toolstack.py)."""
    if m.xen is not None:
        from xen.toolstack import Toolstack
        try:
            m.toolstack = Toolstack(m.xen, m.console.source("hvc0"), name=m.spec.xen_name,
                                    xenstore=tuple(m.spec.xenstore))
        except ValueError as e:                  # a --xenstore path the store refuses
            raise UserError(f"--xenstore: {e}") from None


# ---------------------------------------------------------------- firmware
@contributes("firmware")
def _acpi_tables(m: Machine) -> None:
    s = m.spec
    if not s.acpi:
        return
    m.rsdp = write_acpi_tables(
        m.vm.memory, s.cpus, serial_ports=[(COM1_BASE, COM1_IRQ)],
        pci_routing=m.pci.routing_table() if m.pci is not None else None,
        legacy_pic=True, rtc=(RTC_BASE, RTC_CENTURY),   # KVM's 8259s, or ours with split
        pvpanic_port=PVPANIC_PORT)


# ---------------------------------------------------------------- boot
@contributes("boot")
def _load_kernel(m: Machine) -> None:
    s = m.spec
    m.boot_info = load_kernel(m.vm.memory, m.vm.boot_vcpu, s.kernel, s.cmdline, s.initrd, rsdp_addr=m.rsdp)


# ---------------------------------------------------------------- late
def _interrupted(m: Machine) -> None:
    m.vm.request_exit(exitcodes.INTERRUPTED, "interrupted")


@contributes("late")
def _signals(m: Machine) -> None:
    """SIGINT ends the VM (exit 130).  SIGTERM asks a Xen guest that listens to shut
    down (GracefulStop), else ends the VM as SIGINT does.  Put back at close.  Only
    Python's main thread can set handlers: a machine built on another thread leaves
    them alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    stop = m.graceful_stop = GracefulStop(m)
    handlers = {signal.SIGINT: lambda signum=None, frame=None: _interrupted(m),
                signal.SIGTERM: lambda signum=None, frame=None: stop.requested()}
    saved = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    m.on_close(lambda: [signal.signal(sig, h) for sig, h in saved.items()])
    m.on_close(stop.cancel)


class GracefulStop:
    """SIGTERM as ``xl shutdown`` does it: write control/shutdown = poweroff for the
    guest's xenbus (Linux: drivers/xen/manage.c orderly_poweroff), then wait up to
    ``spec.shutdown_timeout`` seconds for the guest to power off (exit 0) before
    ending it (exit 130).  A second SIGTERM, a timeout of 0, or a guest that doesn't
    watch control/shutdown (no xenbus, a kit guest) end it at once."""

    def __init__(self, m: Machine):
        self.m = m
        self._timer: threading.Timer | None = None
        self._asked = False

    def requested(self) -> None:
        ts, grace = self.m.toolstack, self.m.spec.shutdown_timeout
        if self._asked or ts is None or grace <= 0:
            _interrupted(self.m)
            return
        self._asked = True
        # Off the signal handler: the xenstore write takes the daemon's lock.
        threading.Thread(target=self._ask, args=(ts, grace), name="graceful-stop", daemon=True).start()

    def _ask(self, ts: Toolstack, grace: float) -> None:
        if not ts.request_shutdown("poweroff"):
            _interrupted(self.m)
            return
        self._timer = threading.Timer(grace, lambda: self.m.vm.request_exit(
            exitcodes.INTERRUPTED, f"the guest did not power off within {grace:g} s of SIGTERM"))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@contributes("late")
def _console_input(m: Machine) -> None:
    feeds = []
    if m.toolstack is None or m.spec.xen_console in ("serial", "both"):
        feeds.append(m.pc.serial.feed)
    if m.toolstack is not None and m.spec.xen_console in ("pv", "both"):
        feeds.append(m.toolstack.console_input)
    feed = feeds[0] if len(feeds) == 1 else (lambda data: [f(data) for f in feeds])
    m.console.start_input(feed, lambda: _interrupted(m))


@contributes("late")
def _xen_timers(m: Machine) -> None:
    if m.xen is not None:
        m.xen.start()


@contributes("late")
def _virtio_threads(m: Machine) -> None:
    """A restored virtio device whose driver was running gets its thread now, before the
    vCPUs (a booted one gets it at DRIVER_OK)."""
    for dev in m.virtio:
        dev.start()


@contributes("late")
def _vcpus(m: Machine) -> None:
    m.vm.start()


# ---------------------------------------------------------------- snapshot and restore
# ARCHITECTURE.md, "Snapshots": what is primary (saved) and what is derived (rebuilt), and the
# order.  A snapshot's sections: spec (the MachineSpec), vm (kvmclock, the kernel irqchip, every
# vCPU), devices (snapshot_parts, by name), xen (XenDomain.save), memory (RAM and overlays).
RESTORE_OPTIONS = ("serial", "debugcon", "trace", "stats", "shutdown_timeout")   # not the machine's shape


def _step(op: str, step: str, detail: str) -> None:
    if TP_SNAPSHOT_STEP.enabled:
        TP_SNAPSHOT_STEP.emit(op=op, step=step, detail=detail)


def snapshot_parts(m: Machine) -> list[tuple[str, object]]:
    """The devices whose state a snapshot saves, in restore order: the interrupt controllers
    first (their pins' levels and Remote IRRs), then the devices that drive their lines."""
    pc = m.pc
    parts: list[tuple[str, object]] = []
    for name, dev in (("ioapic", pc.ioapic), ("pic", pc.pic), ("pit", pc.pit), ("rtc", pc.rtc),
                      ("acpi_pm", pc.acpi_pm), ("serial", pc.serial), ("testdev", pc.testdev)):
        if dev is not None:
            parts.append((name, dev))
    if m.pci is not None:
        parts.append(("pci", m.pci))
        for devfn in sorted(m.pci.devices):
            dev = m.pci.devices[devfn]
            parts.append((f"pci:{dev.bdf}", dev))
    return parts


def snapshot_unsupported(m: Machine) -> str | None:
    """What this machine has that snapshots don't save yet (one line), or None.  Every device
    the spec can build is saved now; a state only found at save time (Xen's FIFO event
    channels) is refused by the part's ``save`` (ValueError)."""
    return None


VIRTIO_HOLD_TIMEOUT = 5.0       # seconds a virtio request may take to end before a snapshot gives up


def _quiesce(m: Machine) -> Callable[[], None]:
    """Stop the threads that change guest-visible state on their own while the vCPUs are
    paused (Xen's timers; each virtio device's thread, at a request boundary): returns the
    function that lets them go again.  TimeoutError (nothing left held) if a virtio request
    doesn't end in time."""
    releases: list[Callable[[], None]] = []
    try:
        if m.xen is not None:
            releases.append(m.xen.hold_timers())
        for dev in m.virtio:
            dev.hold(VIRTIO_HOLD_TIMEOUT)
            releases.append(dev.release)
            _step("save", f"pci:{dev.bdf}", f"{dev.name} held between requests")
    except BaseException:
        _release_all(releases)
        raise
    return lambda: _release_all(releases)


def _release_all(releases: list[Callable[[], None]]) -> None:
    for release in reversed(releases):
        release()


def restore_builder(path: str, overrides: dict | None = None) -> tuple[MachineBuilder, SnapshotReader]:
    """A builder for the machine saved in ``path`` (checked whole first: SnapshotError), its
    ``boot`` and ``firmware`` phases replaced by loading the saved state.  ``overrides``: run
    options that don't change the machine's shape (RESTORE_OPTIONS)."""
    from vmm.snapshot import SnapshotError, SnapshotReader
    reader = SnapshotReader(path)
    try:
        try:
            spec = MachineSpec.from_dict(reader.json("spec"))
        except (TypeError, ValueError, KeyError) as e:
            raise SnapshotError(f"{path}: the saved machine spec is not one this vmm builds ({e})") from None
        # The host's side (where the console goes, tracing) is this run's, not the saved run's.
        for k in ("serial", "debugcon", "trace", "stats"):
            setattr(spec, k, MachineSpec.__dataclass_fields__[k].default if k != "trace" else [])
        for k, v in (overrides or {}).items():
            if k not in RESTORE_OPTIONS:
                raise UserError(f"restore: {k} changes the machine the snapshot recorded")
            setattr(spec, k, v)
        builder = MachineBuilder(spec)
        builder.restoring = True
        builder.replace("firmware")                 # the tables are in the saved memory
        builder.replace("boot", lambda m: _load_snapshot(m, reader))
    except BaseException:
        reader.close()
        raise
    return builder, reader


def _load_snapshot(m: Machine, reader: SnapshotReader) -> None:
    """The ``boot`` phase of a restore.  Primary state first, every part's own ``restore``;
    then the overlay pages Xen had placed (memory lands in them); the memory; the VM's
    (vCPUs, kernel irqchip); then each part's ``rebuilt`` (derived state), in this order:
    devices (I/OAPIC routes, PIC, PIT thread, PCI BARs and MSI vectors, lines), then Xen."""
    from vmm.snapshot import SnapshotError
    unsupported = snapshot_unsupported(m)
    if unsupported:
        raise SnapshotError(f"cannot restore this machine: {unsupported}")
    t0 = time.monotonic()
    devices = reader.json("devices")
    parts = snapshot_parts(m)
    if sorted(devices) != sorted(name for name, _ in parts):
        raise SnapshotError(f"{reader.path}: the saved devices ({', '.join(devices)}) are not the built ones")
    for name, part in parts:
        try:
            part.restore(devices[name])
        except (KeyError, ValueError, TypeError) as e:
            raise SnapshotError(f"{reader.path}: cannot restore {name}: {e}") from None
        _step("restore", name, "primary")
    xen_state = reader.json("xen") if m.xen is not None else None
    if m.xen is not None:
        try:
            m.xen.restore(xen_state)
            if m.toolstack is not None:
                m.toolstack.restore(xen_state["toolstack"])
        except (KeyError, ValueError, TypeError) as e:
            raise SnapshotError(f"{reader.path}: cannot restore the Xen domain: {e}") from None
        _step("restore", "xen", "primary")
        m.xen.placement_rebuilt()
        _step("restore", "xen.placement", "overlays mapped")
    for r in m.vm.memory.regions:
        if r.overlay:
            r.view[:] = bytes(r.size)               # loaded below: a page saved as zeros stays zero
    loaded = reader.load_memory(m.vm.memory.view)
    _step("restore", "memory", f"{loaded} bytes")
    try:
        notes = m.vm.restore_state(reader.json("vm"))
    except (KvmError, VmSetupError) as e:
        raise SnapshotError(f"cannot restore the vCPUs on this host: {e}") from None
    _step("restore", "vm", "; ".join(notes) or "vCPUs, irqchip, kvmclock")
    for name, part in parts:
        rebuilt = getattr(part, "rebuilt", None)
        if rebuilt is not None:
            rebuilt()
            _step("rebuilt", name, "")
    if m.xen is not None:
        m.xen.rebuilt()
        _step("rebuilt", "xen", "")
    _step("restore", "done", f"in {time.monotonic() - t0:.3f}s")


def restore(path: str, overrides: dict | None = None) -> Machine:
    """Build the machine a snapshot recorded, in its saved state, ready to start()."""
    builder, reader = restore_builder(path, overrides)
    with reader:
        return builder.build()


# ---------------------------------------------------------------- trace tables
def trace_tables() -> list:
    """Every package's trace-point table (importing a table declares its points)."""
    import devices.trace_events  # noqa: F401
    import vmm.trace_events  # noqa: F401
    import xen.trace_events  # noqa: F401
    order = ("vmm", "devices", "xen")        # the layering's order, whatever was imported first
    return sorted(trace.tables(), key=lambda t: order.index(t.package))


__all__ = ["BuildError", "Machine", "MachineBuilder", "MachineSpec", "PHASES", "Phase", "XenConfig",
           "build", "contributes", "restore", "restore_builder", "snapshot_parts", "trace_tables"]
