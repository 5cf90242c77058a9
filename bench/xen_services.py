"""Xen platform services against a bare exit, same VM, same run.

One Xen-mode VM runs guest-images/build/bench_xen_services.elf, which brackets each phase
with writes to our marker port (we take the time and the vCPU's exit count there):

* pio     n bare port-I/O exits to a null port: the baseline;
* pvcon   bytes through the PV console's out ring (xen/pv_console.py): MB/s, and guest
          notifications (EVTCHNOP_send exits) per KiB;
* xsread  n xenstore READ round trips (xen/xenstore/): us per READ and per bare exit.

Usage: python bench/xen_services.py [--transport port|kernel|auto] [-n N] [--bytes B] [--reps R]
In the nested host: vmm testhost run -- .venv/bin/python bench/xen_services.py --transport kernel -n 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmm.errors import internal_errors  # noqa: E402
from vmm.machine import Machine, MachineBuilder, MachineSpec, XenConfig  # noqa: E402
from vmm.vcpu import current_vcpu  # noqa: E402

GUEST = ROOT / "guest-images" / "build" / "bench_xen_services.elf"
BENCH_PORT = 0x530          # guest-images/tests/bench_xen_services.c: +0 marker, +4 null, +8 result
NAMES = {1: "pio", 2: "pvcon", 3: "xsread", 4: "fill"}


class Markers:
    def __init__(self):
        self.phases: list[dict] = []
        self._open: dict | None = None

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            v = current_vcpu()
            exits = sum(n for k, n in v.stats.items() if ":" not in k) if v is not None else 0
            now = time.perf_counter()
            if value & 1 == 0:
                self._open = {"name": NAMES.get(value >> 1, str(value >> 1)), "t0": now, "e0": exits}
            elif self._open is not None:
                p = self._open
                p["seconds"], p["exits"] = now - p["t0"], exits - p["e0"]
                self.phases.append(p)
                self._open = None
        elif offset == 8 and self.phases:
            self.phases[-1].setdefault("results", []).append(value)
            self.phases[-1].setdefault("result", value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", default="port")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--bytes", type=int, default=256 * 1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-xenstore", dest="xenstore", action="store_false")
    args = ap.parse_args()

    markers = Markers()

    def attach(m: Machine) -> None:
        m.vm.pio_bus.register(BENCH_PORT, 12, markers, "bench")

    with tempfile.NamedTemporaryFile(prefix="bench-xs-", suffix=".out") as out:
        spec = MachineSpec(kernel=str(GUEST), cmdline=f"n={args.n} bytes={args.bytes} reps={args.reps} xenstore={int(args.xenstore)}",
                           memory=64 << 20, serial=f"file:{out.name}", xen=XenConfig(hypercalls=args.transport),
                           stats=True)
        machine = MachineBuilder(spec).add("hypervisor", attach).build()
        try:
            machine.start()
            code = machine.wait(args.timeout)
            transport = type(machine.xen.transport).__name__
        finally:
            machine.close()
        text = Path(out.name).read_bytes().decode(errors="replace")
    if code != 0 or internal_errors():
        sys.stdout.write(text[-3000:])
        raise SystemExit(f"bench guest failed: exit {code}; internal errors: {internal_errors()[:1]}")

    def best(name: str) -> dict:
        return min((p for p in markers.phases if p["name"] == name), key=lambda p: p["seconds"])

    pio, pv = best("pio"), best("pvcon")
    xs = best("xsread") if any(p["name"] == "xsread" for p in markers.phases) else None
    exit_us = pio["seconds"] / args.n * 1e6
    print(f"Xen platform services ({transport}), best of {args.reps}:")
    print(f"  bare PIO exit                 {exit_us:9.2f} us/exit")
    fill = best("fill")
    kib = pv["result"] / 1024
    mbs = pv["result"] / pv["seconds"] / 1e6
    vmm_us = pv["results"][1] / kib          # guest-timed: notification -> the ring drained
    print(f"  PV console output             {mbs:9.3f} MB/s  ({pv['result']} bytes, {pv['exits'] / kib:.2f} exits/KiB)")
    print(f"    guest filling a private page {fill['seconds'] / kib * 1e6:8.1f} us/KiB (the same loop: the guest's own share)")
    print(f"    notify -> ring drained      {vmm_us:9.1f} us/KiB = {vmm_us / exit_us:.2f} bare exits per KiB "
          f"(the VMM's share)")
    if xs is None:
        print("  xenstore READ round trip      (no xenstore)")
        return
    if xs["result"] != args.n:
        raise SystemExit(f"xenstore: {xs['result']} good replies of {args.n}")
    xs_us = xs["seconds"] / args.n * 1e6
    print(f"  xenstore READ round trip      {xs_us:9.2f} us/READ  {xs_us / exit_us:6.2f} x bare exit  "
          f"({xs['exits'] / args.n:.2f} exits/READ)")


if __name__ == "__main__":
    main()
