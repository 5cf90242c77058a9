"""virtio 1.x devices on the modern PCI transport (virtio 1.2 specification).

* ``abi.py``   — the constants (spec sections, Linux include/uapi/linux/virtio_*.h), once;
* ``queue.py`` — split virtqueues with indirect descriptors and event index, every
  guest-supplied address, index and chain checked;
* ``pci.py``   — the PCI transport: capabilities, common configuration, feature
  negotiation, status and reset, MSI-X / INTx with the ISR, ioeventfd notifications
  served on the device's own thread, irqfd interrupts, the "broken" state, snapshots;
* ``hold.py``  — holding a device thread between requests while a snapshot is taken;
* ``rng.py``   — virtio-rng (``vmm run --virtio-rng``);
* ``blk.py``   — virtio-blk on a host file (``vmm run --drive path=FILE[,readonly]``);
* ``net.py``   — virtio-net on a host tap (``vmm run --net tap=NAME[,mac=MAC]``), whose
  backend is ``tap.py`` (/dev/net/tun with IFF_VNET_HDR).
"""
