"""Named trace points, declared in one table per package, enabled by glob, free when disabled.

Every point is declared once, in its package's table (QEMU's trace-events file):
``vmm/trace_events.py``, ``devices/trace_events.py``, ``xen/trace_events.py``.  A module
takes its points from there as module-level objects, and call sites guard on the plain
``enabled`` attribute, so a disabled point costs one attribute load and a branch::

    from vmm.trace_events import TP_VCPU_EXIT_IO as TP_EXIT_IO
    ...
    if TP_EXIT_IO.enabled:
        TP_EXIT_IO.emit(cpu, port=port, size=size, dir="out", value=v, count=1, dev=name)

``enable("vcpu.exit.*")`` turns on every point whose name matches, including
points registered later (modules may be imported after the command line is
parsed).  ``emit(cpu, since=t0, ...)`` with ``t0 = trace.now()`` taken when the
work began makes the event a span (a slice in a Perfetto trace); the text output
ignores it.

Two outputs (``open_output``): text, one line per event, QEMU trace-events style
``<seconds> vcpu<N> <name> <fields>`` (stderr or ``--trace-file``); or Chrome/Perfetto
trace-event JSON (``--trace-file x.json``), one track per thread.
"""

from __future__ import annotations

import atexit
import fnmatch
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

# json and zlib (the Perfetto output), string (listing the fields), textwrap (--doc) are
# imported where used: every `vmm` start imports this module, few of them trace.
if TYPE_CHECKING:
    from typing import IO

_points: dict[str, "TracePoint"] = {}
_tables: list["TraceTable"] = []
_patterns: list[str] = []
# The output's lock: a leaf (nothing is taken under it), plain because vmm.locks imports
# vmm.errors, which declares its point through this module.
_lock = threading.Lock()
_t0 = time.monotonic()
now = time.monotonic       # the clock of emit(since=...)


class TracePoint:
    __slots__ = ("name", "fmt", "enabled")

    def __init__(self, name: str, fmt: str):
        self.name = name
        self.fmt = fmt
        self.enabled = False

    def emit(self, cpu: int | None = None, /, since: float | None = None, **fields) -> None:
        _sink.event(self, cpu, since, now(), fields)

    @property
    def fields(self) -> list[str]:
        """The field names of the format, in order (what ``emit`` must be given)."""
        import string
        seen: list[str] = []
        for _, field, _, _ in string.Formatter().parse(self.fmt):
            if field and field not in seen:
                seen.append(field)
        return seen

    def format(self, fields: dict) -> str:
        try:
            return self.fmt.format(**fields)
        except (KeyError, ValueError, TypeError, IndexError) as e:  # a bad format must not kill a vCPU
            return f"{fields!r} (format error: {e})"

    def __repr__(self) -> str:
        return f"<TracePoint {self.name} {'on' if self.enabled else 'off'}>"


def tracepoint(name: str, fmt: str) -> TracePoint:
    """Register (or return the existing) trace point ``name``.  Packages declare theirs
    in a ``TraceTable``; this is for tables and for throwaway points (benchmarks)."""
    tp = _points.get(name)
    if tp is None:
        tp = TracePoint(name, fmt)
        tp.enabled = any(fnmatch.fnmatchcase(name, p) for p in _patterns)
        _points[name] = tp
    return tp


class TraceTable:
    """One package's trace points, declared in one place (its ``trace_events.py``)."""

    def __init__(self, package: str):
        self.package = package
        self.source = f"{package}/trace_events.py"
        self.points: dict[str, TracePoint] = {}
        _tables.append(self)

    def point(self, name: str, fmt: str) -> TracePoint:
        if name in _points:
            raise ValueError(f"trace point {name} declared twice")
        tp = tracepoint(name, fmt)
        self.points[name] = tp
        return tp


def tables() -> list[TraceTable]:
    """The tables imported so far (the CLI imports every package's)."""
    return list(_tables)


def describe(tp: TracePoint) -> str:
    """One line per point, QEMU trace-events style: ``name(field, ...) "format"``."""
    return f'{tp.name}({", ".join(tp.fields)}) "{tp.fmt}"'


def listing(tabs: list[TraceTable]) -> str:
    """What ``vmm trace-points`` prints: every point of every table, with its fields."""
    out = []
    for t in tabs:
        out.append(f"# {t.source}")
        out.extend(describe(tp) for tp in t.points.values())
    return "\n".join(out) + "\n"


def doc_list(tabs: list[TraceTable]) -> str:
    """The names, one Markdown item per table, for ARCHITECTURE.md's Tracing section
    (``vmm trace-points --doc``; tests/test_trace_points.py checks the two agree)."""
    import textwrap
    out = []
    for t in tabs:
        names = ", ".join(f"`{n}`" for n in t.points)
        out.append(textwrap.fill(f"* `{t.source}`: {names}", width=100, subsequent_indent="  ",
                                 break_long_words=False, break_on_hyphens=False))
    return "\n".join(out) + "\n"


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


def points() -> dict[str, TracePoint]:
    return dict(_points)


# ---------------------------------------------------------------- outputs
class TextSink:
    """One line per event: ``<seconds> vcpu<N>|vmm <name> <fields>``."""

    def __init__(self, f: IO[str]):
        self.file = f
        self._closed = False

    def event(self, tp: TracePoint, cpu: int | None, since: float | None, t: float, fields: dict) -> None:
        who = "vmm " if cpu is None else f"vcpu{cpu} "
        line = f"{t - _t0:12.6f} {who}{tp.name} {tp.format(fields)}\n"
        with _lock:
            if self._closed:          # a vCPU still running while the VMM exits
                return
            self.file.write(line)
            self.file.flush()

    def close(self) -> None:
        with _lock:
            if self._closed or self.file in (sys.stderr, sys.stdout, sys.__stderr__):
                return
            self._closed = True
            self.file.close()


def _json_value(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


class PerfettoSink:
    """Chrome trace-event JSON (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU),
    which ui.perfetto.dev and chrome://tracing open: one track per thread (a vCPU, the
    irq-deliver thread, the Xen timers, ...), spans as complete ("X") events, the rest
    as thread-scoped instants ("i").  The closing bracket is written by ``close``, which
    ``open_output`` also registers with atexit, so the file is valid JSON however the
    VM ended (short of SIGKILL)."""

    def __init__(self, f: IO[str], process_name: str = "vmm"):
        import json
        self._dumps = json.dumps
        self.file = f
        self.pid = os.getpid()
        self._tids: dict[str, int] = {}
        self._closed = False
        self._write('{"displayTimeUnit":"ns","traceEvents":[\n')
        self._write(self._dumps({"name": "process_name", "ph": "M", "ts": 0, "pid": self.pid, "tid": 0,
                                "args": {"name": process_name}}))

    def _write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()

    def _tid(self, name: str) -> int:
        """A stable id per thread name (not Python's ident, which threads reuse): vcpuN is
        N + 1, so vCPU tracks sort first; other names hash, probing past collisions."""
        tid = self._tids.get(name)
        if tid is None:
            if name.startswith("vcpu") and name[4:].isdigit():
                tid = int(name[4:]) + 1
            else:
                import zlib
                tid = 10000 + zlib.crc32(name.encode()) % 1000000
            while tid in self._tids.values():
                tid += 1
            self._tids[name] = tid
            self._write(",\n" + self._dumps({"name": "thread_name", "ph": "M", "ts": 0, "pid": self.pid,
                                            "tid": tid, "args": {"name": name}}))
            self._write(",\n" + self._dumps({"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": self.pid,
                                            "tid": tid, "args": {"sort_index": tid}}))
        return tid

    def event(self, tp: TracePoint, cpu: int | None, since: float | None, t: float, fields: dict) -> None:
        thread = threading.current_thread()
        name = "main" if thread is threading.main_thread() else thread.name
        args = {k: _json_value(v) for k, v in fields.items()}
        if cpu is not None:
            args["vcpu"] = cpu
        ev = {"name": tp.name, "cat": tp.name.split(".", 1)[0], "ph": "i", "s": "t",
              "ts": round((t - _t0) * 1e6, 3), "pid": self.pid, "tid": 0, "args": args}
        if since is not None:
            ev["ph"] = "X"
            del ev["s"]
            ev["ts"] = round((since - _t0) * 1e6, 3)
            ev["dur"] = round(max(t - since, 0.0) * 1e6, 3)
        with _lock:
            if self._closed:          # a vCPU still running while the VMM exits
                return
            ev["tid"] = self._tid(name)
            self._write(",\n" + self._dumps(ev))

    def close(self) -> None:
        with _lock:
            if self._closed:
                return
            self._closed = True
            self._write("\n]}\n")
            self.file.close()


_sink: TextSink | PerfettoSink = TextSink(sys.stderr)
FORMATS = ("text", "perfetto")


def set_sink(f: IO[str]) -> None:
    """Text output to ``f`` (tests capture it in a StringIO)."""
    global _sink
    _sink = TextSink(f)


def output_format(path: str | None, fmt: str | None) -> str:
    """``fmt`` if given, else by the file's suffix: ``.json`` is Perfetto JSON."""
    if fmt is not None:
        return fmt
    return "perfetto" if path is not None and path.endswith(".json") else "text"


def open_output(path: str, fmt: str) -> TextSink | PerfettoSink:
    """Send events to ``path`` in ``fmt`` (raises OSError); closed by ``close_output``
    or at interpreter exit."""
    global _sink
    f = open(path, "w", buffering=1)
    _sink = PerfettoSink(f) if fmt == "perfetto" else TextSink(f)
    atexit.register(close_output)
    return _sink


def close_output() -> None:
    """Finish the output (the JSON's closing bracket) and go back to stderr."""
    global _sink
    sink, _sink = _sink, TextSink(sys.stderr)
    sink.close()
