"""virtio 1.x devices on the modern PCI transport (devices/virtio/), driven by kit guests
on the real /dev/kvm: discovery, feature negotiation, queues, MSI-X and INTx, ioeventfd
notifications and irqfd interrupts, virtio-rng and virtio-blk end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from test_guests import assert_pass


def test_virtio_rng_with_msix_ioeventfd_and_irqfd(vmm, guest):
    r = vmm("run", "--kernel", guest("virtio_rng"), "--virtio-rng", "--timeout", "60",
            "--trace", "virtio.*")
    out, err = r.out, r.err
    assert "virtio_rng: features 0x130000000, queue 0 of 8 entries, MSI-X" in out, out + err[-3000:]
    assert "2 x 64 bytes and 32 through an indirect table, 3 interrupts, not constant" in out
    assert "result=refused" in err and "result=accepted" in err        # VERSION_1 is required
    # Every notification came through KVM's ioeventfd (no MMIO exit), every interrupt
    # through an irqfd.
    assert "virtio.ioeventfd owner=00:01.0 queue=0" in err and "result=assigned" in err
    assert "via=mmio-exit" not in err
    assert err.count("virtio.queue.push") == 4
    assert err.count("via=irqfd") == 3, err[-3000:]
    assert "used_event ahead: answered without an interrupt" in out
    assert err.count("result=suppressed") == 1
    assert_pass(r)


SECTOR = 512


def _disk(path, sectors=128):
    """Sector n filled with byte n (n < 64), 0xee above."""
    with open(path, "wb") as f:
        for n in range(sectors):
            f.write(bytes([n if n < 64 else 0xEE]) * SECTOR)
    return str(path)


def _check_blk_disk(path):
    data = open(path, "rb").read()
    assert len(data) == 128 * SECTOR                          # never grown
    want = bytes((i * 7 + 3) & 0xFF for i in range(1024))
    prefix = b"virtio-blk was here, sectors 10-11"
    want = prefix + b"\0" + want[len(prefix) + 1:]
    assert data[10 * SECTOR:12 * SECTOR] == want               # the OUT, flushed
    assert data[64 * SECTOR:120 * SECTOR] == bytes(56 * SECTOR)    # the DISCARD
    for n in (0, 5, 9, 12, 19, 20, 21, 63):
        assert data[n * SECTOR:(n + 1) * SECTOR] == bytes([n]) * SECTOR, n
    assert data[120 * SECTOR:] == b"\xee" * 8 * SECTOR


@pytest.mark.parametrize("mode", ["msix", "intx"])
def test_virtio_blk_on_a_file(vmm, guest, tmp_path, mode):
    disk = _disk(tmp_path / "disk.img")
    allocated = os.stat(disk).st_blocks * 512
    r = vmm("run", "--kernel", guest("virtio_blk"), "--drive", f"path={disk}", "--timeout", "90",
            "--cmdline", "intx" if mode == "intx" else "", "--trace", "virtio.irq", "--trace", "virtio_blk.req",
            "--trace", "virtio.notify")
    out, err = r.out, r.err
    assert "capacity 128 sectors, blk_size 512, seg_max 254" in out, out + err[-3000:]
    assert "virtio_blk: id 'vmm-disk.img'" in out
    assert "wrote sectors 10-11, flushed, read them back through an indirect table" in out
    assert "beyond the end and partial sectors: IOERR" in out
    assert "discard reads back zeroes; unknown type and flag: UNSUPP" in out
    assert "type=flush sector=0 len=0 status=0" in err
    assert "type=in sector=128 len=512 status=1" in err
    assert "via=mmio-exit" not in err                          # ioeventfd took every notify
    if mode == "intx":
        assert "13 interrupts (ISR queue bit 13" in out
        assert "via=intx" in err and "via=irqfd" not in err
    else:
        assert "13 requests, 13 interrupts (ISR queue bit 0" in out
        assert err.count("via=irqfd") == 13
    assert_pass(r)
    _check_blk_disk(disk)
    # DISCARD frees the file's blocks (fallocate PUNCH_HOLE) rather than writing zeroes:
    # sectors 64-119 hold six whole 4 KiB blocks
    assert os.stat(disk).st_blocks * 512 <= allocated - 6 * 4096, (allocated, os.stat(disk).st_blocks)


def test_virtio_blk_readonly(vmm, guest, tmp_path):
    """,readonly: RO offered and no DISCARD, OUT is IOERR, the file untouched."""
    disk = _disk(tmp_path / "ro.img")
    os.chmod(disk, 0o444)
    before = open(disk, "rb").read()
    r = vmm("run", "--kernel", guest("virtio_blk"), "--drive", f"path={disk},readonly", "--timeout", "60",
            "--cmdline", "ro", "--trace", "virtio_blk.req")
    assert "read-only: OUT refused (IOERR), sectors 10-11 unchanged" in r.out, r.out + r.err[-2000:]
    assert "type=out sector=10 len=1024 status=1" in r.err
    assert_pass(r)
    assert open(disk, "rb").read() == before


def test_virtio_blk_flushed_writes_survive_sigkill(guest, tmp_path):
    """Every block the guest reported as written and flushed is in the file after the VMM
    is SIGKILLed mid-run."""
    disk = tmp_path / "safe.img"
    sectors = 4096
    disk.write_bytes(bytes(sectors * SECTOR))
    cmd = [sys.executable, "-m", "vmm", "run", "--kernel", guest("virtio_blk_flush"), "--drive", f"path={disk}",
           "--timeout", "100"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    reported = []
    deadline = time.monotonic() + 100
    try:
        while len(reported) < 25 and time.monotonic() < deadline:
            line = p.stdout.readline().decode(errors="replace")
            if not line:
                break
            m = re.match(r"virtio_blk_flush: block (\d+) flushed", line)
            if m:
                reported.append(int(m.group(1)))
    finally:
        p.send_signal(signal.SIGKILL)
        rest, err = p.communicate(timeout=30)
    reported += [int(n) for n in re.findall(rb"virtio_blk_flush: block (\d+) flushed", rest)]
    assert p.returncode == -signal.SIGKILL, (p.returncode, err[-2000:])
    assert len(reported) >= 25 and reported == list(range(len(reported))), (reported, err[-2000:])
    assert len(reported) < sectors                             # killed mid-run
    data = disk.read_bytes()
    for n in reported:
        block = bytearray((n * 13 + i) & 0xFF for i in range(SECTOR))
        tag = b"flushed block %04d" % n
        block[:len(tag) + 1] = tag + b"\0"
        assert data[n * SECTOR:(n + 1) * SECTOR] == bytes(block), f"block {n} reported flushed but not in the file"


def test_virtio_hostile_driver_breaks_the_device_not_the_vmm(vmm, guest):
    r = vmm("run", "--kernel", guest("virtio_hostile"), "--virtio-rng", "--timeout", "90",
            "--trace", "virtio.broken")
    out, err = r.out, r.err
    for case, reason in (("ram", "descriptor table 0x1000000000+0x80 is not in guest RAM"),
                         ("loop", "a loop"), ("jump", "avail idx 100 is 100 entries ahead"),
                         ("indirect", "indirect descriptor inside an indirect table"),
                         ("head", "avail ring head 200 is beyond the queue size 8"),
                         ("buffer", "buffer 0x2000000000+0x8 is not in guest RAM")):
        assert f"virtio_hostile: {case}: device broken" in out, out + err[-3000:]
        assert reason in err, reason
    assert err.count("virtio.broken") == 6
    assert "every case broke the device, a reset recovered it" in out
    assert_pass(r)


@pytest.mark.parametrize("drive,needles", [
    ("path=/nonexistent/disk.img", ("--drive: file not found", "/nonexistent/disk.img")),
    ("path=DISK,cache=none", ("--drive: unknown option 'cache=none'",)),
    ("readonly", ("--drive: no path=FILE",)),
    ("path=", ("--drive: path= needs a file name",)),
    ("path=DISK,readonly=yes", ("--drive: unknown option 'readonly=yes'",)),
    ("path=DIR", ("--drive:", "is a directory")),
])
def test_drive_bad_input(vmm, guest, tmp_path, drive, needles):
    from test_cli_errors import assert_user_error
    disk = _disk(tmp_path / "disk.img", sectors=1)
    drive = drive.replace("DISK", disk).replace("DIR", str(tmp_path))
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--drive", drive), *needles)


def test_virtio_needs_pci(vmm, guest, tmp_path):
    from test_cli_errors import assert_user_error
    assert_user_error(vmm("run", "--kernel", guest("hello"), "--no-pci", "--virtio-rng"), "need the PCI bus")


def test_virtio_notify_without_ioeventfd_falls_back_to_the_mmio_exit(vmm, guest):
    """32-bit notify writes don't match the 2-byte ioeventfd: the MMIO handler takes them."""
    r = vmm("run", "--kernel", guest("virtio_rng"), "--virtio-rng", "--timeout", "60", "--cmdline", "notify32",
            "--trace", "virtio.notify")
    assert "2 x 64 bytes and 32 through an indirect table, 3 interrupts" in r.out, r.out + r.err[-3000:]
    assert r.err.count("via=mmio-exit") == 3
    assert_pass(r)
