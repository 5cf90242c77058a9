"""Snapshots of machines with virtio devices, on the real /dev/kvm (issue #13: "virtio queues
when present").

The virtio_snapshot guest keeps virtio-blk (and virtio-rng) busy: batches of writes and
reads of known patterns, every request counted.  It is snapshotted mid-run through the
control socket, each snapshot restored in a new process (which reopens the same disk file)
and snapshotted again; the last restore runs to the end.  The guest itself checks that every
request completed exactly once, with an interrupt, and that the data read back (also what
was written before each snapshot) is what was written; the test checks its counts go on
from where they were, with no second boot.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from conftest import guest_path, run_vmm
from test_snapshot import RunningVmm
from vmm import exitcodes

ROUND = re.compile(r"^round=(\d+) blk=(\d+) rng=(\d+)$", re.M)
# Snapshots of one run (the Xen loop's knob: VMM_SNAPSHOT_LOOPS=20 for a long run).
LOOPS = int(os.environ.get("VMM_SNAPSHOT_LOOPS", "3"))
SECTORS = 256


def _rounds(text: str) -> list[tuple[int, int, int]]:
    return [(int(r), int(b), int(n)) for r, b, n in ROUND.findall(text)]


def _wait_round(vm: RunningVmm, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = vm.out.read_text() if vm.out.exists() else ""
        if any(r >= at_least for r, _, _ in _rounds(text)):
            return
        if vm.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"round {at_least} never showed: {text}\n{vm.errf.read_text()}")


@pytest.mark.parametrize("mode", ["msix", "intx"])
def test_virtio_snapshot_restore_loop(tmp_path, mode):
    """Snapshot the busy guest LOOPS times (once for INTx), each time restoring it in a new
    process; the counts go on (every request once: blk = 8 per round, rng = 1 per round) and
    the guest's final checks pass."""
    loops = LOOPS if mode == "msix" else 1
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(SECTORS * 512))
    rounds = 120 + 60 * loops
    args = ["--drive", f"path={disk}", "--cmdline", f"rounds={rounds}" + (" intx" if mode == "intx" else "")]
    if mode == "msix":
        args.append("--virtio-rng")
    vm = RunningVmm(tmp_path, "--kernel", guest_path("virtio_snapshot"), *args)
    seen = 0
    for i in range(loops):
        snap = tmp_path / f"v{i}.snap"
        text = vm.snapshot_and_end(snap, lambda: _wait_round(vm, seen + 20))
        lines = _rounds(text)
        assert lines and lines[0][0] > seen, (seen, text)
        if i:
            assert "boot" not in text, text
            # Counted on from the last round printed before the snapshot (the next line, or
            # the one after if the snapshot cut a line in half).
            assert lines[0][0] - seen in (10, 20), (seen, lines[:2])
        for r, blk, rng in lines:
            assert blk == 8 * r and rng == (r if mode == "msix" else 0), (r, blk, rng)
        seen = lines[-1][0]
        vm = RunningVmm.restored(tmp_path, snap, f"r{i}", api=i < loops - 1)
    code, err = vm.finish()
    text = vm.out.read_text()
    assert code == 0, (text, err)
    lines = _rounds(text)
    assert "boot" not in text and lines and lines[0][0] - seen in (10, 20), (seen, text)
    assert all(blk == 8 * r for r, blk, _ in lines), lines
    rng = rounds if mode == "msix" else 0
    assert f"virtio_snapshot: {rounds} rounds, {8 * rounds + SECTORS} blk and {rng} rng requests, " \
           "each completed once, data verified" in text, text
    assert "PASS" in text.splitlines()


def test_restore_without_the_drive_file_is_one_line(tmp_path):
    """The snapshot records --drive; a restore reopens that file: gone, it is one line, exit 2."""
    disk = tmp_path / "gone.img"
    disk.write_bytes(bytes(SECTORS * 512))
    vm = RunningVmm(tmp_path, "--kernel", guest_path("virtio_snapshot"), "--drive", f"path={disk}",
                    "--cmdline", "rounds=100000")
    vm.snapshot_and_end(tmp_path / "g.snap", lambda: _wait_round(vm, 10))
    disk.unlink()
    r = run_vmm("restore", "--from", str(tmp_path / "g.snap"), "--timeout", "30", timeout=60)
    lines = r.err.strip().splitlines()
    assert r.code == exitcodes.USER_ERROR and len(lines) == 1, r.err
    assert "--drive (recorded in the snapshot): file not found: " + str(disk) in lines[0]
    # Another size: the guest read its capacity, so that is refused too (one line).
    disk.write_bytes(bytes(8 * 512))
    r = run_vmm("restore", "--from", str(tmp_path / "g.snap"), "--timeout", "30", timeout=60)
    lines = r.err.strip().splitlines()
    assert r.code == exitcodes.USER_ERROR and len(lines) == 1, r.err
    assert f"holds 8 sectors, the saved guest saw {SECTORS}" in lines[0]


def test_requests_posted_before_the_snapshot_are_served_after_it(tmp_path):
    """The guest posts a batch without a notify (as if the device had taken the notification
    and not served it when the snapshot was taken) and waits: nothing serves it in the first
    run; the restored device looks at its rings once on its own and serves it."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(SECTORS * 512))
    vm = RunningVmm(tmp_path, "--kernel", guest_path("virtio_snapshot"), "--drive", f"path={disk}",
                    "--virtio-rng", "--cmdline", "rounds=80 silent=30")

    def unserved() -> None:
        vm.wait_output(r"^virtio_snapshot: round 30: 4 requests posted without a notify$")
        time.sleep(0.5)
        assert max(r for r, _, _ in _rounds(vm.out.read_text())) == 20     # waiting, unserved
    vm.snapshot_and_end(tmp_path / "s.snap", unserved)
    r = run_vmm("restore", "--from", str(tmp_path / "s.snap"), "--timeout", "60")
    assert r.code == 0, r.out + r.err
    assert "boot" not in r.out and _rounds(r.out)[0] == (30, 240, 30), r.out
    assert f"80 rounds, {8 * 80 + SECTORS} blk and 80 rng requests, each completed once" in r.out, r.out
