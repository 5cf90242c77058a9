"""virtio-net backed by a tap device (virtio 1.2 §5.1; Linux include/uapi/linux/virtio_net.h).

Device ID 1, two queues: receiveq0 (0) and transmitq0 (1); no control queue, no
multiqueue.  ``vmm run --net tap=NAME[,mac=52:54:00:xx:xx:xx]``; the tap is opened
by devices/virtio/tap.py (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, a 12-byte
``struct virtio_net_hdr_v1`` before every frame, no offloads).

Features: MAC (config.mac: the given address, or 52:54:00 and three bytes of the tap
name's CRC-32), STATUS (config.status = LINK_UP, never changes), MRG_RXBUF, and the
transport's VERSION_1, INDIRECT_DESC, EVENT_IDX, RING_RESET.  No checksum or
segmentation offloads (CSUM, GUEST_CSUM, HOST_/GUEST_TSO*, UFO are not offered and the
tap's TUNSETOFFLOAD is 0): every frame crosses fully checksummed and at most
``VIRTIO_NET_MAX_PACKET`` bytes.

Transmit (§5.1.6.2).  The transport pops transmitq chains on the driver's notify;
each chain is one packet: the header, then the frame, all device-readable.  The frame
is gathered straight from guest memory and written with one ``writev`` (one frame per
write is the tap's contract).  The header the tap gets is zeroes: with nothing
negotiated, flags and gso_type carry nothing the device may act on (§5.1.6.2.2: the
device ignores flags it doesn't recognise, and a driver that didn't negotiate CSUM or
HOST_TSO* must send flags 0 and GSO_NONE).

Receive (§5.1.6.3, §5.1.6.4).  The device thread polls the tap fd beside the queues'
eventfds (the transport's ``watched_fds``) while the driver has receive buffers.  A
frame is read (one ``readv``) into one fixed buffer of 12 + 65550 bytes, its header
checked (no NEEDS_CSUM, GSO_NONE: what the guest didn't negotiate never reaches it),
then copied into the guest's buffers: one chain without MRG_RXBUF, as many as it
takes with it, ``num_buffers`` saying how many (§5.1.6.4.1).  When the ring runs dry
the device stops reading the tap (the kernel queues up to the tap's txqueuelen and
then drops: nothing is buffered here but the one frame in hand) and resumes at the
driver's next receivequeue notify (with EVENT_IDX, ``avail_event`` asks for it).

What the driver gets wrong, and what it costs (QEMU's choices, hw/net/virtio-net.c):

* a transmit chain with a device-writable buffer, or without a whole header:
  the device is broken (DEVICE_NEEDS_RESET, §2.1.2).  The transmitq holds
  device-readable buffers only (§5.1.6.2); such a chain is not a packet, and the
  ring itself can't be trusted any more (as a virtio-blk request with no header).
* a transmit frame shorter than an Ethernet header or longer than 65550 bytes:
  dropped (used length 0, ``tx_dropped``).  That is the packet's fault, not the
  ring's: a NIC drops runts and giants and carries on.
* a receive chain with a device-readable buffer, or (MRG_RXBUF) a buffer shorter
  than the header (§5.1.6.3.1: "each buffer MUST be at least the size of the struct
  virtio_net_hdr"): broken.
* a receive chain too small for the frame without MRG_RXBUF (§5.1.6.3.1 asks for
  1526-byte buffers), or a frame larger than every buffer of a full ring with it:
  the frame is dropped (``rx_dropped``), the buffers stay for the next.

Trace points: ``virtio_net.rx``, ``virtio_net.tx`` (one line per frame, with its
fate) and ``virtio_net.rx_pause`` (the tap no longer read, or read again).
"""

from __future__ import annotations

import os
import select
import struct
import zlib

from devices.trace_events import (
    TP_VIRTIO_NET_RX as TP_RX,
    TP_VIRTIO_NET_RX_PAUSE as TP_RX_PAUSE,
    TP_VIRTIO_NET_TX as TP_TX,
)
from devices.virtio.abi import (
    ETH_ALEN,
    ETH_HLEN,
    VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_ID_NET,
    VIRTIO_NET_CFG_MAC,
    VIRTIO_NET_CFG_MAX_VIRTQUEUE_PAIRS,
    VIRTIO_NET_CFG_SIZE,
    VIRTIO_NET_CFG_STATUS,
    VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_FLAGS,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TYPE,
    VIRTIO_NET_HDR_NUM_BUFFERS,
    VIRTIO_NET_HDR_V1_SIZE,
    VIRTIO_NET_MAX_PACKET,
    VIRTIO_NET_S_LINK_UP,
    bit,
)
from devices.virtio.pci import VirtioPciDevice
from devices.virtio.queue import Chain, Virtqueue, VirtqueueError, slice_views
from devices.virtio.tap import check_tap_name, open_tap

RX, TX = 0, 1                            # receiveq0, transmitq0 (§5.1.2)
HDR = VIRTIO_NET_HDR_V1_SIZE
RX_BUF_SIZE = HDR + VIRTIO_NET_MAX_PACKET + 1   # one more: a longer frame shows as too long
RX_BATCH = 64                            # frames per hold of the device lock
MAX_IOVECS = 1024                        # IOV_MAX
TX_HDR = bytes(HDR)                      # what the tap gets: no offload negotiated
RETRY = "retry"
MAC_PREFIX = b"\x52\x54\x00"             # QEMU/KVM's locally administered OUI


def parse_mac(text: str) -> bytes:
    """``52:54:00:12:34:56`` -> 6 bytes; ValueError unless six hex pairs of a unicast,
    non-zero address."""
    parts = text.split(":")
    if len(parts) != ETH_ALEN or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                         for p in parts):
        raise ValueError(f"bad MAC address {text!r} (expected six hex pairs, e.g. 52:54:00:12:34:56)")
    mac = bytes(int(p, 16) for p in parts)
    if mac[0] & 1:
        raise ValueError(f"MAC address {text} is a multicast address")
    if not any(mac):
        raise ValueError("MAC address 00:00:00:00:00:00 is not an address")
    return mac


def default_mac(tap: str) -> bytes:
    """52:54:00 and three bytes of the tap name's CRC-32: stable across runs."""
    return MAC_PREFIX + zlib.crc32(tap.encode()).to_bytes(4, "little")[:3]


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class VirtioNet(VirtioPciDevice):
    virtio_id = VIRTIO_ID_NET
    class_code = 0x020000                 # network controller, Ethernet

    def __init__(self, memory, tap: str, mac: bytes | None = None, queue_size: int = 256, fd: int | None = None):
        """Opens the tap (OSError if it can't: the caller reports it).  ``fd``: a backend
        already open that behaves as the tap does (non-blocking, one frame with its
        12-byte header per read or write: tests pass a datagram socket); it is closed
        with the device."""
        self.mac = default_mac(tap) if mac is None else mac
        if fd is None:
            self.fd, self.ifname = open_tap(tap)
        else:
            self.fd, self.ifname = fd, tap
        try:
            self._rx_buf = bytearray(RX_BUF_SIZE)
            self._rx_view = memoryview(self._rx_buf)
            self._rx_len = 0               # a frame read from the tap, not yet in the guest's buffers
            self._rx_paused = False        # the driver ran out of buffers: the tap is not read
            self.tap_error: str | None = None
            self.stats = {"rx_packets": 0, "rx_dropped": 0, "tx_packets": 0, "tx_dropped": 0}
            super().__init__("virtio-net", memory, num_queues=2, queue_size=queue_size)
        except BaseException:
            os.close(self.fd)
            raise

    def device_features(self) -> int:
        return bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS) | bit(VIRTIO_NET_F_MRG_RXBUF)

    def device_config(self) -> bytes:
        cfg = bytearray(VIRTIO_NET_CFG_SIZE)
        cfg[VIRTIO_NET_CFG_MAC:VIRTIO_NET_CFG_MAC + ETH_ALEN] = self.mac
        struct.pack_into("<H", cfg, VIRTIO_NET_CFG_STATUS, VIRTIO_NET_S_LINK_UP)
        struct.pack_into("<H", cfg, VIRTIO_NET_CFG_MAX_VIRTQUEUE_PAIRS, 1)
        return bytes(cfg)

    def device_reset(self) -> None:
        if self._rx_len:
            self._rx_drop(self._rx_len - HDR, "device reset")
        self._rx_paused = False

    def close(self) -> None:
        super().close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ------------------------------------------------------------ snapshot
    def device_save(self) -> dict:
        """Primary: the frame in hand (read from the tap, waiting for receive buffers): the
        tap can't take it back.  The MAC is the spec's; the pause is derived (the restore's
        kick of receiveq looks at the buffers again); counters are the run's own."""
        return {"rx_frame": bytes(self._rx_view[:self._rx_len])}

    def device_restore(self, state: dict) -> None:
        frame = state["rx_frame"]
        if not isinstance(frame, bytes) or len(frame) > RX_BUF_SIZE:
            raise ValueError(f"the saved frame in hand is not up to {RX_BUF_SIZE} bytes")
        self._rx_buf[:len(frame)] = frame
        self._rx_len, self._rx_paused = len(frame), False

    # ------------------------------------------------------------ the device thread's hooks
    def queue_notified(self, q: Virtqueue) -> None:
        if q.index != RX:
            self._service(q)
            return
        with self._lock:
            if self._rx_paused:
                self._rx_paused = False
                if TP_RX_PAUSE.enabled:
                    TP_RX_PAUSE.emit(owner=self.bdf, state="resumed", reason="receiveq notified")
        self._service(q, self._rx_drain_locked)

    def watched_fds(self) -> dict[int, int]:
        q = self.queues[RX]
        if self._rx_paused or self.fd < 0 or self.tap_error is not None or self.broken is not None \
                or not q.enabled or not self.status & VIRTIO_CONFIG_S_DRIVER_OK:
            return {}
        return {self.fd: select.POLLIN}

    def fd_ready(self, fd: int, events: int) -> None:
        self._service(self.queues[RX], self._rx_drain_locked)

    # ------------------------------------------------------------ transmit (device lock held)
    def handle_chain(self, q: Virtqueue, chain: Chain) -> int:
        if q.index != TX:
            raise VirtqueueError(f"queue {q.index}: not the transmit queue")
        if chain.in_len:
            raise VirtqueueError(f"queue {q.index}: transmit chain with {chain.in_len} device-writable bytes")
        if chain.out_len < HDR:
            raise VirtqueueError(f"queue {q.index}: transmit chain of {chain.out_len} bytes has no "
                                 f"{HDR}-byte virtio_net_hdr")
        n = chain.out_len - HDR
        if n < ETH_HLEN or n > VIRTIO_NET_MAX_PACKET:
            return self._tx_drop(n, "runt" if n < ETH_HLEN else f"longer than {VIRTIO_NET_MAX_PACKET} bytes")
        views = slice_views(chain.out, HDR, n)
        iov = [TX_HDR, *views] if len(views) < MAX_IOVECS else [TX_HDR, b"".join(views)]
        try:
            os.writev(self.fd, iov)
        except OSError as e:
            return self._tx_drop(n, f"tap: {e.strerror or e}")
        self.stats["tx_packets"] += 1
        if TP_TX.enabled:
            TP_TX.emit(owner=self.bdf, len=n, result="sent")
        return 0

    def _tx_drop(self, n: int, why: str) -> int:
        self.stats["tx_dropped"] += 1
        if TP_TX.enabled:
            TP_TX.emit(owner=self.bdf, len=n, result=f"dropped: {why}")
        return 0

    # ------------------------------------------------------------ receive (device lock held)
    def _rx_drain_locked(self, q: Virtqueue) -> tuple[bool, bool, bool]:
        """Move frames from the tap into the receive queue; (more to do, pushed any, notify)."""
        pushed = False
        for _ in range(RX_BATCH):
            if self._hold.held:                # a snapshot waits: the tap keeps what arrives
                return True, pushed, pushed and q.needs_notification()
            if not self._rx_len:
                if not q.pending() and not q.publish_avail_event():
                    self._pause_locked("no receive buffers")
                    break
                if not self._read_tap():
                    break
            placed = self._place_locked(q)
            if placed is None:
                break
            pushed |= placed is True
        else:
            return True, pushed, pushed and q.needs_notification()
        return False, pushed, pushed and q.needs_notification()

    def _read_tap(self) -> bool:
        try:
            n = os.readv(self.fd, [self._rx_view])
        except BlockingIOError:
            return False
        except OSError as e:                   # the tap went away (EBADFD): stop reading it
            self.tap_error = e.strerror or str(e)
            if TP_RX_PAUSE.enabled:
                TP_RX_PAUSE.emit(owner=self.bdf, state="paused", reason=f"tap: {self.tap_error}")
            return False
        self._rx_len = n
        return n > 0

    def _pause_locked(self, reason: str) -> None:
        if not self._rx_paused:
            self._rx_paused = True
            if TP_RX_PAUSE.enabled:
                TP_RX_PAUSE.emit(owner=self.bdf, state="paused", reason=reason)

    def _rx_drop(self, n: int, why: str) -> bool:
        self._rx_len = 0
        self.stats["rx_dropped"] += 1
        if TP_RX.enabled:
            TP_RX.emit(owner=self.bdf, len=n, bufs=0, result=f"dropped: {why}")
        return False

    def _place_locked(self, q: Virtqueue):
        """The frame in hand into the guest's buffers: True (pushed), False (dropped), None
        (waiting for buffers: paused, the frame kept), RETRY (buffers came meanwhile)."""
        total, buf = self._rx_len, self._rx_buf
        n = total - HDR
        if n < ETH_HLEN or n > VIRTIO_NET_MAX_PACKET:
            return self._rx_drop(n, "runt" if n < ETH_HLEN else f"longer than {VIRTIO_NET_MAX_PACKET} bytes")
        if buf[VIRTIO_NET_HDR_FLAGS] & VIRTIO_NET_HDR_F_NEEDS_CSUM or \
                buf[VIRTIO_NET_HDR_GSO_TYPE] != VIRTIO_NET_HDR_GSO_NONE:
            return self._rx_drop(n, "an offload the driver didn't negotiate")
        mrg = self.negotiated(VIRTIO_NET_F_MRG_RXBUF)
        chains: list[tuple[Chain, int]] = []
        left = total
        while left:
            c = q.pop()
            if c is None:
                break
            if c.out_len:
                raise VirtqueueError(f"queue {q.index}: receive chain with {c.out_len} device-readable bytes")
            if mrg and c.in_len < HDR:
                raise VirtqueueError(f"queue {q.index}: receive buffer of {c.in_len} bytes, shorter than the "
                                     f"{HDR}-byte virtio_net_hdr")
            take = min(c.in_len, left)
            chains.append((c, take))
            left -= take
            if not mrg:
                break
        if left:
            q.unpop(len(chains))
            if chains and not mrg:
                return self._rx_drop(n, f"receive buffer of {chains[0][0].in_len} bytes")
            if len(chains) >= q.size:
                return self._rx_drop(n, f"larger than the {len(chains)} buffers of a full ring")
            if q.publish_avail_event(q.avail_idx()):
                return RETRY                   # buffers came meanwhile: no notify will say so
            self._pause_locked(f"{len(chains)} receive buffers hold {total - left} of {total} bytes")
            return None
        # §5.1.6.4.1: flags 0 and GSO_NONE without GUEST_CSUM/GUEST_TSO*; num_buffers = chains used.
        buf[:VIRTIO_NET_HDR_NUM_BUFFERS] = bytes(VIRTIO_NET_HDR_NUM_BUFFERS)
        struct.pack_into("<H", buf, VIRTIO_NET_HDR_NUM_BUFFERS, len(chains))
        off = 0
        for c, take in chains:
            c.write(0, self._rx_view[off:off + take])
            q.push(c, take)
            off += take
        self._rx_len = 0
        self.stats["rx_packets"] += 1
        if TP_RX.enabled:
            TP_RX.emit(owner=self.bdf, len=n, bufs=len(chains), result="received")
        return True


__all__ = ["VirtioNet", "parse_mac", "default_mac", "format_mac", "check_tap_name", "RX", "TX", "RX_BUF_SIZE"]
