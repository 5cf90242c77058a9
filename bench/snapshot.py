"""Snapshot and restore time and file size vs guest memory (issue #13).

A kit guest (guest-images/tests/snapshot_touch.c) touches TOUCH MiB of a MEMORY guest; the
VMM is snapshotted through its control socket, then the snapshot restored in a new process
(timed until the restored guest's control socket answers).  The file should be near the
touched size, not the memory size (memory is saved sparsely).  Host-runnable on /dev/kvm:

    python bench/snapshot.py [--memory 512] [--touch 64] [--reps 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmm.api import request  # noqa: E402

GUEST = ROOT / "guest-images" / "build" / "snapshot_touch.elf"


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/snapshot.py: {what} took longer than {timeout} s")
        time.sleep(0.02)


def one(tmp: Path, memory: int, touch: int) -> dict:
    sock, out, snap = tmp / "vm.sock", tmp / "console.txt", tmp / "guest.snap"
    for p in (sock, out, snap):
        if p.exists():
            p.unlink()
    vmm = [sys.executable, "-m", "vmm"]
    run = subprocess.Popen([*vmm, "run", "--kernel", str(GUEST), "--memory", f"{memory}M", "--cmdline",
                            f"touch_mb={touch}", "--serial", f"file:{out}", "--api-socket", str(sock),
                            "--timeout", "600"], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: out.exists() and "touched" in out.read_text(), 300, "touching memory")
        t0 = time.monotonic()
        answer = request(str(sock), {"cmd": "snapshot", "to": str(snap)})
        t_snap = time.monotonic() - t0
        assert answer["ok"], answer
        request(str(sock), {"cmd": "shutdown"})
        run.wait(60)
    finally:
        if run.poll() is None:
            run.kill()
    sock2 = tmp / "restored.sock"
    t0 = time.monotonic()
    rest = subprocess.Popen([*vmm, "restore", "--from", str(snap), "--serial", "none", "--api-socket", str(sock2),
                             "--timeout", "600"], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sock2.exists(), 120, "restoring")
        state = request(str(sock2), {"cmd": "status"})["state"]
        t_restore = time.monotonic() - t0
        request(str(sock2), {"cmd": "shutdown"})
        rest.wait(60)
    finally:
        if rest.poll() is None:
            rest.kill()
    return {"memory_mb": memory, "touched_mb": touch, "file_mb": snap.stat().st_size / 2**20,
            "snapshot_s": t_snap, "vmm_snapshot_s": answer["seconds"], "restore_s": t_restore, "state": state}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", type=int, default=512, help="guest memory, MiB (default 512)")
    ap.add_argument("--touch", type=int, default=64, help="memory the guest touches, MiB (default 64)")
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    if not GUEST.exists():
        raise SystemExit(f"{GUEST} is missing: make guest-images")
    with tempfile.TemporaryDirectory(prefix="vmm-bench-snap-") as d:
        for _ in range(args.reps):
            r = one(Path(d), args.memory, args.touch)
            print(f"memory {r['memory_mb']} MiB, touched {r['touched_mb']} MiB: file {r['file_mb']:.1f} MiB "
                  f"({r['file_mb'] / r['memory_mb']:.1%} of memory), snapshot {r['snapshot_s']:.2f} s "
                  f"(VMM side {r['vmm_snapshot_s']:.2f} s), restore to a serving VMM {r['restore_s']:.2f} s "
                  f"[{r['state']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
