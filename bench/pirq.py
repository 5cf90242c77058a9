"""PIRQ-MSI delivery vs a plain MSI-X, same VM, same run.

One Xen-mode VM (split irqchip, Xen platform device, the PCI test device) runs the kit
guest guest-images/build/bench_pirq.elf: MSI-X entry 0 goes to a LAPIC vector (plain),
entry 1 to an MSI PIRQ bound to an event channel (per-vCPU upcall vector).  The guest
brackets every phase with writes to our marker port; we snapshot time and the vCPU's exit
counters there.

A (guest-driven): N messages one at a time through the testdev FIRE register, each waited
  for (sti; hlt), vs N bare PIO exits to a null port.  Report µs per interrupt, ratio
  PIRQ/plain, and each over the bare exit (the rest is the VMM's and the guest's handling).
B (device-thread bursts): the testdev's timer thread sends M messages PERIOD µs apart
  through its irqfd while the guest only halts and counts.  Report userspace exits (vCPU
  exits to us) per 1000 messages, against an idle stretch of the same length, and the
  userspace work behind the messages: irq-deliver runs (diverted MSIs), upcalls injected
  by us.  With the kernel transport and KVM's Xen support the PIRQ's irqfd gets a
  KVM_IRQ_ROUTING_XEN_EVTCHN route: the target there is 0 exits and 0 userspace work.

Usage: python bench/pirq.py [--transport port|kernel|auto] [-n N] [--reps R] [-m M]
                            [--period US] [--trace GLOB]... [--only a|b]
In the nested host: vmm testhost run -- .venv/bin/python bench/pirq.py --transport kernel
(smaller defaults there: Python is ~25x slower).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.msi import SENT  # noqa: E402
from kvm_bindings import MsiRoute, XenEvtchnRoute  # noqa: E402
from vmm import trace  # noqa: E402
from vmm.errors import internal_errors  # noqa: E402
from vmm.machine import Machine, MachineBuilder, MachineSpec, XenConfig  # noqa: E402
from vmm.vcpu import current_vcpu  # noqa: E402
from vmm.vm import Vm  # noqa: E402
from xen.domain import XenDomain  # noqa: E402

GUEST = ROOT / "guest-images" / "build" / "bench_pirq.elf"
BENCH_PORT = 0x530          # guest-images/tests/bench_pirq.c: +0 marker, +4 null, +8 result
PHASES = {1: "pio", 2: "plain", 3: "pirq", 4: "idle", 5: "ipi-plain", 6: "ipi-upcall",
          7: "plain-irqfd", 8: "pirq-irqfd"}
ENTRY_PLAIN, ENTRY_PIRQ = 0, 1


class Phase:
    __slots__ = ("name", "t0", "t1", "exits0", "exits1", "deliv0", "deliv1", "kicks0", "kicks1",
                 "sent0", "sent1", "result")

    def __init__(self, name: str):
        self.name = name
        self.result = 0

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def exits(self) -> int:
        return self.exits1 - self.exits0

    @property
    def sent(self) -> int:
        return self.sent1 - self.sent0


class Markers:
    """The bench's port: snapshots at each phase boundary, in the vCPU thread."""

    def __init__(self, vm: Vm, xen: XenDomain, dev):
        self.vm, self.xen, self.dev = vm, xen, dev
        self.phases: list[Phase] = []
        self._open: Phase | None = None

    def _snapshot(self) -> tuple[float, int, int, int, int]:
        v = current_vcpu()
        # vcpu.stats counts every exit live when vm.stats_enabled: "io" and one key per other
        # reason; "io:dev"/"mmio:dev" keys are breakdowns.  (vcpu.exits is added at loop end.)
        exits = sum(n for k, n in v.stats.items() if ":" not in k) if v is not None else 0
        return (time.perf_counter(), exits, self.vm.irqchip.deliveries.delivered, sum(self.xen.upcall.kicks),
                self.dev.counters[("msix", SENT)])

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            t, exits, deliv, kicks, sent = self._snapshot()
            if value & 1 == 0:
                p = self._open = Phase(PHASES.get(value >> 1, f"phase{value >> 1}"))
                p.t0, p.exits0, p.deliv0, p.kicks0, p.sent0 = t, exits, deliv, kicks, sent
            elif self._open is not None:
                p = self._open
                p.t1, p.exits1, p.deliv1, p.kicks1, p.sent1 = t, exits, deliv, kicks, sent
                self.phases.append(p)
                self._open = None
        elif offset == 8 and self.phases:
            self.phases[-1].result = value


def route_of(vm: Vm, vec) -> str:
    """What KVM holds for a vector's irqfd: the route's kind, or why there is none."""
    if vec is None or vec.irqfd_gsi is None:
        return "no irqfd"
    if not vec._fast:
        return f"irqfd gsi {vec.irqfd_gsi}, no route (userspace)"
    rs = vm.irqchip.routes().get(vec.irqfd_gsi, [])
    kinds = {MsiRoute: "MSI", XenEvtchnRoute: "XEN_EVTCHN"}
    return f"irqfd gsi {vec.irqfd_gsi} -> " + ",".join(kinds.get(type(r), type(r).__name__) for r in rs)


def run_guest(args, cmdline: str, stats: bool):
    """One `vmm run --xen --pci-testdev`-like machine (vmm/machine.py) plus the marker port."""
    markers: list[Markers] = []

    def attach_markers(m: Machine) -> None:          # a device that reads the Xen domain's counters
        markers.append(Markers(m.vm, m.xen, m.pci_testdev))
        m.vm.pio_bus.register(BENCH_PORT, 12, markers[0], "bench")

    with tempfile.NamedTemporaryFile(prefix="bench-pirq-", suffix=".com1") as com1:
        spec = MachineSpec(kernel=str(GUEST), cmdline=cmdline, memory=64 << 20, serial=f"file:{com1.name}",
                           pci_testdev=True, xen=XenConfig(hypercalls=args.transport), stats=stats)
        machine = MachineBuilder(spec).add("hypervisor", attach_markers).build()
        try:
            machine.start()
            code = machine.wait(args.timeout)
            vm, xen, dev = machine.vm, machine.xen, machine.pci_testdev
            routes = {name: route_of(vm, dev.msix.vector(e)) for name, e in (("plain", ENTRY_PLAIN),
                                                                              ("pirq", ENTRY_PIRQ))}
            info = {"transport": type(xen.transport).__name__, "accel_full": xen.accel_full, "routes": routes}
        finally:
            machine.close()        # stops the testdev's timer thread, closes the VM
        out = Path(com1.name).read_bytes().decode(errors="replace")
    if code != 0 or internal_errors():
        sys.stdout.write(out)
        raise SystemExit(f"bench guest failed: exit {code} ({vm.exit_reason}); "
                         f"internal errors: {internal_errors()[:1]}")
    return markers[0].phases, info, out


def best(phases: list[Phase], name: str, n: int) -> float:
    return min(p.seconds / n for p in phases if p.name == name)


def scenario_a(args) -> None:
    phases, info, _ = run_guest(args, f"mode=0xa n={args.n} reps={args.reps}", stats=False)
    for p in phases:
        if p.name != "pio" and p.result != args.n:
            raise SystemExit(f"phase {p.name}: {p.result} interrupts for {args.n} messages")
    pio, ipi_plain, ipi_upcall, plain, pirq = (best(phases, k, args.n)
                                               for k in ("pio", "ipi-plain", "ipi-upcall", "plain", "pirq"))
    us = lambda x: f"{x * 1e6:9.2f}"  # noqa: E731
    print(f"A. guest-driven: FIRE, wait for the interrupt; {args.n} each, best of {args.reps} "
          f"(same VM, {info['transport']}, KVM Xen accel {'on' if info['accel_full'] else 'off'}):")
    print(f"  bare PIO exit (out to a null port)       {us(pio)} us/exit")
    print(f"  guest only: self-IPI -> plain handler    {us(ipi_plain)} us/irq")
    print(f"  guest only: self-IPI -> upcall handler   {us(ipi_upcall)} us/irq   (port pending set by the guest)")
    print(f"  plain MSI-X -> LAPIC vector              {us(plain)} us/irq   {plain / pio:5.2f} x PIO")
    print(f"  MSI-X PIRQ -> event channel (upcall)     {us(pirq)} us/irq   {pirq / pio:5.2f} x PIO   "
          f"PIRQ/plain {pirq / plain:.2f}")
    plain_fd, pirq_fd = best(phases, "plain-irqfd", args.n), best(phases, "pirq-irqfd", args.n)
    print(f"  after a timer burst gave both vectors irqfds (FIRE writes the eventfd; routes: "
          f"plain {info['routes']['plain']}, PIRQ {info['routes']['pirq']}):")
    print(f"    plain MSI-X, irqfd                     {us(plain_fd)} us/irq   {plain_fd / pio:5.2f} x PIO")
    print(f"    MSI-X PIRQ, irqfd                      {us(pirq_fd)} us/irq   {pirq_fd / pio:5.2f} x PIO   "
          f"PIRQ/plain {pirq_fd / plain_fd:.2f}")
    extra, guest_extra = pirq - plain, ipi_upcall - ipi_plain
    print(f"  PIRQ over plain: +{extra * 1e6:.2f} us; the guest's upcall handler over its plain one "
          f"(self-IPI rows): +{guest_extra * 1e6:.2f} us; left for the VMM's PIRQ path: "
          f"{(extra - guest_extra) * 1e6:+.2f} us")
    print(f"  plain beyond the bare exit: +{(plain - pio) * 1e6:.2f} us (testdev, KVM_SIGNAL_MSI, the guest's "
          f"handler; a self-IPI alone: {ipi_plain * 1e6:.2f} us)")


def scenario_b(args) -> None:
    phases, info, out = run_guest(args, f"mode=0xb m={args.m} period={args.period} reps={args.reps}", stats=True)
    idle = [p for p in phases if p.name == "idle"]
    idle_rate = sum(p.exits - 1 for p in idle) / sum(p.seconds for p in idle)   # -1: the begin marker
    print(f"B. device-thread bursts: {args.m} messages, {args.period} us apart, guest halts and counts; "
          f"x{args.reps} ({info['transport']}, KVM Xen accel {'on' if info['accel_full'] else 'off'}):")
    print(f"  idle guest: {idle_rate:.1f} exits/s")
    print(f"  {'target':<10} {'irqfd route':<34} {'sent':>6} {'recvd':>6} {'wait ms':>7} {'exits':>6} "
          f"{'idle-eq':>7} {'exits/1k':>8} {'deliv/1k':>8} {'upcalls/1k':>10}")
    for name in ("plain", "pirq"):
        for p in (p for p in phases if p.name == name):
            exits = p.exits - 2                   # the begin marker and the TIMER write
            idle_eq = idle_rate * p.seconds
            per_k = lambda x: 1000 * x / max(p.sent, 1)  # noqa: E731
            print(f"  {name:<10} {info['routes'][name]:<34} {p.sent:>6} {p.result:>6} {p.seconds * 1e3:>7.1f} "
                  f"{exits:>6} {idle_eq:>7.1f} {per_k(max(exits - idle_eq, 0)):>8.1f} "
                  f"{per_k(p.deliv1 - p.deliv0):>8.1f} {per_k(p.kicks1 - p.kicks0):>10.1f}")
    print("  exits/1k: vCPU exits to userspace beyond the idle rate, per 1000 messages sent; deliv/1k: "
          "diverted MSIs run by our irq-deliver thread; upcalls/1k: upcall vectors we injected")
    print("  recvd < sent: a message arriving while the last is still pending coalesces (LAPIC IRR, the "
          "port's pending bit); the guest then waits out its deadline (wait ms)")
    if args.verbose:
        sys.stdout.write(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transport", choices=("port", "kernel", "auto"), default="auto",
                    help="Xen hypercall transport (kernel: KVM's Xen support, in the nested host)")
    ap.add_argument("-n", type=int, help="A: messages per target (default 1000; 200 with --transport kernel)")
    ap.add_argument("--reps", type=int, default=3, help="repeats of each scenario in its VM (default 3)")
    ap.add_argument("-m", type=int, help="B: messages per burst, <= 4096 (default 1000)")
    ap.add_argument("--period", type=int, default=100, help="B: µs between messages, >= 100 (default 100)")
    ap.add_argument("--only", choices=("a", "b"), help="run one scenario")
    ap.add_argument("--timeout", type=float, default=300.0, help="per VM, seconds")
    ap.add_argument("--trace", action="append", default=[], metavar="GLOB", help="enable trace points (stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the guest's console")
    args = ap.parse_args()
    kernel = args.transport == "kernel"
    args.n = args.n or (200 if kernel else 1000)
    args.m = args.m or 1000
    if not GUEST.exists():
        raise SystemExit(f"{GUEST} missing: make -C guest-images")
    for g in args.trace:
        trace.enable(g)
    if args.only in (None, "a"):
        scenario_a(args)
    if args.only in (None, "b"):
        scenario_b(args)


if __name__ == "__main__":
    main()
