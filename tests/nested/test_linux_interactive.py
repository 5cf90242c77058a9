"""A user at a terminal: `vmm run --xen --kernel … --initrd …` on a pseudo-terminal.

The console is the 16550 (COM1) on the VMM's stdin/stdout in raw mode: typed keys go
to the guest's shell, Ctrl-C interrupts the guest's foreground command (not the VMM),
`poweroff` in the guest ends the VMM with 0.  A guest kernel panic ends it with a
status of its own (vmm.exitcodes.GUEST_PANIC: Linux's pvpanic driver finds the DSDT's
QEMU0001 device and writes PANICKED to it from its panic notifier, before panic=-1
reboots), distinct from a poweroff, a reset, a Xen crash and our errors.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest

from tests.nested.test_linux_boot import boot_linux
from vmm.exitcodes import GUEST_PANIC, GUEST_POWEROFF
from vmm.testhost import packages

pytestmark = [pytest.mark.xen_kvm, pytest.mark.linux_e2e]   # also alone: `make test-linux-e2e`


class Terminal:
    def __init__(self, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(sys.executable, [sys.executable, "-m", "vmm", "run", *args])
        self.out = b""

    def expect(self, needle: bytes, timeout: float) -> None:
        end = time.monotonic() + timeout
        start = len(self.out)
        while needle not in self.out[start:] and time.monotonic() < end:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.out += os.read(self.fd, 65536)
                except OSError:
                    break
        assert needle in self.out[start:], (f"no {needle!r} within {timeout} s; the terminal showed:\n"
                                            + self.out[-3000:].decode(errors="replace"))

    def type(self, text: bytes) -> None:
        for b in text:                   # a key at a time, as typed
            os.write(self.fd, bytes((b,)))
            time.sleep(0.01)

    def wait(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.out += os.read(self.fd, 65536)
                except OSError:
                    pass
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
        self.kill()
        pytest.fail(f"vmm did not end within {timeout} s:\n" + self.out[-3000:].decode(errors="replace"))

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_shell_prompt_ctrl_c_and_poweroff_on_a_terminal(linux_guest):
    t = Terminal("--xen", "--cpus", "2", "--kernel", str(packages.kernel_info().bzimage),
                 "--initrd", str(linux_guest), "--memory", "512M", "--timeout", "900",
                 "--cmdline", "console=ttyS0 quiet panic=-1")
    try:
        t.expect(b"starting a shell", 600)
        t.expect(b"# ", 60)                                    # busybox sh's prompt
        t.type(b"echo TYPED-$((6*7))\r")                       # Enter is CR on a raw terminal
        t.expect(b"TYPED-42", 60)
        t.type(b"sleep 300\r")
        time.sleep(3)
        t.type(b"\x03")                                        # Ctrl-C: the guest's, not ours
        t.type(b"echo AFTER-CTRL-C-$((1+1))\r")
        t.expect(b"AFTER-CTRL-C-2", 90)                        # long before sleep 300 ends
        t.type(b"poweroff\r")
        t.expect(b"linuxguest: poweroff requested", 120)
        code = t.wait(120)
    finally:
        t.kill()
    assert code == GUEST_POWEROFF, t.out[-3000:].decode(errors="replace")
    assert b"internal error" not in t.out


def test_guest_panic_has_its_own_exit_status(linux_guest):
    """sysrq c panics the kernel; panic=-1 would reboot it (exit 80) right after, but the
    pvpanic notifier runs first (on Xen HVM too: Linux 6.1's xen_panic_event only records
    SHUTDOWN_crash for a later reboot unless xen_legacy_crash)."""
    out, p = boot_linux(linux_guest, 'console=ttyS0 quiet panic=-1 -- sh -c "echo c > /proc/sysrq-trigger"',
                        "--xen", "--cpus", "1")
    assert "Kernel panic" in out, out[-3000:]
    assert p.returncode == GUEST_PANIC, (p.returncode, p.stderr[-2000:])
    assert "guest kernel panicked (pvpanic)" in p.stderr, p.stderr[-2000:]
