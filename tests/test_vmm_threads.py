"""`vmm run` as a process: how it ends when one of its threads hits a VMM bug, and how
the user stops it (SIGINT, SIGTERM, Ctrl-A x on a terminal: exit 130).

A bug is injected the only way a real run can be given one: a tiny wrapper patches
one VMM method to raise, then calls the real `vmm.cli.main` (KVM, the guest and every
thread are real).  Each run is bounded by the VMM's --timeout and a wall-clock limit.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from vmm import exitcodes

_INJECT = """
import sys, importlib
module, cls, meth = sys.argv[1].rsplit(".", 2)
def broken(*args, **kwargs):
    raise RuntimeError("injected VMM bug")
setattr(getattr(importlib.import_module(module), cls), meth, broken)
from vmm.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_with_bug(target: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _INJECT, target, "run", *args], input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, cwd=ROOT)


def assert_failed_on_internal_error(p: subprocess.CompletedProcess, where: str) -> None:
    err = p.stderr.decode(errors="replace")
    ctx = f"\nexit {p.returncode}\nstdout:\n{p.stdout.decode(errors='replace')}\nstderr:\n{err[-3000:]}"
    assert p.returncode == exitcodes.VMM_ERROR, ctx
    assert f"vmm: internal error in {where}" in err, ctx          # the traceback, at once
    summary = [ln for ln in err.splitlines() if ln.startswith("vmm: ") and "internal error(s), first:" in ln]
    assert summary and f"first: {where}" in summary[0] and "injected VMM bug" in summary[0], ctx


def test_xen_timer_thread_bug_fails_the_run(guest):
    """The guest passes (it doesn't depend on the timer's VIRQ), yet the run exits 1."""
    p = run_with_bug("xen.domain.XenDomain.timer_fired", "--xen", "--xen-hypercalls", "port",
                     "--kernel", guest("xen_compat_switch"), "--timeout", "60")
    assert b"PASS" in p.stdout
    assert_failed_on_internal_error(p, "xen-timers")


def test_vcpu_thread_bug_fails_the_run(guest):
    """A device handler raising on the vCPU thread (its catch-all): exit 1, not the guest's 42."""
    p = run_with_bug("devices.legacy.DebugExit.write", "--kernel", guest("exitcode"), "--timeout", "60")
    assert_failed_on_internal_error(p, "vcpu0")


def test_console_input_thread_bug_fails_the_run(guest):
    """stdin (a pipe) reaches Serial.feed, which raises: the run still ends at its
    --timeout, and exits 1 instead of 124."""
    p = run_with_bug("devices.serial.Serial.feed", "--kernel", guest("vmcall"), "--timeout", "3",
                     stdin=b"hello\n")
    assert_failed_on_internal_error(p, "console-input")


# ---------------------------------------------------------------- stopping a run by hand
def _spawn_on_pty(*args: str):
    """`vmm run` with its stdin/stdout/stderr on a pseudo-terminal (raw mode, Ctrl-A escape)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "vmm", "run", *args])
    return pid, fd


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    buf, end = b"", time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf


def _wait(pid: int, fd: int, timeout: float) -> tuple[int, bytes]:
    end, out = time.monotonic() + timeout, b""
    while time.monotonic() < end:
        out += _read_until(fd, b"\0never", 0.2)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            os.close(fd)
            return os.waitstatus_to_exitcode(status), out
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(fd)
    pytest.fail(f"vmm did not end within {timeout} s; output: {out[-2000:]!r}")


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "ctrl-a x"])
def test_user_stop_exits_130(guest, how):
    """vmcall.elf spins in the guest forever (vmcall never returns here), so only the
    user's stop ends it before --timeout (which would be 124)."""
    pid, fd = _spawn_on_pty("--kernel", guest("vmcall"), "--timeout", "60")
    seen = _read_until(fd, b"about to vmcall", 30)
    assert b"about to vmcall" in seen, seen
    if how == "ctrl-a x":
        os.write(fd, b"\x01x")
    else:
        os.kill(pid, getattr(signal, how))
    code, out = _wait(pid, fd, 30)
    assert code == exitcodes.INTERRUPTED, (code, seen + out)
    assert b"interrupted" in out, seen + out
