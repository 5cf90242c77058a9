"""SIGTERM asks a Xen guest to power off, as `xl shutdown` does (vmm/machine.py
GracefulStop): the toolstack writes control/shutdown = poweroff, the guest's xenbus
watch fires, the guest powers off (exit 0).  A guest that doesn't watch the node is
stopped at once (exit 130); one that watches but doesn't act is stopped after
--xen-shutdown-timeout.  The guest is guest-images/tests/xen_xenstore.c with
shutdown=1/2/3."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.test_xen_guests import XENSTORE_ARGS
from vmm import exitcodes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = b"xen_xenstore: waiting for control/shutdown"


def _run_and_term(guest, transport: str, mode: int, *extra: str, ready_s: float = 60, end_s: float = 60):
    cmd = [sys.executable, "-m", "vmm", "run", "--xen", "--xen-hypercalls", transport,
           "--kernel", guest("xen_xenstore"), "--cmdline", f"shutdown={mode}", "--timeout", "150",
           *XENSTORE_ARGS, *extra]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    out = b""
    try:
        deadline = time.monotonic() + ready_s
        while READY not in out and time.monotonic() < deadline and p.poll() is None:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                out += os.read(p.stdout.fileno(), 65536)
        assert READY in out, (p.poll(), out.decode(errors="replace")[-3000:])
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rest, err = p.communicate(timeout=end_s)
        text, err = (out + rest).decode(errors="replace"), err.decode(errors="replace")
        assert "internal error" not in err and "Traceback" not in err, err[-3000:]
        return p.returncode, time.monotonic() - t0, text, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigterm_powers_off_a_guest_that_watches_control_shutdown(guest):
    code, secs, out, err = _run_and_term(guest, "port", 1)
    assert code == exitcodes.GUEST_POWEROFF, (code, out[-2000:], err[-2000:])
    assert "XS-SHUTDOWN poweroff" in out, out[-2000:]


def test_sigterm_stops_a_guest_without_a_watch_at_once(guest):
    code, secs, out, err = _run_and_term(guest, "port", 3)
    assert code == exitcodes.INTERRUPTED, (code, out[-2000:], err[-2000:])
    assert "XS-SHUTDOWN" not in out
    assert secs < 20, secs


def test_sigterm_stops_a_guest_that_ignores_it_after_the_timeout(guest):
    code, secs, out, err = _run_and_term(guest, "port", 2, "--xen-shutdown-timeout", "2")
    assert code == exitcodes.INTERRUPTED, (code, out[-2000:], err[-2000:])
    assert "did not power off within 2 s of SIGTERM" in err, err[-2000:]
    assert secs >= 2, secs


@pytest.mark.xen_kvm
def test_sigterm_powers_off_on_xen_capable_kvm(guest):
    code, secs, out, err = _run_and_term(guest, "kernel", 1, ready_s=240, end_s=120)
    assert code == exitcodes.GUEST_POWEROFF, (code, out[-2000:], err[-2000:])
    assert "XS-SHUTDOWN poweroff" in out, out[-2000:]
