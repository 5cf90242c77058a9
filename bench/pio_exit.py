"""PIO exit round trip: our Python vCPU loop vs the same loop in C, same run.

The guest (32-bit code at 1 MiB) writes port 0x700 N times, then 0x701 once.
Both VMMs handle every write in user space.  We report µs per exit and the
Python/C ratio (target <= 1.15), plus the cost of a disabled trace point.

Usage: python bench/pio_exit.py [N] [repeats]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmm import trace  # noqa: E402
from vmm.boot.cpu_state import set_protected_mode_flat  # noqa: E402
from vmm.vm import Vm, VmConfig  # noqa: E402


def guest_code(n: int) -> bytes:
    return bytes([
        0x66, 0xBA, 0x00, 0x07,                 # mov $0x700, %dx
        0xB9, *n.to_bytes(4, "little"),         # mov $n, %ecx
        0xEE,                                   # 1: out %al, (%dx)
        0x49,                                   # dec %ecx
        0x75, 0xFC,                             # jnz 1b
        0x66, 0xBA, 0x01, 0x07,                 # mov $0x701, %dx
        0xEE,                                   # out %al, (%dx)
        0xF4,                                   # 2: hlt
        0xEB, 0xFD,                             # jmp 2b
    ])


class Null:
    def __init__(self):
        self.sink = 0

    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        self.sink += value


class Done:
    def __init__(self, vm):
        self.vm = vm

    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        self.vm.request_exit(0, "done")


def run_python(n: int) -> tuple[int, float]:
    vm = Vm(VmConfig(memory=16 << 20))
    vm.pio_bus.register(0x700, 1, Null(), "null")
    vm.pio_bus.register(0x701, 1, Done(vm), "done")
    vm.memory.write(0x100000, guest_code(n))
    set_protected_mode_flat(vm.boot_vcpu, 0x100000, 0)
    vcpu = vm.vcpus[0]
    t0 = time.perf_counter()
    vcpu._loop()
    dt = time.perf_counter() - t0
    exits = vcpu.exits
    vm.close()
    return exits, dt


def build_c(tmp: Path) -> Path:
    exe = tmp / "pio_exit_c"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "bench" / "pio_exit.c")], check=True)
    return exe


def run_c(exe: Path, codefile: Path) -> tuple[int, float]:
    out = subprocess.run([str(exe), str(codefile)], check=True, stdout=subprocess.PIPE, text=True).stdout
    exits, secs = out.split()
    return int(exits), float(secs)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_c(tmp)
        codefile = tmp / "code.bin"
        codefile.write_bytes(guest_code(n))
        c_best = py_best = py_traced_best = float("inf")
        # Interleave the runs so drift on a shared machine hits all alike.
        for _ in range(repeats):
            e, s = run_c(exe, codefile)
            c_best = min(c_best, s / e)
            e, s = run_python(n)
            py_best = min(py_best, s / e)
            trace.enable("xen.*")        # unrelated points on: the exit path must not care
            e, s = run_python(n)
            py_traced_best = min(py_traced_best, s / e)
            trace.disable_all()
    tp = trace.tracepoint("bench.disabled", "x={x}")
    guard = min(timeit.repeat(lambda: tp.enabled and tp.emit(x=1), number=200000, repeat=5)) / 200000
    empty = min(timeit.repeat(lambda: None, number=200000, repeat=5)) / 200000
    print(f"pio exit round trip, {n} exits, best of {repeats} (same run, same /dev/kvm):")
    print(f"  C baseline            {c_best * 1e6:8.2f} us/exit")
    print(f"  Python vCPU loop      {py_best * 1e6:8.2f} us/exit   ratio {py_best / c_best:.3f} x C (target <= 1.15)")
    print(f"  Python, other traces  {py_traced_best * 1e6:8.2f} us/exit   ratio {py_traced_best / c_best:.3f} x C")
    print(f"  disabled trace point guard: {(guard - empty) * 1e9:.0f} ns "
          f"({(guard - empty) / py_best * 100:.2f}% of one exit)")


if __name__ == "__main__":
    main()
