"""The VMM's console: where guest output goes and where guest input comes from.

``--serial stdio`` writes to stdout and reads stdin.  On a terminal only the
input side is raw: output processing (OPOST, with the terminal's ONLCR) stays
on, as QEMU's stdio keeps it, so a guest printing a bare ``\n`` gets a new line
rather than a staircase.  The 0xE9 debug port has a
sink of its own (``--debugcon off|stderr|file:PATH``, as QEMU's ``-debugcon``),
line-buffered and never on stdout: two byte-at-a-time sources on one stream
interleave mid-line (``PPVVHH--``).  On a terminal, stdin is
put in raw mode and Ctrl-A is the escape (as QEMU): Ctrl-A x quits, Ctrl-A
Ctrl-A sends a literal Ctrl-A, Ctrl-A h prints help.  A non-terminal stdin
(a pipe, a file) is forwarded as is until EOF.
"""

from __future__ import annotations

import os
import sys
import termios
import threading
import time
import tty
from typing import Callable

from vmm.errors import UserError, internal_error

CTRL_A = 0x01
HELP = b"\r\nC-a x  exit\r\nC-a C-a  send C-a\r\nC-a h  this help\r\n"


def raw_input_mode(fd: int) -> None:
    """Raw input on the terminal ``fd`` (no echo, no line editing, no signals: Ctrl-C
    goes to the guest), output post-processing kept: tty.setraw also clears OPOST."""
    oflag = termios.tcgetattr(fd)[1]
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[1] = oflag | termios.OPOST
    termios.tcsetattr(fd, termios.TCSAFLUSH, attrs)


def open_sink(spec: str, option: str, streams: dict):
    """An output named on the command line: one of ``streams`` (name -> a standard stream,
    or None for no output) or ``file:PATH``.  Returns (fd, file); bad input is a UserError."""
    if spec in streams:
        stream = streams[spec]
        return (stream.fileno() if stream is not None else None), None
    if spec.startswith("file:") and len(spec) > 5:
        path = spec[5:]
        try:
            return None, open(path, "wb", buffering=0)
        except OSError as e:
            raise UserError(f"{option}: cannot open {path}: {e.strerror}") from None
    raise UserError(f"{option}: expected {', '.join(streams)} or file:PATH, got {spec!r}")


class Console:
    """The guest's console output (``--serial``).  Several guest sources may print to it
    (COM1, Xen's console_io, the PV console): ``source(name)`` gives each its own writer,
    and lines never mix byte by byte.  One source at a time owns the current line; its
    bytes go straight through (so typing echoes at once), another source's bytes wait
    until that line ends, or until the owner has been quiet for ``HANDOVER_S`` (a prompt
    left without a newline); then the waiting source starts on a fresh line."""

    HANDOVER_S = 0.2
    MAX_WAITING = 64 * 1024          # a waiting source's bytes beyond this go out anyway

    def __init__(self, spec: str):
        self.spec = spec
        self._file = None
        self._fd: int | None = None
        self._saved_tty = None
        self._lock = threading.Lock()
        self._fd, self._file = open_sink(spec, "--serial", {"stdio": sys.stdout, "none": None})
        self._mux = threading.Lock()            # owner, waiting buffers (a leaf: only writes under it)
        self._owner: str | None = None          # the source whose line is unfinished on screen
        self._owner_at = 0.0
        self._waiting: dict[str, bytearray] = {}
        self._timer: threading.Timer | None = None

    def source(self, name: str) -> Callable[[bytes], None]:
        return lambda data: self._source_write(name, data)

    def _source_write(self, name: str, data: bytes) -> None:
        with self._mux:
            if self._owner not in (None, name) and time.monotonic() - self._owner_at >= self.HANDOVER_S:
                self._handover()
            if self._owner in (None, name) and not self._waiting.get(name):
                self._emit_as(name, data)
            else:
                buf = self._waiting.setdefault(name, bytearray())
                buf += data
                if len(buf) > self.MAX_WAITING:
                    self._handover()
                self._arm_timer()

    def _emit_as(self, name: str, data: bytes) -> None:
        """Write ``data`` for ``name`` (mux lock held); update who owns the line."""
        if not data:
            return
        self.write(data)
        if data.endswith(b"\n"):
            self._owner = None
            self._flush_waiting()
        else:
            self._owner, self._owner_at = name, time.monotonic()

    def _flush_waiting(self) -> None:
        """The line is free: give it to waiting sources, each up to its last newline."""
        for name, buf in list(self._waiting.items()):
            if self._owner not in (None, name) or not buf:
                continue
            data = bytes(buf)
            buf.clear()
            self._emit_as(name, data)

    def _handover(self) -> None:
        """The owner went quiet mid-line: end its line for it, let the others in."""
        self.write(b"\n")
        self._owner = None
        self._flush_waiting()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            return

        def fire():
            with self._mux:
                self._timer = None
                if any(self._waiting.values()):
                    if self._owner is not None and time.monotonic() - self._owner_at >= self.HANDOVER_S:
                        self._handover()
                    elif self._owner is None:
                        self._flush_waiting()
                    if any(self._waiting.values()):
                        self._arm_timer()
        self._timer = threading.Timer(self.HANDOVER_S, fire)
        self._timer.name = "console-mux"
        self._timer.daemon = True
        self._timer.start()

    def write(self, data: bytes) -> None:
        if self._fd is not None:
            with self._lock:
                try:
                    os.write(self._fd, data)
                except (BlockingIOError, BrokenPipeError):
                    pass
        elif self._file is not None:
            self._file.write(data)

    def start_input(self, feed: Callable[[bytes], None], quit_fn: Callable[[], None]) -> None:
        """Forward stdin to ``feed`` (stdio consoles only) in a daemon thread."""
        if self.spec != "stdio":
            return
        try:
            fd = sys.stdin.fileno()
        except (ValueError, OSError):
            return
        is_tty = os.isatty(fd)
        if is_tty:
            self._saved_tty = (fd, termios.tcgetattr(fd))
            raw_input_mode(fd)
        t = threading.Thread(target=self._reader, args=(fd, is_tty, feed, quit_fn),
                             name="console-input", daemon=True)
        t.start()

    def _reader(self, fd: int, is_tty: bool, feed, quit_fn) -> None:
        try:
            self._read_loop(fd, is_tty, feed, quit_fn)
        except Exception as e:       # a VMM bug (e.g. in the UART's feed): fail the run, loudly
            internal_error("console-input", e)

    def _read_loop(self, fd: int, is_tty: bool, feed, quit_fn) -> None:
        escape = False
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            if not is_tty:
                feed(data)
                continue
            out = bytearray()
            for b in data:
                if escape:
                    escape = False
                    if b in (ord("x"), ord("X")):
                        quit_fn()
                        return
                    if b == CTRL_A:
                        out.append(CTRL_A)
                    elif b in (ord("h"), ord("?")):
                        self.write(HELP)
                elif b == CTRL_A:
                    escape = True
                else:
                    out.append(b)
            if out:
                feed(bytes(out))

    def close(self) -> None:
        with self._mux:                      # what waits for a line goes out now
            if self._timer is not None:
                self._timer.cancel()
            while any(self._waiting.values()):
                self._handover() if self._owner is not None else self._flush_waiting()
        if self._saved_tty is not None:
            fd, attrs = self._saved_tty
            termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
            self._saved_tty = None
        if self._file is not None:
            self._file.close()
            self._file = None


class LineSink:
    """Where the debug port's bytes go (``--debugcon``): ``off``, ``stderr`` or
    ``file:PATH``.  Written a whole line at a time (so a line never mixes with the
    VMM's trace lines on stderr); a line longer than MAX_LINE is cut there, and the
    last partial line is written by ``close()``."""

    MAX_LINE = 4096

    def __init__(self, spec: str, option: str = "--debugcon"):
        self.spec = spec
        self._fd: int | None = None
        self._file = None
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._fd, self._file = open_sink(spec, option, {"stderr": sys.stderr, "off": None})

    @property
    def enabled(self) -> bool:
        return self._fd is not None or self._file is not None

    def write(self, data: bytes) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._buf += data
            end = self._buf.rfind(b"\n") + 1
            if not end and len(self._buf) >= self.MAX_LINE:
                end = len(self._buf)
            if end:
                self._emit(bytes(self._buf[:end]))
                del self._buf[:end]

    def _emit(self, data: bytes) -> None:
        if self._fd is not None:
            try:
                os.write(self._fd, data)
            except (BlockingIOError, BrokenPipeError):
                pass
        elif self._file is not None:
            self._file.write(data)

    def close(self) -> None:
        with self._lock:
            if self._buf:
                self._emit(bytes(self._buf))
                self._buf.clear()
            if self._file is not None:
                self._file.close()
                self._file = None
            self._fd = None
