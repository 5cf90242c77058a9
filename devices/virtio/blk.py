"""virtio-blk backed by a host file (virtio 1.2 §5.2; Linux include/uapi/linux/virtio_blk.h).

Device ID 2, one queue ("requestq"), ``vmm run --drive path=FILE[,readonly]``.

A request (§5.2.6) is a device-readable ``struct virtio_blk_outhdr`` (le32 type,
le32 ioprio, le64 sector), then data (device-readable for OUT, DISCARD and
WRITE_ZEROES; device-writable for IN and GET_ID), then one device-writable status
byte.  The device does not rely on the framing (VERSION_1 implies ANY_LAYOUT):
the header is the first 16 readable bytes and the status the last writable one.

=================  ============================================================
VIRTIO_BLK_T_IN     ``preadv`` straight into the guest's buffers
VIRTIO_BLK_T_OUT    ``pwritev`` straight from them (IOERR if read-only)
VIRTIO_BLK_T_FLUSH  ``fsync``: what was completed before it is on stable storage
VIRTIO_BLK_T_GET_ID the 20-byte ID string (``vmm-`` and the file's name)
VIRTIO_BLK_T_DISCARD one segment (le64 sector, le32 num_sectors, le32 flags): the
                    range's blocks are freed (``fallocate`` PUNCH_HOLE: the file gets
                    sparser, the range reads zeroes -- a discarded range may read as
                    anything, §5.2.6.2)
WRITE_ZEROES        the same segment, zeroed: ZERO_RANGE (blocks stay allocated), or
                    PUNCH_HOLE with VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
=================  ============================================================

Where the file system can't (``EOPNOTSUPP``), zeroes are written instead, in 1 MiB steps.

Checks (§5.2.6.2): the data of IN/OUT a multiple of 512 bytes, every range inside
the disk (``capacity`` = file size // 512, fixed at start), segments within the
advertised limits, known flags: otherwise VIRTIO_BLK_S_IOERR (or UNSUPP for a type
or flag we don't do).  A request without a header or a status byte can't even be
answered: that breaks the device (queue.VirtqueueError), as in QEMU.

Data safety: a write is in the file (the host's page cache) before its used
element is published, so it survives the VMM being killed; FLUSH adds ``fsync``
for the host crashing.  No write cache in userspace, so CONFIG_WCE is not offered.

Features: SEG_MAX (queue size - 2), BLK_SIZE (512), FLUSH, RO (with ``readonly``),
DISCARD and WRITE_ZEROES (writable disks only).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from devices.trace_events import TP_VIRTIO_BLK_REQ as TP_REQ
from devices.virtio.abi import (
    VIRTIO_BLK_CFG_BLK_SIZE,
    VIRTIO_BLK_CFG_CAPACITY,
    VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT,
    VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS,
    VIRTIO_BLK_CFG_MAX_DISCARD_SEG,
    VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS,
    VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG,
    VIRTIO_BLK_CFG_NUM_QUEUES,
    VIRTIO_BLK_CFG_SEG_MAX,
    VIRTIO_BLK_CFG_SIZE,
    VIRTIO_BLK_DISCARD_SEG_SIZE,
    VIRTIO_BLK_F_BLK_SIZE,
    VIRTIO_BLK_F_DISCARD,
    VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_WRITE_ZEROES,
    VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_OUTHDR_SIZE,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_SECTOR_SIZE,
    VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
    VIRTIO_ID_BLOCK,
    bit,
)
from devices.virtio.pci import VirtioPciDevice
from devices.virtio.queue import Chain, Virtqueue, VirtqueueError, slice_views

_OUTHDR = struct.Struct("<IIQ")
_SEGMENT = struct.Struct("<QII")
MAX_DISCARD_SECTORS = 1 << 22            # 2 GiB per segment
MAX_DISCARD_SEG = 1
MAX_IOVECS = 1024                        # IOV_MAX: preadv/pwritev take no more buffers
_ZEROES = bytes(1 << 20)
# include/uapi/linux/falloc.h
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with a mode (os.posix_fallocate has none); OSError on failure."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
TYPE_NAMES = {VIRTIO_BLK_T_IN: "in", VIRTIO_BLK_T_OUT: "out", VIRTIO_BLK_T_FLUSH: "flush",
              VIRTIO_BLK_T_GET_ID: "get_id", VIRTIO_BLK_T_DISCARD: "discard",
              VIRTIO_BLK_T_WRITE_ZEROES: "write_zeroes"}


class VirtioBlk(VirtioPciDevice):
    virtio_id = VIRTIO_ID_BLOCK
    class_code = 0x010000                 # mass storage, SCSI (as QEMU's virtio-blk)

    def __init__(self, memory, path: str, readonly: bool = False, queue_size: int = 256):
        """Opens ``path`` (OSError if it can't: the caller reports it)."""
        self.path = path
        self.readonly = readonly
        self.fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        try:
            self.capacity = os.fstat(self.fd).st_size // VIRTIO_BLK_SECTOR_SIZE
            self.queue_size = queue_size
            name = os.path.basename(path).encode(errors="replace")
            self.serial = (b"vmm-" + name)[:VIRTIO_BLK_ID_BYTES]
            super().__init__("virtio-blk", memory, num_queues=1, queue_size=queue_size)
        except BaseException:
            os.close(self.fd)
            raise

    def device_features(self) -> int:
        f = bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH)
        if self.readonly:
            return f | bit(VIRTIO_BLK_F_RO)
        return f | bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES)

    def device_config(self) -> bytes:
        cfg = bytearray(VIRTIO_BLK_CFG_SIZE)
        struct.pack_into("<Q", cfg, VIRTIO_BLK_CFG_CAPACITY, self.capacity)
        struct.pack_into("<I", cfg, VIRTIO_BLK_CFG_SEG_MAX, self.queue_size - 2)
        struct.pack_into("<I", cfg, VIRTIO_BLK_CFG_BLK_SIZE, VIRTIO_BLK_SECTOR_SIZE)
        struct.pack_into("<H", cfg, VIRTIO_BLK_CFG_NUM_QUEUES, 1)
        if not self.readonly:
            for sectors, segs in ((VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, VIRTIO_BLK_CFG_MAX_DISCARD_SEG),
                                  (VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS, VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG)):
                struct.pack_into("<I", cfg, sectors, MAX_DISCARD_SECTORS)
                struct.pack_into("<I", cfg, segs, MAX_DISCARD_SEG)
            struct.pack_into("<I", cfg, VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT, 1)
        return bytes(cfg)

    def close(self) -> None:
        super().close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ------------------------------------------------------------ snapshot
    def device_save(self) -> dict:
        """No state of its own (the configuration follows from the file); the capacity the
        guest read, so a restore onto a file of another size is refused rather than served."""
        return {"capacity": self.capacity}

    def device_restore(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"--drive {self.path} holds {self.capacity} sectors, the saved guest "
                             f"saw {state['capacity']}")

    # ------------------------------------------------------------ requests (device lock held)
    def handle_chain(self, q: Virtqueue, chain: Chain) -> int:
        if chain.out_len < VIRTIO_BLK_OUTHDR_SIZE or chain.in_len < 1:
            raise VirtqueueError(f"queue {q.index}: virtio-blk request of {chain.out_len} readable and "
                                 f"{chain.in_len} writable bytes has no header or no status byte")
        rtype, _ioprio, sector = _OUTHDR.unpack(chain.read(0, VIRTIO_BLK_OUTHDR_SIZE))
        data_len = chain.in_len - 1 if rtype in (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_GET_ID) \
            else chain.out_len - VIRTIO_BLK_OUTHDR_SIZE
        written = 0
        try:
            status, written = self._request(rtype, sector, chain)
        except OSError:
            status = VIRTIO_BLK_S_IOERR
        if status != VIRTIO_BLK_S_OK:
            written = 0
        chain.write(chain.in_len - 1, bytes([status]))
        if TP_REQ.enabled:
            TP_REQ.emit(owner=self.bdf, type=TYPE_NAMES.get(rtype, rtype), sector=sector, len=data_len,
                        status=status)
        return written + 1

    def _range_ok(self, sector: int, nbytes: int) -> bool:
        return nbytes % VIRTIO_BLK_SECTOR_SIZE == 0 and \
            sector + nbytes // VIRTIO_BLK_SECTOR_SIZE <= self.capacity

    def _request(self, rtype: int, sector: int, chain: Chain) -> tuple[int, int]:
        """(status, data bytes written into the chain)."""
        if rtype == VIRTIO_BLK_T_IN:
            n = chain.in_len - 1
            if not self._range_ok(sector, n):
                return VIRTIO_BLK_S_IOERR, 0
            views = slice_views(chain.in_, 0, n)
            if len(views) > MAX_IOVECS:
                return VIRTIO_BLK_S_IOERR, 0
            got = os.preadv(self.fd, views, sector * VIRTIO_BLK_SECTOR_SIZE) if n else 0
            return (VIRTIO_BLK_S_OK, n) if got == n else (VIRTIO_BLK_S_IOERR, 0)
        if rtype == VIRTIO_BLK_T_OUT:
            n = chain.out_len - VIRTIO_BLK_OUTHDR_SIZE
            if self.readonly or not self._range_ok(sector, n):
                return VIRTIO_BLK_S_IOERR, 0
            views = slice_views(chain.out, VIRTIO_BLK_OUTHDR_SIZE, n)
            if len(views) > MAX_IOVECS:
                return VIRTIO_BLK_S_IOERR, 0
            self._pwritev_all(views, sector * VIRTIO_BLK_SECTOR_SIZE)
            return VIRTIO_BLK_S_OK, 0
        if rtype == VIRTIO_BLK_T_FLUSH:
            os.fsync(self.fd)
            return VIRTIO_BLK_S_OK, 0
        if rtype == VIRTIO_BLK_T_GET_ID:
            n = min(chain.in_len - 1, VIRTIO_BLK_ID_BYTES)
            ident = self.serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")[:n]
            return VIRTIO_BLK_S_OK, chain.write(0, ident)
        if rtype in (VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES):
            feature = VIRTIO_BLK_F_DISCARD if rtype == VIRTIO_BLK_T_DISCARD else VIRTIO_BLK_F_WRITE_ZEROES
            if not self.negotiated(feature):
                return VIRTIO_BLK_S_UNSUPP, 0
            return self._discard(rtype, chain), 0
        return VIRTIO_BLK_S_UNSUPP, 0

    def _discard(self, rtype: int, chain: Chain) -> int:
        n = chain.out_len - VIRTIO_BLK_OUTHDR_SIZE
        if n == 0 or n % VIRTIO_BLK_DISCARD_SEG_SIZE or n // VIRTIO_BLK_DISCARD_SEG_SIZE > MAX_DISCARD_SEG:
            return VIRTIO_BLK_S_IOERR
        segments = []
        for i in range(n // VIRTIO_BLK_DISCARD_SEG_SIZE):
            raw = chain.read(VIRTIO_BLK_OUTHDR_SIZE + i * VIRTIO_BLK_DISCARD_SEG_SIZE, VIRTIO_BLK_DISCARD_SEG_SIZE)
            sector, count, flags = _SEGMENT.unpack(raw)
            allowed = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if rtype == VIRTIO_BLK_T_WRITE_ZEROES else 0
            if flags & ~allowed:
                return VIRTIO_BLK_S_UNSUPP          # §5.2.6.2: unknown flags, or unmap on a discard
            if count > MAX_DISCARD_SECTORS or not self._range_ok(sector, count * VIRTIO_BLK_SECTOR_SIZE):
                return VIRTIO_BLK_S_IOERR
            segments.append((sector, count, flags))
        for sector, count, flags in segments:
            offset, length = sector * VIRTIO_BLK_SECTOR_SIZE, count * VIRTIO_BLK_SECTOR_SIZE
            unmap = rtype == VIRTIO_BLK_T_DISCARD or flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE if unmap else FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
            if length:
                self._zero_range(mode, offset, length)
        return VIRTIO_BLK_S_OK

    def _zero_range(self, mode: int, offset: int, length: int) -> None:
        try:
            fallocate(self.fd, mode, offset, length)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        while length:                               # a file system without it (e.g. some FUSE)
            k = os.pwrite(self.fd, _ZEROES[:min(length, len(_ZEROES))], offset)
            offset += k
            length -= k

    def _pwritev_all(self, views: list[memoryview], offset: int) -> None:
        while views:
            k = os.pwritev(self.fd, views, offset)
            if k <= 0:
                raise OSError("short write")
            offset += k
            while views and k >= len(views[0]):
                k -= len(views[0])
                views = views[1:]
            if views and k:
                views = [views[0][k:], *views[1:]]


__all__ = ["VirtioBlk", "MAX_DISCARD_SECTORS", "MAX_DISCARD_SEG"]
