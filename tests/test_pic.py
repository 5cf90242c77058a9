"""devices/pic.py's 8259A pair and ELCR, without KVM: the state machine through its ports
as the vCPU loop drives them, the irqchip's side (set_irq) and the CPU's (intr/acknowledge).

What a guest sees on /dev/kvm (ExtINT through LINT0) is guest-images/tests/pic.c.
"""

from __future__ import annotations

import random

import pytest

from devices.pic import ElcrPorts, Pic, PicPorts


class Cpu:
    """Counts INT rising edges; EOIs reported to the irqchip are kept."""
    def __init__(self):
        self.raised = 0
        self.eois = []
        self.pic = Pic(on_eoi=self.eois.append)
        self.pic.attach_output(self.raise_)
        self.master = PicPorts(self.pic, 0)
        self.slave = PicPorts(self.pic, 1)
        self.elcr = ElcrPorts(self.pic)

    def raise_(self):
        self.raised += 1

    def linux_init(self, master_base=0x30, slave_base=0x38, auto_eoi=False):
        """arch/x86/kernel/i8259.c init_8259A."""
        m, s = self.master, self.slave
        m.write(1, 1, 0xFF)
        s.write(1, 1, 0xFF)
        m.write(0, 1, 0x11)
        m.write(1, 1, master_base)
        m.write(1, 1, 1 << 2)
        m.write(1, 1, 0x03 if auto_eoi else 0x01)
        s.write(0, 1, 0x11)
        s.write(1, 1, slave_base)
        s.write(1, 1, 2)
        s.write(1, 1, 0x01)


@pytest.fixture
def cpu():
    return Cpu()


def test_reset_state_is_what_seabios_leaves(cpu):
    assert cpu.master.read(1, 1) == 0xFB and cpu.slave.read(1, 1) == 0xFF
    cpu.pic.set_irq(0, True)
    assert not cpu.pic.intr()                         # masked
    cpu.master.write(1, 1, 0xFA)
    assert cpu.pic.intr() and cpu.raised == 1
    assert cpu.pic.acknowledge() == 0x08              # BIOS_HWIRQ0_VECTOR


def test_edge_irq_remap_ack_eoi(cpu):
    cpu.linux_init()
    cpu.master.write(1, 1, 0xFE)                      # unmask IRQ 0
    cpu.pic.set_irq(0, True)
    cpu.pic.set_irq(0, False)
    assert cpu.pic.intr() and cpu.raised == 1
    assert cpu.pic.acknowledge() == 0x30
    assert not cpu.pic.intr()
    cpu.master.write(0, 1, 0x0B)                      # OCW3: read ISR
    assert cpu.master.read(0, 1) == 0x01
    cpu.pic.set_irq(0, True)                          # a second edge while in service: waits
    cpu.pic.set_irq(0, False)
    assert not cpu.pic.intr()
    cpu.master.write(0, 1, 0x20)                      # non-specific EOI
    assert cpu.pic.intr() and cpu.raised == 2
    assert cpu.eois == []                             # edge IRQs are not reported
    cpu.master.write(0, 1, 0x0A)                      # OCW3: read IRR
    assert cpu.master.read(0, 1) == 0x01


def test_imr_masks_and_priority(cpu):
    cpu.linux_init()
    cpu.master.write(1, 1, 0x00)
    cpu.slave.write(1, 1, 0x00)
    cpu.pic.set_irq(4, True)
    cpu.pic.set_irq(1, True)
    assert cpu.pic.acknowledge() == 0x31              # IRQ 1 beats IRQ 4
    assert not cpu.pic.intr()                         # IRQ 4 is lower than the one in service
    cpu.master.write(0, 1, 0x61)                      # specific EOI, IRQ 1
    assert cpu.pic.acknowledge() == 0x34
    cpu.master.write(0, 1, 0x20)
    cpu.master.write(1, 1, 0x10)                      # mask IRQ 4
    cpu.pic.set_irq(4, False)
    cpu.pic.set_irq(4, True)
    assert not cpu.pic.intr()
    cpu.master.write(1, 1, 0x00)
    assert cpu.pic.intr()


def test_slave_through_the_cascade(cpu):
    cpu.linux_init()
    cpu.master.write(1, 1, 0xFB)
    cpu.slave.write(1, 1, 0x00)
    cpu.pic.set_irq(10, True)
    cpu.pic.set_irq(12, True)
    assert cpu.pic.acknowledge() == 0x3A
    cpu.slave.write(0, 1, 0x20)
    cpu.master.write(0, 1, 0x20)
    assert cpu.pic.intr()                             # the second slave request is not lost
    assert cpu.pic.acknowledge() == 0x3C
    assert cpu.pic.set_irq(2, True) is None           # GSI 2 is not wired: IRQ 2 is the cascade


def test_level_irq_via_elcr_reasserts_after_eoi_while_high(cpu):
    cpu.linux_init()
    cpu.elcr.write(1, 1, 0x04)                        # IRQ 10 level
    assert cpu.elcr.read(1, 1) == 0x04
    cpu.master.write(1, 1, 0xFB)
    cpu.slave.write(1, 1, 0xFB)
    cpu.pic.set_irq(10, True)
    for _ in range(3):
        assert cpu.pic.acknowledge() == 0x3A
        assert not cpu.pic.intr()
        cpu.slave.write(0, 1, 0x20)
        cpu.master.write(0, 1, 0x20)
        assert cpu.pic.intr()                         # still high: requests again
    assert cpu.eois == [10, 10, 10]
    assert cpu.pic.acknowledge() == 0x3A
    cpu.pic.set_irq(10, False)
    cpu.slave.write(0, 1, 0x20)
    cpu.master.write(0, 1, 0x20)
    assert not cpu.pic.intr()


def test_elcr_masks_edge_only_irqs(cpu):
    cpu.elcr.write(0, 1, 0xFF)
    cpu.elcr.write(1, 1, 0xFF)
    assert cpu.elcr.read(0, 1) == 0xF8 and cpu.elcr.read(1, 1) == 0xDE


def test_auto_eoi_and_rotation(cpu):
    cpu.linux_init(auto_eoi=True)
    cpu.master.write(1, 1, 0x00)
    cpu.pic.set_irq(3, True)
    assert cpu.pic.acknowledge() == 0x33
    cpu.master.write(0, 1, 0x0B)
    assert cpu.master.read(0, 1) == 0                 # auto-EOI: nothing in service
    cpu.master.write(0, 1, 0xC4)                      # set priority: IRQ 4 lowest, 5 highest
    cpu.pic.set_irq(1, True)
    cpu.pic.set_irq(6, True)
    assert cpu.pic.acknowledge() == 0x36


def test_poll_mode(cpu):
    cpu.linux_init()
    cpu.master.write(1, 1, 0x00)
    cpu.master.write(0, 1, 0x0C)                      # OCW3 poll
    assert cpu.master.read(0, 1) == 0                 # nothing
    cpu.pic.set_irq(5, True)
    cpu.master.write(0, 1, 0x0C)
    assert cpu.master.read(0, 1) == 0x85
    cpu.master.write(0, 1, 0x0B)
    assert cpu.master.read(0, 1) == 0x20              # in service, as after an INTA


def test_hostile_sequences_never_raise(cpu):
    rng = random.Random(5)
    ports = [cpu.master, cpu.slave, cpu.elcr]
    for _ in range(30_000):
        p = rng.choice(ports)
        if rng.random() < 0.6:
            p.write(rng.randrange(2), rng.choice((1, 2, 4)), rng.randrange(1 << 32))
        else:
            p.read(rng.randrange(2), 1)
        r = rng.random()
        if r < 0.2:
            cpu.pic.set_irq(rng.randrange(-2, 20), rng.random() < 0.5)
        elif r < 0.3:
            v = cpu.pic.acknowledge()
            assert v is None or 0 <= v <= 0xFF
    # ICW2-4 written without an ICW1 are OCW1 (IMR) writes
    cpu.master.write(0, 1, 0x11)
    for v in (0x20, 0x04, 0x01, 0x5A):
        cpu.master.write(1, 1, v)
    assert cpu.master.read(1, 1) == 0x5A
