"""Soak: the hypercall fuzz guest (guest-images/tests/xen_fuzz.c) run after run for a while.

Each run is `vmm run --xen --cpus 2 --pci-testdev` of xen_fuzz.elf with the next seed
(rolling from --seed, or from a random start) and `storm=1`: a PIRQ storm underneath (the PCI
test device's timer sends MSI-X messages to a PIRQ bound to an event channel; the guest
re-binds it when the fuzzer closes or steals it, see storm_tick() in xen_fuzz.c).
--no-storm runs the plain fuzzer (no device).  A run fails on a non-zero exit, a FAIL line,
no PASS, or a "vmm: internal error" on stderr (the VMM's own bug report, vmm/errors.py).
Every failure is kept under --keep (stdout+stderr) and its seed printed, so

    .venv/bin/python -m vmm run --xen --cpus 2 --pci-testdev \\
        --kernel guest-images/build/xen_fuzz.elf --cmdline "seed=N calls=M storm=1"

reproduces it (the fuzzer's calls follow the seed; the storm's timing doesn't).  At the
end: runs, hypercalls, calls/s (the guest's own count over the guest's own time, both
vCPUs), errno results, storm events against the device's sent/pended messages, failures.
Exit status 1 if any run failed.

Usage: python bench/fuzz_soak.py [--minutes 10] [--calls 5000] [--cpus 2] [--seed N]
                                 [--transport port|kernel|auto] [--keep DIR] [--no-storm]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUEST = ROOT / "guest-images" / "build" / "xen_fuzz.elf"
SUMMARY = re.compile(r"xen_fuzz: seed=(\d+): (\d+) calls .*?, (\d+) errors, (\d+) down/up, (\d+) ms")
STORM = re.compile(r"xen_fuzz: storm: (\d+) events received \(\+(\d+) on a port lost meanwhile\) from (\d+) sent "
                   r"\+ (\d+) pended .*?port lost (\d+) times.*?stuck-pending kicks (\d+)")
STORM_KEYS = ("events", "unsure", "sent", "pended", "lost", "kicks")


def cmdline(seed: int, args) -> str:
    return f"seed={seed} calls={args.calls}" + (" storm=1" if args.storm else "")


def run_one(seed: int, args) -> tuple[bool, str, dict | None, float]:
    cmd = [sys.executable, "-m", "vmm", "run", "--xen", "--xen-hypercalls", args.transport,
           "--cpus", str(args.cpus), "--kernel", str(GUEST), *(["--pci-testdev"] if args.storm else []),
           "--cmdline", cmdline(seed, args), "--timeout", str(args.run_timeout)]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                           timeout=args.run_timeout + 30, env={**os.environ, "VMM_LOCK_CHECK": "1"})
        out, err, code = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        err = (e.stderr or b"").decode(errors="replace") + "\n[soak: the VMM did not exit]"
        code = -1
    wall = time.monotonic() - t0
    m = SUMMARY.search(out)
    stats = None if m is None else dict(calls=int(m[2]), errors=int(m[3]), downups=int(m[4]), ms=int(m[5]))
    s = STORM.search(out)
    if stats is not None and s is not None:
        stats.update(zip(STORM_KEYS, map(int, s.groups())))
    ok = code == 0 and "PASS" in out and "FAIL" not in out and "vmm: internal error" not in err
    why = "" if ok else f"exit {code}; " + next((line for line in out.splitlines() if "FAIL" in line
                                                  or "EXCEPTION" in line or "UNEXPECTED" in line),
                                                 err.strip().splitlines()[-1] if err.strip() else "")
    if not ok:
        keep = Path(args.keep)
        keep.mkdir(parents=True, exist_ok=True)
        (keep / f"seed-{seed}.out").write_text(out)
        (keep / f"seed-{seed}.err").write_text(err)
    return ok, why, stats, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--calls", type=int, default=5000, help="calls per run on vCPU 0 (vCPU 1 runs alongside)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    ap.add_argument("--transport", default="port", choices=("port", "kernel", "auto"))
    ap.add_argument("--run-timeout", type=int, default=300)
    ap.add_argument("--keep", default="/tmp/xen_fuzz_soak")
    ap.add_argument("--storm", action=argparse.BooleanOptionalAction, default=True,
                    help="PIRQ storm underneath (--pci-testdev, storm=1); default on")
    args = ap.parse_args()
    if not GUEST.exists():
        print(f"{GUEST} is missing: make guest-images", file=sys.stderr)
        return 2

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 32)
    end = time.monotonic() + args.minutes * 60
    runs = calls = errors = ms = downups = 0
    storm = dict.fromkeys(STORM_KEYS, 0)
    failed: list[tuple[int, str]] = []
    print(f"fuzz soak: {args.minutes:g} min, {args.cpus} vCPUs, {args.calls} calls/run, "
          f"seeds from {seed}, transport {args.transport}, PIRQ storm {'on' if args.storm else 'off'}", flush=True)
    while time.monotonic() < end:
        ok, why, stats, wall = run_one(seed, args)
        runs += 1
        if stats:
            calls, errors, ms, downups = calls + stats["calls"], errors + stats["errors"], \
                ms + stats["ms"], downups + stats["downups"]
            for k in STORM_KEYS:
                storm[k] += stats.get(k, 0)
        status = "ok" if ok else f"FAILED ({why})"
        rate = f"{stats['calls'] * 1000 // max(stats['ms'], 1)} calls/s" if stats else "-"
        if stats and "events" in stats:
            rate += (f", storm {stats['events']} events / {stats['sent']} sent + {stats['pended']} pended, "
                     f"port lost {stats['lost']}, kicks {stats['kicks']}")
        print(f"  seed={seed}: {status}, {wall:.1f} s, {rate}", flush=True)
        if not ok:
            failed.append((seed, why))
        seed = (seed + 1) & 0xFFFFFFFF or 1
    rate = calls * 1000 / ms if ms else 0.0
    print(f"fuzz soak: {runs} runs, {calls} hypercalls ({errors} errno results, {downups} vCPU down/up), "
          f"{rate:.0f} calls/s in guest time; {len(failed)} failed run(s)")
    if args.storm:
        print(f"PIRQ storm: {storm['events']} events received (+{storm['unsure']} on ports lost meanwhile) from "
              f"{storm['sent']} sent + {storm['pended']} pended MSI-X messages; storm port lost to the fuzzer "
              f"{storm['lost']} times; {storm['kicks']} stuck-pending kicks")
    for s, why in failed:
        print(f"  FAILED seed={s}: {why}  (outputs in {args.keep}/seed-{s}.*; reproduce: "
              f"--cmdline \"{cmdline(s, args)}\" --cpus {args.cpus}{' --pci-testdev' if args.storm else ''})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
