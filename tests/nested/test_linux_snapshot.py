"""A Linux Xen guest snapshotted at its shell and restored in a new process (issue 13):
the restored guest runs a command, its `xen-pirq` interrupt counters go on increasing,
its clock continues (and runs at the right rate), and its xenbus still hears the
toolstack: SIGTERM to the restoring VMM writes control/shutdown and the guest powers off.
Once on 2-level event channels with KVM's acceleration (KVM's Xen attributes, timers and
sends rebuilt), once on FIFO (the VMM's FifoAbi state restored).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.nested.test_linux_pirq_matrix import interrupts
from vmm.testhost import packages

pytestmark = pytest.mark.xen_kvm


class Console:
    """A `vmm` process with the guest's console on a pipe each way, read on a thread."""

    def __init__(self, cmd: list[str], log):
        self.log = log
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self.out = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        fd = self.p.stdout.fileno()
        while True:
            if select.select([fd], [], [], 0.5)[0]:
                data = os.read(fd, 65536)
                if not data:
                    return
                with self._lock:
                    self.out += data

    def text(self) -> str:
        with self._lock:
            return self.out.decode(errors="replace").replace("\r\n", "\n")

    def type(self, line: str) -> None:
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def wait_line(self, marker: str, timeout: float) -> str:
        """Wait for ``marker`` as a line of its own (the shell echoes the typed command)."""
        pat = re.compile(rf"^{re.escape(marker)}$", re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.p.poll() is None:
            if pat.search(self.text()):
                return self.text()
            time.sleep(0.2)
        if pat.search(self.text()):
            return self.text()
        raise AssertionError(f"{marker} never showed (exit {self.p.poll()}):\n{self.text()[-3000:]}")

    def end(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
            self._reader.join(5)


BEFORE = ("dmesg -n 1; echo IRQS-BEGIN; cat /proc/interrupts; echo IRQS-END; dmesg | grep xen:events; "
          "echo UPTIME-A=$(cut -d' ' -f1 /proc/uptime) DATE-A=$(date +%s); echo READY-A")
AFTER = ("echo IRQS2-BEGIN; cat /proc/interrupts; echo IRQS2-END; "
         "T0=$(cut -d. -f1 /proc/uptime); sleep 3; T1=$(cut -d. -f1 /proc/uptime); "
         "echo SLEPT=$((T1-T0)) UPTIME-B=$(cut -d' ' -f1 /proc/uptime) DATE-B=$(date +%s); "
         "echo IRQS3-BEGIN; cat /proc/interrupts; echo IRQS3-END; echo READY-B")


@pytest.mark.parametrize("events", ["2-level", "fifo"])
def test_linux_xen_guest_restored_at_its_shell(linux_guest, tmp_path, events):
    sock, snap = str(tmp_path / "api.sock"), tmp_path / "linux.snap"
    extra = ["--xen-fifo", "on"] if events == "fifo" else []
    cmd = [sys.executable, "-m", "vmm", "run", "--kernel", str(packages.kernel_info().bzimage),
           "--initrd", str(linux_guest), "--memory", "512M", "--cpus", "2", "--xen", *extra,
           "--serial", "stdio", "--timeout", "900", "--api-socket", sock,
           "--cmdline", "console=ttyS0 quiet panic=-1"]
    a_err, b_err = tmp_path / "a.err", tmp_path / "b.err"
    a = Console(cmd, open(a_err, "wb"))
    try:
        deadline = time.monotonic() + 600
        while "starting a shell" not in a.text() and time.monotonic() < deadline and a.p.poll() is None:
            time.sleep(0.5)
        assert "starting a shell" in a.text(), a.text()[-3000:] + a_err.read_text()[-3000:]
        a.type(BEFORE)
        before_text = a.wait_line("READY-A", 120)
        r = subprocess.run([sys.executable, "-m", "vmm", "snapshot", "--api-socket", sock, "--to", str(snap)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout, r.stderr)
    finally:
        a.p.kill()                  # the first process is gone for good: nothing of it is reused
        a.end(30)
    abi = "FIFO-based" if events == "fifo" else "2-level"
    assert f"xen:events: Using {abi} ABI" in before_text, before_text[-3000:]

    b = Console([sys.executable, "-m", "vmm", "restore", "--from", str(snap), "--serial", "stdio",
                 "--timeout", "600"], open(b_err, "wb"))
    try:
        b.type(AFTER)
        after_text = b.wait_line("READY-B", 300)
        b.p.send_signal(signal.SIGTERM)           # the toolstack's control/shutdown, heard through xenbus
        code = b.end(300)
    finally:
        if b.p.poll() is None:
            b.end(5)
    text = b.text()
    print(before_text, text, sep="\n---- restored ----\n")
    errs = a_err.read_text(errors="replace") + b_err.read_text(errors="replace")
    print(errs, file=sys.stderr)
    assert "internal error" not in errs and "Traceback" not in errs, errs[-3000:]
    assert "linuxguest: poweroff requested" in text and code == 0, (code, text[-2000:], errs[-2000:])

    first, second, third = interrupts(before_text), interrupts(after_text, "IRQS2-BEGIN", "IRQS2-END"), \
        interrupts(after_text, "IRQS3-BEGIN", "IRQS3-END")
    pirqs = {name for name, (_, chip) in first.items() if "xen-pirq" in chip}
    assert "ttyS0" in pirqs, first                # the UART's GSI 4, as a PIRQ
    for name in pirqs:                            # counters continue, none went back
        assert first[name][0] <= second[name][0] <= third[name][0], (name, first[name], second[name], third[name])
    assert third["ttyS0"][0] > first["ttyS0"][0], (first["ttyS0"], third["ttyS0"])
    timers = [n for n, (_, chip) in first.items() if n.startswith("timer") and "xen" in chip]
    assert timers and all(third[n][0] > first[n][0] for n in timers), (first, third)

    up_a = float(re.search(r"^UPTIME-A=([\d.]+) DATE-A=(\d+)$", before_text, re.M)[1])
    m = re.search(r"^SLEPT=(\d+) UPTIME-B=([\d.]+) DATE-B=(\d+)$", after_text, re.M)
    assert m, after_text[-3000:]
    assert 3 <= int(m[1]) <= 4, m[0]              # the clock runs at its rate after the restore
    assert float(m[2]) > up_a, (up_a, m[0])       # and it continued from where it was
