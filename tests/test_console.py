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
