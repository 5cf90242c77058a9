"""Console output through the 16550, as Linux's printk writes it: per byte, poll LSR
until THRE, then write THR.  Same run, same /dev/kvm: the bare PIO exit (baseline:
bench/pio_exit.py's guest), the UART with every THR write exiting, with THR writes
coalesced in KVM's ring (vmm/coalesced.py), and with the LSR polls answered in C as
well (vmm/port_cache.py: the `vmm run` default).  Reports µs per byte and the ratio to
one bare exit handled in Python.

Usage: python bench/serial_console.py [bytes] [repeats]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pio_exit import Done, run_python as bare_exits  # noqa: E402
from devices.serial import COM1_BASE, LSR, Serial  # noqa: E402
from vmm.boot.cpu_state import set_protected_mode_flat  # noqa: E402
from vmm.vm import Vm, VmConfig  # noqa: E402


def guest_code(n: int) -> bytes:
    """32-bit: n times { poll LSR (0x3fd) until THRE; out 'x' to THR (0x3f8) }, then 0x701."""
    return bytes([
        0xB9, *n.to_bytes(4, "little"),         # mov $n, %ecx
        0x66, 0xBA, 0xFD, 0x03,                 # 1: mov $0x3fd, %dx
        0xEC,                                   # 2: in (%dx), %al
        0xA8, 0x20,                             # test $0x20, %al    (THRE)
        0x74, 0xFB,                             # jz 2b
        0x66, 0xBA, 0xF8, 0x03,                 # mov $0x3f8, %dx
        0xB0, 0x78,                             # mov $'x', %al
        0xEE,                                   # out %al, (%dx)
        0x49,                                   # dec %ecx
        0x75, 0xED,                             # jnz 1b
        0x66, 0xBA, 0x01, 0x07,                 # mov $0x701, %dx
        0xEE,                                   # out %al, (%dx)
        0xF4, 0xEB, 0xFD,                       # 3: hlt; jmp 3b
    ])


def run_uart(n: int, coalesce: bool, cache: bool = False) -> tuple[int, float]:
    """(bytes the console got, seconds)."""
    vm = Vm(VmConfig(memory=16 << 20))
    got = []
    zone = vm.coalesced.zone(COM1_BASE, 1, "serial0") if coalesce else None
    lsr = vm.port_cache.entry(COM1_BASE + LSR, "serial0") if cache else None
    serial = Serial(got.append, lambda level: None, tx_zone=zone, lsr_read=lsr)
    vm.pio_bus.register(COM1_BASE, 8, serial, "serial0")
    vm.pio_bus.register(0x701, 1, Done(vm), "done")
    vm.coalesced.start()                     # the zone registered (Vm.start does it in `vmm run`)
    vm.memory.write(0x100000, guest_code(n))
    set_protected_mode_flat(vm.boot_vcpu, 0x100000, 0)
    t0 = time.perf_counter()
    vm.vcpus[0]._loop()
    vm.coalesced.drain()
    dt = time.perf_counter() - t0
    vm.close()
    return sum(len(b) for b in got), dt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    bare = exiting = coalesced = cached = float("inf")
    for _ in range(repeats):                 # interleaved: drift hits all alike
        e, s = bare_exits(n)
        bare = min(bare, s / e)
        b, s = run_uart(n, coalesce=False)
        assert b == n, (b, n)
        exiting = min(exiting, s / b)
        b, s = run_uart(n, coalesce=True)
        assert b == n, (b, n)
        coalesced = min(coalesced, s / b)
        b, s = run_uart(n, coalesce=True, cache=True)
        assert b == n, (b, n)
        cached = min(cached, s / b)
    print(f"16550 console output, {n} bytes, best of {repeats} (same run, same /dev/kvm):")
    print(f"  bare PIO exit (baseline)  {bare * 1e6:8.2f} us/exit")
    print(f"  UART, THR exits           {exiting * 1e6:8.2f} us/byte  {exiting / bare:5.2f} x a bare exit")
    print(f"  UART, THR coalesced       {coalesced * 1e6:8.2f} us/byte  {coalesced / bare:5.2f} x a bare exit")
    print(f"  ... and LSR answered in C {cached * 1e6:8.2f} us/byte  {cached / bare:5.2f} x a bare exit")


if __name__ == "__main__":
    main()
