"""The snapshot file format, declared once, with its writer and its checking reader.

A snapshot is::

    header     magic "VMMSNAP\\0", format version (u32), flags (u32, 0)
    section*   name (16 bytes, NUL-padded ASCII), payload length (u64), CRC32 of the payload (u32),
               kind (u32: JSON or MEMORY), then the payload
    "end"      an empty section: a file without it was cut short

(``construct`` layouts below; little-endian.)  A JSON section holds one subsystem's state as
a JSON object (bytes as ``{"$b": base64}``: :func:`encode`/:func:`decode`).  The MEMORY
section holds guest RAM *sparsely*: runs of non-zero pages, each a run header (gpa u64, length
u64) and the bytes, found and written a chunk (1 MiB) at a time straight from the guest's
mapping -- never a second copy of RAM in memory.  A section's length and CRC are patched
into its header once the payload is written.

Writes go to a temporary file in the target's directory, are fsync'ed, then renamed over the
target (and the directory fsync'ed): a failed snapshot never leaves a file, whole or half,
under the target's name.  The reader (:class:`SnapshotReader`) checks the magic, the version,
every section's framing and CRC before anything uses the file; any problem is a
:class:`SnapshotError` with one line naming it (``vmm restore`` exits 2).

Which state goes into which section, and what is rebuilt rather than saved: ARCHITECTURE.md,
"Snapshots".
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import zlib
from typing import BinaryIO, Iterator

import construct as c

from vmm.trace_events import TP_SNAPSHOT_SECTION

MAGIC = b"VMMSNAP\0"
# 1: the first format.  2: the Xen section holds FIFO event channels and the toolstack's
# xenstore daemon and PV console, and virtio devices are saved (a version-1 file has none of
# them: refused, not half-restored).
FORMAT_VERSION = 2
NAME_LEN = 16
CHUNK = 1 << 20                    # memory is scanned, written, read and checked this much at a time
PAGE = 4096
ZERO_PAGE = bytes(PAGE)
ZERO_CHUNK = bytes(CHUNK)

KIND_JSON = 1
KIND_MEMORY = 2

Header = c.Struct("magic" / c.Bytes(len(MAGIC)), "version" / c.Int32ul, "flags" / c.Int32ul)
SectionHeader = c.Struct("name" / c.PaddedString(NAME_LEN, "ascii"), "length" / c.Int64ul,
                         "crc32" / c.Int32ul, "kind" / c.Int32ul)
RunHeader = c.Struct("gpa" / c.Int64ul, "length" / c.Int64ul)
END = "end"


class SnapshotError(Exception):
    """A snapshot file that can't be used (wrong format, version, truncated, corrupted),
    or one that couldn't be written.  One line."""


# ---------------------------------------------------------------- JSON with bytes
def encode(obj):
    """``obj`` with every bytes value as {"$b": base64} (JSON-able)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def decode(obj):
    if isinstance(obj, dict):
        if set(obj) == {"$b"}:
            return base64.b64decode(obj["$b"])
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


# ---------------------------------------------------------------- memory runs
def nonzero_runs(view: memoryview) -> Iterator[tuple[int, int]]:
    """(offset, length) of the runs of non-zero pages in ``view``, a chunk at a time (untouched
    anonymous memory reads as the shared zero page: scanning doesn't populate it).  A chunk is
    copied to compare it (memcmp; a memoryview compares element by element, 50x slower): one
    chunk's worth of transient memory."""
    run_start = None
    size = len(view)
    for base in range(0, size, CHUNK):
        n = min(CHUNK, size - base)
        chunk = bytes(view[base:base + n])
        if chunk == (ZERO_CHUNK if n == CHUNK else bytes(n)):
            if run_start is not None:
                yield run_start, base - run_start
                run_start = None
            continue
        for off in range(0, n, PAGE):
            page = chunk[off:off + PAGE]
            zero = page == (ZERO_PAGE if len(page) == PAGE else bytes(len(page)))
            if not zero and run_start is None:
                run_start = base + off
            elif zero and run_start is not None:
                yield run_start, base + off - run_start
                run_start = None
    if run_start is not None:
        yield run_start, size - run_start


# ---------------------------------------------------------------- writing
class SnapshotWriter:
    """``with SnapshotWriter(path) as w: w.json(name, state); w.memory(regions)``: the file
    appears under ``path`` only when the block ends without an exception."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        directory = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise SnapshotError(f"{path} is a directory")
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp",
                                             dir=directory)
        except OSError as e:
            raise SnapshotError(f"cannot write a snapshot in {directory}: {e.strerror}") from None
        self._f: BinaryIO = os.fdopen(fd, "wb")
        self.size = 0
        self._f.write(Header.build(dict(magic=MAGIC, version=FORMAT_VERSION, flags=0)))

    def __enter__(self) -> "SnapshotWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._finish()
                return
            except OSError as e:
                self._discard()
                raise SnapshotError(f"cannot write {self.path}: {e.strerror}") from None
        self._discard()
        if isinstance(exc, OSError) and not isinstance(exc, SnapshotError):
            raise SnapshotError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _section(self, name: str, kind: int) -> "_Section":
        if len(name.encode()) > NAME_LEN:
            raise ValueError(f"section name {name!r} is longer than {NAME_LEN}")
        return _Section(self._f, name, kind)

    def json(self, name: str, state) -> None:
        data = json.dumps(encode(state), separators=(",", ":")).encode()
        with self._section(name, KIND_JSON) as s:
            s.write(data)

    def memory(self, regions) -> int:
        """``regions``: (gpa, memoryview) of guest RAM.  Returns the bytes of memory saved."""
        saved = 0
        with self._section("memory", KIND_MEMORY) as s:
            for gpa, view in regions:
                for off, length in nonzero_runs(view):
                    s.write(RunHeader.build(dict(gpa=gpa + off, length=length)))
                    for o in range(off, off + length, CHUNK):
                        s.write(view[o:min(o + CHUNK, off + length)])
                    saved += length
        return saved

    def _finish(self) -> None:
        with self._section(END, KIND_JSON):
            pass
        self._f.flush()
        os.fsync(self._f.fileno())
        self.size = self._f.tell()
        self._f.close()
        os.replace(self._tmp, self.path)
        dfd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _discard(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except OSError:
            pass


class _Section:
    def __init__(self, f: BinaryIO, name: str, kind: int):
        self.f, self.name, self.kind = f, name, kind
        self.at = f.tell()
        self.length = 0
        self.crc = 0
        f.write(SectionHeader.build(dict(name=name, length=0, crc32=0, kind=kind)))

    def write(self, data) -> None:
        self.f.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)

    def __enter__(self) -> "_Section":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        end = self.f.tell()
        self.f.seek(self.at)
        self.f.write(SectionHeader.build(dict(name=self.name, length=self.length, crc32=self.crc, kind=self.kind)))
        self.f.seek(end)
        if TP_SNAPSHOT_SECTION.enabled:
            TP_SNAPSHOT_SECTION.emit(dir="save", name=self.name, bytes=self.length, crc=self.crc)


# ---------------------------------------------------------------- reading
class SnapshotReader:
    """Opens and checks a whole snapshot (framing and every CRC) before handing anything out."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._f: BinaryIO = open(path, "rb")
        except OSError as e:
            raise SnapshotError(f"cannot open snapshot {path}: {e.strerror}") from None
        try:
            self.sections: dict[str, tuple[int, int, int]] = {}     # name -> (offset, length, kind)
            self._check()
        except BaseException:
            self._f.close()
            raise

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "SnapshotReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self) -> None:
        f, path = self._f, self.path
        raw = f.read(Header.sizeof())
        if len(raw) < Header.sizeof() or not raw.startswith(MAGIC):
            raise SnapshotError(f"{path} is not a vmm snapshot (bad magic)")
        hdr = Header.parse(raw)
        if hdr.version != FORMAT_VERSION:
            raise SnapshotError(f"{path} is a version {hdr.version} snapshot; this vmm reads version "
                                f"{FORMAT_VERSION} only")
        file_size = os.fstat(f.fileno()).st_size
        while True:
            at = f.tell()
            raw = f.read(SectionHeader.sizeof())
            if len(raw) < SectionHeader.sizeof():
                raise SnapshotError(f"{path} is truncated (at byte {at}, in a section header)")
            try:
                sh = SectionHeader.parse(raw)
            except (c.ConstructError, UnicodeDecodeError):
                raise SnapshotError(f"{path} is corrupted (a bad section header at byte {at})") from None
            if sh.kind not in (KIND_JSON, KIND_MEMORY) or not sh.name.isprintable() or not sh.name:
                raise SnapshotError(f"{path} is corrupted (a bad section header at byte {at})")
            start = f.tell()
            if start + sh.length > file_size:
                raise SnapshotError(f"{path} is truncated (section {sh.name!r} needs {sh.length} bytes, "
                                    f"{file_size - start} left)")
            crc, left = 0, sh.length
            while left:
                data = f.read(min(CHUNK, left))
                crc = zlib.crc32(data, crc)
                left -= len(data)
            if crc != sh.crc32:
                raise SnapshotError(f"{path} is corrupted (section {sh.name!r}: CRC32 {crc:#010x}, "
                                    f"expected {sh.crc32:#010x})")
            if sh.name == END:
                if f.tell() != file_size:
                    raise SnapshotError(f"{path} is corrupted ({file_size - f.tell()} bytes after the end)")
                return
            if sh.name in self.sections:
                raise SnapshotError(f"{path} is corrupted (section {sh.name!r} twice)")
            self.sections[sh.name] = (start, sh.length, sh.kind)

    def has(self, name: str) -> bool:
        return name in self.sections

    def json(self, name: str):
        if name not in self.sections:
            raise SnapshotError(f"{self.path} has no {name!r} section")
        start, length, kind = self.sections[name]
        self._f.seek(start)
        try:
            state = decode(json.loads(self._f.read(length)))
        except (ValueError, UnicodeDecodeError) as e:
            raise SnapshotError(f"{self.path}: section {name!r} is not valid JSON ({e})") from None
        if TP_SNAPSHOT_SECTION.enabled:
            TP_SNAPSHOT_SECTION.emit(dir="load", name=name, bytes=length, crc="ok")
        return state

    def load_memory(self, view_of) -> int:
        """Copy the memory runs into guest RAM: ``view_of(gpa, length)`` gives a writable view
        (raises ValueError for a range that isn't RAM).  Returns the bytes loaded."""
        start, length, _ = self.sections["memory"]
        f = self._f
        f.seek(start)
        end = start + length
        loaded = 0
        while f.tell() < end:
            raw = f.read(RunHeader.sizeof())
            run = RunHeader.parse(raw)
            if f.tell() + run.length > end:
                raise SnapshotError(f"{self.path} is corrupted (a memory run past its section)")
            try:
                dest = view_of(run.gpa, run.length)
            except ValueError:
                raise SnapshotError(f"{self.path}: memory at {run.gpa:#x}+{run.length:#x} is not RAM of "
                                    f"this machine") from None
            for o in range(0, run.length, CHUNK):
                n = min(CHUNK, run.length - o)
                if f.readinto(dest[o:o + n]) != n:
                    raise SnapshotError(f"{self.path} is truncated (in memory)")
            loaded += run.length
        if TP_SNAPSHOT_SECTION.enabled:
            TP_SNAPSHOT_SECTION.emit(dir="load", name="memory", bytes=loaded, crc="ok")
        return loaded


__all__ = ["FORMAT_VERSION", "MAGIC", "SnapshotError", "SnapshotReader", "SnapshotWriter", "decode", "encode",
           "nonzero_runs"]
