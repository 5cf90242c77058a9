"""The console's output side: the debug port's line sink, the terminal's modes."""

from __future__ import annotations

import os

import pytest

from vmm.console import LineSink
from vmm.errors import UserError


def test_debugcon_sink_writes_whole_lines(tmp_path):
    """Bytes arrive one at a time (one PIO exit each); the sink writes whole lines, a
    line longer than MAX_LINE in pieces, and the last partial line at close."""
    path = tmp_path / "log"
    sink = LineSink(f"file:{path}")
    for b in b"VMM-debug":
        sink.write(bytes((b,)))
    assert path.read_bytes() == b""
    sink.write(b"\nnext")
    assert path.read_bytes() == b"VMM-debug\n"
    sink.write(b"x" * LineSink.MAX_LINE)
    assert path.read_bytes() == b"VMM-debug\nnext" + b"x" * LineSink.MAX_LINE
    sink.write(b"tail")
    sink.close()
    sink.write(b"after close: dropped\n")
    assert path.read_bytes().endswith(b"x" * LineSink.MAX_LINE + b"tail")


def test_debugcon_sink_off_and_bad_specs():
    assert not LineSink("off").enabled
    LineSink("off").write(b"nothing\n")
    for spec in ("stdio", "file:", "tcp:1"):
        with pytest.raises(UserError, match="--debugcon"):
            LineSink(spec)


def test_terminal_output_keeps_post_processing():
    """On a terminal the guest's bare "\n" reaches the screen as "\r\n" (OPOST|ONLCR
    kept, as QEMU's stdio), while input is raw; the terminal's modes come back at exit."""
    import pty
    import select
    import subprocess
    import sys
    import termios
    import time

    from tests.conftest import ROOT, guest_path

    master, slave = pty.openpty()
    before = termios.tcgetattr(master)        # a pty's master and slave share one termios
    try:
        p = subprocess.Popen([sys.executable, "-m", "vmm", "run", "--kernel", guest_path("hello"),
                              "--cmdline", "two lines", "--timeout", "60"],
                             stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=ROOT)
    finally:
        os.close(slave)                       # the VMM holds the only slave fds: EIO at its exit
    out = b""
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:                   # EIO: the VMM exited
                break
            if not data:
                break
            out += data
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert termios.tcgetattr(master) == before
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    assert rc == 0, p.stderr.read().decode(errors="replace")
    assert b"Hello from the kit guest\r\ncmdline: two lines\r\n" in out, out


def test_serial_none_silences_com1_only(vmm, guest):
    """`--serial none` drops COM1's output; a Xen guest's own consoles (here console_io)
    still print on stdout."""
    r = vmm("run", "--xen", "--serial", "none", "--kernel", guest("xen_console"), "--timeout", "60")
    assert r.code == 0, r.err
    assert "XENCON-7f3a hello from CONSOLEIO_write" in r.out
    assert "PASS" not in r.out            # the kit prints its verdict on COM1
