"""A Linux tap device as virtio-net's backend (Linux include/uapi/linux/if_tun.h;
Documentation/networking/tuntap.rst).

``open_tap(name)`` opens /dev/net/tun and attaches to the tap ``name`` with
IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: one read() or write() is one Ethernet frame,
preceded by a ``struct virtio_net_hdr_v1`` (TUNSETVNETHDRSZ = 12, the VERSION_1
header with num_buffers), so the virtio-net header crosses unchanged.  TUNSETOFFLOAD
is 0: the kernel hands us fully checksummed, unsegmented frames (we offer the guest
no checksum or segmentation offloads).  The fd is non-blocking (the device thread
polls it).  A tap that does not exist is created (that needs CAP_NET_ADMIN) and goes
away with the fd; the usual set-up is a persistent tap made beforehand
(``ip tuntap add NAME mode tap user USER``), which an unprivileged VMM may open.
Offsets and byte order assume x86-64 (little-endian, ``struct ifreq`` of 40 bytes).

These are the only ioctls outside kvm_bindings (tests/test_layering.py names this
module): tun's, not KVM's, so they need none of the cffi layer.
"""

from __future__ import annotations

import fcntl
import os
import struct

from devices.virtio.abi import (
    IFF_NO_PI,
    IFF_TAP,
    IFF_VNET_HDR,
    IFNAMSIZ,
    IFREQ_FLAGS,
    IFREQ_SIZE,
    TUNGETVNETHDRSZ,
    TUNSETIFF,
    TUNSETOFFLOAD,
    TUNSETVNETHDRSZ,
    VIRTIO_NET_HDR_V1_SIZE,
)

TUN_PATH = "/dev/net/tun"


def check_tap_name(name: str) -> None:
    """ValueError unless ``name`` is a valid interface name (Linux dev_valid_name)."""
    raw = name.encode(errors="replace")
    if not raw:
        raise ValueError("empty tap name")
    if len(raw) >= IFNAMSIZ:
        raise ValueError(f"tap name {name!r} is longer than {IFNAMSIZ - 1} bytes")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise ValueError(f"{name!r} is not an interface name")


def _ifreq(name: str, flags: int) -> bytearray:
    req = bytearray(IFREQ_SIZE)
    raw = name.encode()
    req[:len(raw)] = raw
    struct.pack_into("<H", req, IFREQ_FLAGS, flags)
    return req


def open_tap(name: str) -> tuple[int, str]:
    """(fd, the interface's name).  OSError (with its errno) if it can't be had: no
    /dev/net/tun, no permission, busy (another process holds a single-queue tap), or
    ``name`` is an interface that is not a tap (EINVAL)."""
    check_tap_name(name)
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        req = _ifreq(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, req)
        ifname = bytes(req[:IFNAMSIZ]).split(b"\0", 1)[0].decode()
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("<i", VIRTIO_NET_HDR_V1_SIZE))
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
        got = struct.unpack("<i", fcntl.ioctl(fd, TUNGETVNETHDRSZ, bytes(4)))[0]
        if got != VIRTIO_NET_HDR_V1_SIZE:
            raise OSError(0, f"the tap's vnet header is {got} bytes, not {VIRTIO_NET_HDR_V1_SIZE}")
        return fd, ifname
    except BaseException:
        os.close(fd)
        raise


__all__ = ["open_tap", "check_tap_name", "TUN_PATH"]
