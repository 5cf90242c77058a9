"""The VMM's start-up time (issue 12's Linux boot benchmark: most of our gap to QEMU on a
quiet boot is our own start-up, and Python runs ~25x slower again in the nested test host).

Every case is a fresh process; each figure is the median of --reps, and its ratio is
against ``python -c pass`` (the same interpreter and venv) measured in the same run.

* wall-clock, spawn to exit: ``import vmm.machine``, ``vmm --version``, and `vmm run` of two
  tiny kit guests (hello; xen_smoke with --xen), which run for a few ms: start-up, guest
  and tear-down;
* spawn to the first KVM_RUN: `vmm run` in a process that stops (os._exit) as the machine
  starts its vCPUs (``Vm.start``), compared with this process's clock (CLOCK_MONOTONIC is
  system-wide).  Besides the kit guests, the benchmark's own Linux command line where the
  files are here (Debian's /boot/vmlinuz-*, the `make linux-guest` initramfs, 512M), with
  and without --xen: nothing of it runs, so this works where KVM can't run Linux.

    python bench/startup.py [--reps 9] [--only TEXT]

It creates VMs: run it under the machine's guest lock where others boot guests too.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "guest-images" / "build"
PY = sys.executable

# Runs `vmm ARGS...` and ends the process when the vCPUs are about to enter KVM_RUN, printing
# CLOCK_MONOTONIC then on stderr's last line.
TO_FIRST_RUN = """\
import os, sys, time
import vmm.vm
def start(self):
    sys.stderr.write(f"\\nvm.start at {time.monotonic()!r}\\n"); sys.stderr.flush(); os._exit(0)
vmm.vm.Vm.start = start
from vmm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [e.get("PYTHONPATH")])])
    return e


def spawn(cmd: list[str]) -> tuple[float, float, str]:
    """(monotonic at spawn, at exit, stderr)."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=120)
    t1 = time.monotonic()
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"bench/startup.py: {' '.join(cmd)} exited {p.returncode}:\n{err[-2000:]}")
    return t0, t1, err


def wall(cmd: list[str]) -> float:
    t0, t1, _ = spawn(cmd)
    return t1 - t0


def first_run(vmm_args: list[str]) -> float:
    t0, _, err = spawn([PY, "-c", TO_FIRST_RUN, *vmm_args])
    last = err.rstrip().rsplit("\n", 1)[-1]
    if not last.startswith("vm.start at "):
        raise SystemExit(f"bench/startup.py: `vmm {' '.join(vmm_args)}` did not reach Vm.start:\n{err[-2000:]}")
    return float(last.split()[-1]) - t0


def median(fn, arg, reps: int) -> float:
    fn(arg)                               # warm the page cache
    return statistics.median(fn(arg) for _ in range(reps))


def linux_args(xen: bool) -> list[str] | None:
    """bench/linux_boot.py's `vmm run` of Debian's kernel and the linux-guest initramfs."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        return None
    kernel = kernels[-1]
    sys.path.insert(0, str(ROOT))
    from vmm.testhost.config import linux_guest_dir
    initrd = linux_guest_dir(kernel.split("vmlinuz-", 1)[1]) / "initramfs.cpio"
    if not initrd.exists():
        return None
    return ["run", "--kernel", kernel, "--initrd", str(initrd), "--memory", "512M", "--cpus", "1",
            "--serial", "stdio", "--timeout", "3600", *(["--xen"] if xen else []),
            "--cmdline", "console=ttyS0 quiet"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9, help="runs per case (median; default 9)")
    ap.add_argument("--only", metavar="TEXT", help="only the cases whose name has TEXT (and the baseline)")
    args = ap.parse_args()
    hello = ["run", "--kernel", str(GUESTS / "hello.elf"), "--timeout", "30"]
    smoke = ["run", "--xen", "--kernel", str(GUESTS / "xen_smoke.elf"), "--timeout", "30"]
    for a in (hello, smoke):
        if not Path(a[a.index("--kernel") + 1]).exists():
            raise SystemExit(f"bench/startup.py: {a[a.index('--kernel') + 1]} is missing: run `make guest-images`")
    walls = {
        "python -c pass (baseline)": [PY, "-c", "pass"],
        "import vmm.machine": [PY, "-c", "import vmm.machine"],
        "vmm --version": [PY, "-m", "vmm", "--version"],
        "vmm run hello": [PY, "-m", "vmm", *hello],
        "vmm run --xen xen_smoke": [PY, "-m", "vmm", *smoke],
    }
    firsts = {"vmm run hello": hello, "vmm run --xen xen_smoke": smoke}
    for xen in (False, True):
        a = linux_args(xen)
        if a is not None:
            firsts[f"vmm run {'--xen ' if xen else ''}Linux 512M"] = a
    if args.only:
        walls = {k: v for k, v in walls.items() if args.only in k or k.endswith("(baseline)")}
        firsts = {k: v for k, v in firsts.items() if args.only in k}
    base = median(wall, walls.pop("python -c pass (baseline)"), args.reps)
    print(f"{'wall-clock, spawn to exit':<32} {'median ms':>10} {'x baseline':>11}")
    print(f"{'python -c pass (baseline)':<32} {base * 1e3:>10.1f} {1:>10.2f}x")
    for name, cmd in walls.items():
        t = median(wall, cmd, args.reps)
        print(f"{name:<32} {t * 1e3:>10.1f} {t / base:>10.2f}x")
    print(f"{'spawn to first KVM_RUN':<32} {'median ms':>10} {'x baseline':>11}")
    for name, vmm_args in firsts.items():
        t = median(first_run, vmm_args, args.reps)
        print(f"{name:<32} {t * 1e3:>10.1f} {t / base:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
