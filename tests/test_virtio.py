"""virtio 1.x devices on the modern PCI transport (devices/virtio/), driven by kit guests
on the real /dev/kvm: discovery, feature negotiation, queues, MSI-X and INTx, ioeventfd
notifications and irqfd interrupts, virtio-rng and virtio-blk end to end."""

from __future__ import annotations

from test_guests import assert_pass


def test_virtio_rng_with_msix_ioeventfd_and_irqfd(vmm, guest):
    r = vmm("run", "--kernel", guest("virtio_rng"), "--virtio-rng", "--timeout", "60",
            "--trace", "virtio.*")
    out, err = r.out, r.err
    assert "virtio_rng: features 0x130000000, queue 0 of 8 entries, MSI-X" in out, out + err[-3000:]
    assert "2 x 64 bytes and 32 through an indirect table, 3 interrupts, not constant" in out
    assert "result=refused" in err and "result=accepted" in err        # VERSION_1 is required
    # Every notification came through KVM's ioeventfd (no MMIO exit), every interrupt
    # through an irqfd.
    assert "virtio.ioeventfd owner=00:01.0 queue=0" in err and "result=assigned" in err
    assert "via=mmio-exit" not in err
    assert err.count("virtio.queue.push") == 3
    assert err.count("via=irqfd") == 3, err[-3000:]
    assert_pass(r)
