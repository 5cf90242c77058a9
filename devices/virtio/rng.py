"""virtio-rng, an entropy device (virtio 1.2 §5.4; device ID 4, one queue "requestq").

Each chain's device-writable buffers are filled from ``os.getrandom`` (the host's
kernel CSPRNG) and returned with the bytes written; device-readable buffers are
ignored (§5.4.6.1: the driver only offers writable ones).  No features, no
configuration space.  A request is capped at ``MAX_REQUEST`` bytes (the used length
says how many arrived).  ``vmm run --virtio-rng``.
"""

from __future__ import annotations

import os

from devices.virtio.abi import VIRTIO_ID_RNG
from devices.virtio.pci import VirtioPciDevice
from devices.virtio.queue import Chain, Virtqueue

MAX_REQUEST = 64 << 10


class VirtioRng(VirtioPciDevice):
    virtio_id = VIRTIO_ID_RNG
    class_code = 0xFF0000                     # "other" (QEMU: PCI_CLASS_OTHERS)

    def __init__(self, memory, queue_size: int = 64):
        super().__init__("virtio-rng", memory, num_queues=1, queue_size=queue_size)

    def handle_chain(self, q: Virtqueue, chain: Chain) -> int:
        n = min(chain.in_len, MAX_REQUEST)
        return chain.write(0, os.getrandom(n)) if n else 0


__all__ = ["VirtioRng", "MAX_REQUEST"]
