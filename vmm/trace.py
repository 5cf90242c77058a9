"""Named trace points, enabled by glob, free when disabled.

A trace point is a module-level object.  Call sites guard on its ``enabled``
attribute, so a disabled point costs one attribute load and a branch::

    TP_EXIT_IO = tracepoint("vcpu.exit.io", "port={port:#x} size={size} dir={dir} value={value:#x} dev={dev}")
    ...
    if TP_EXIT_IO.enabled:
        TP_EXIT_IO.emit(vcpu, port=port, size=size, dir="out", value=v, dev=name)

``enable("vcpu.exit.*")`` turns on every point whose name matches, including
points registered later (modules may be imported after the command line is
parsed).  Output is one line per event, QEMU trace-events style:
``<seconds> vcpu<N> <name> <fields>``.
"""

from __future__ import annotations

import fnmatch
import sys
import threading
import time
from typing import IO

_points: dict[str, "TracePoint"] = {}
_patterns: list[str] = []
_sink: IO[str] = sys.stderr
_lock = threading.Lock()
_t0 = time.monotonic()


class TracePoint:
    __slots__ = ("name", "fmt", "enabled")

    def __init__(self, name: str, fmt: str):
        self.name = name
        self.fmt = fmt
        self.enabled = False

    def emit(self, cpu: int | None = None, **fields) -> None:
        try:
            text = self.fmt.format(**fields)
        except (KeyError, ValueError, TypeError) as e:  # a bad format must not kill a vCPU
            text = f"{fields!r} (format error: {e})"
        who = "vmm " if cpu is None else f"vcpu{cpu} "
        line = f"{time.monotonic() - _t0:12.6f} {who}{self.name} {text}\n"
        with _lock:
            _sink.write(line)
            _sink.flush()

    def __repr__(self) -> str:
        return f"<TracePoint {self.name} {'on' if self.enabled else 'off'}>"


def tracepoint(name: str, fmt: str) -> TracePoint:
    """Register (or return the existing) trace point ``name``."""
    tp = _points.get(name)
    if tp is None:
        tp = TracePoint(name, fmt)
        tp.enabled = any(fnmatch.fnmatchcase(name, p) for p in _patterns)
        _points[name] = tp
    return tp


def enable(pattern: str) -> list[str]:
    """Enable every point matching the glob; returns the names matched so far."""
    _patterns.append(pattern)
    hit = []
    for name, tp in _points.items():
        if fnmatch.fnmatchcase(name, pattern):
            tp.enabled = True
            hit.append(name)
    return hit


def disable_all() -> None:
    _patterns.clear()
    for tp in _points.values():
        tp.enabled = False


def set_sink(f: IO[str]) -> None:
    global _sink
    _sink = f


def points() -> dict[str, TracePoint]:
    return dict(_points)
