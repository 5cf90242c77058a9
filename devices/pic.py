"""The PC's two 8259A interrupt controllers (master 0x20/0x21, slave 0xA0/0xA1) and ELCR
(0x4D0/0x4D1), for the split irqchip (with the kernel irqchip KVM has its own).

Register behaviour follows the Intel 8259A data sheet (order no. 231468: ICW1-4, OCW1-3,
priority, EOI modes, poll) as QEMU (hw/intc/i8259.c) and KVM (arch/x86/kvm/i8259.c) model
it, whose arithmetic this follows.  Edge or level per IRQ comes from the ELCR (Intel
82371 PIIX "Edge/Level Control Register", 0x4D0/0x4D1; IRQ 0, 1, 2, 8 and 13 are always
edge, as the PIIX's masks 0xF8/0xDE); a level IRQ's IRR follows its line, so a line held
high re-requests after the EOI.  The slave's INT is the master's IRQ 2, modelled as KVM
does: while the slave requests, each update pulses master IRQ 2 (an edge input), so a
second slave request behind the first is not lost.  Not modelled (Linux never uses
them): ICW1's LTIM (all-level mode; the ELCR is how a PC does it), 8080/85 mode (the
vector is always base + IRQ), buffered mode.  A guest's nonsense (ICW4 without ICW1,
OCW2 EOI with nothing in service, reads of write-only state) is handled as the chip or
ignored, never an exception.

Where it sits (ARCHITECTURE.md, "A GSI's path"): ``SplitIrqChip`` drives GSIs 0-15 to
the I/OAPIC *and* here (``set_irq``: ISA IRQ = GSI; GSI 2 is not wired, IRQ 2 is the
cascade), under its line lock.  INT goes to vCPU 0's LINT0 through
``vmm.extint.ExtIntInjector``: on a rising INT the PIC calls ``raise_`` after
releasing its lock, and the injector runs the INTA cycle (``acknowledge``) on vCPU 0's
thread.  An EOI of a level IRQ is reported to the irqchip's EOI listeners (``on_eoi``,
as for the I/OAPIC), also after the lock.

Reset state: what SeaBIOS leaves (src/hw/pic.c pic_setup): initialised, vectors
0x08-0x0F and 0x70-0x77, every IRQ masked but the cascade.  A guest booted directly
(PVH, bzImage) gets the PC a BIOS would hand over, and nothing reaches LINT0 (which
KVM resets in ExtINT mode on the BSP) until the guest unmasks an IRQ.
"""

from __future__ import annotations

from typing import Callable

from devices.trace_events import (
    TP_PIC_WRITE as TP_WRITE,
    TP_PIC_ACK as TP_ACK,
    TP_PIC_EOI as TP_EOI,
)
from vmm.locks import ordered_lock

PIC_MASTER = 0x20
PIC_SLAVE = 0xA0
PIC_SIZE = 2
ELCR_BASE = 0x4D0
ELCR_SIZE = 2
ELCR_MASK = (0xF8, 0xDE)      # PIIX: IRQ 0-2 (master) and 8, 13 (slave) are edge only
CASCADE_IRQ = 2
NR_ISA_IRQS = 16

ICW1 = 0x10                   # command port, bit 4: ICW1 (starts initialisation)
ICW1_IC4 = 0x01               # ICW4 follows
ICW1_SNGL = 0x02              # single (no ICW3)
OCW3 = 0x08                   # command port, bit 3 (bit 4 clear): OCW3, else OCW2
OCW3_POLL = 0x04
OCW3_RR = 0x02                # read register command: RIS (bit 0) picks ISR or IRR
OCW3_ESMM = 0x40              # special mask mode: SMM (bit 5) on or off
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10

# SeaBIOS src/hw/pic.c pic_reset(BIOS_HWIRQ0_VECTOR, BIOS_HWIRQ8_VECTOR) and its mask
BIOS_INIT = ((0x11, 0x08, 0x04, 0x01, 0xFB),     # master: ICW1-4, then IMR (cascade open)
             (0x11, 0x70, 0x02, 0x01, 0xFF))     # slave


def _priority(chip: "I8259", mask: int) -> int:
    """Priority (0 highest) of the best IRQ in ``mask`` given the rotation, 8 for none."""
    if not mask:
        return 8
    p = 0
    while not mask & (1 << ((p + chip.priority_add) & 7)):
        p += 1
    return p


class I8259:
    """One chip.  Not locked: the Pic holds its lock around every call."""

    def __init__(self, master: bool):
        self.master = master
        self.elcr = 0
        self.elcr_mask = ELCR_MASK[0 if master else 1]
        self.pins = 0                    # input levels (QEMU's last_irr)
        self.irr = 0
        self.reset()

    def reset(self) -> None:
        """ICW1's initialisation reset (QEMU pic_reset_common)."""
        self.irr &= self.elcr            # a level request stays; edges are forgotten
        self.pins &= self.elcr
        self.imr = 0
        self.isr = 0
        self.priority_add = 0
        self.irq_base = 0
        self.read_isr = False
        self.poll = False
        self.special_mask = False
        self.init_state = 0              # 0: ready; 1, 2, 3: expecting ICW2, ICW3, ICW4
        self.init4 = False
        self.single = False
        self.auto_eoi = False
        self.rotate_on_auto_eoi = False
        self.sfnm = False

    # ------------------------------------------------------------ requests
    def set_irq(self, irq: int, level: bool) -> None:
        bit = 1 << irq
        if self.elcr & bit:              # level: IRR follows the line
            if level:
                self.irr |= bit
            else:
                self.irr &= ~bit
        elif level and not self.pins & bit:
            self.irr |= bit              # edge: a rising edge latches a request
        self.pins = self.pins | bit if level else self.pins & ~bit

    def get_irq(self) -> int:
        """The IRQ this chip would request now, -1 for none."""
        p = _priority(self, self.irr & ~self.imr)
        if p == 8:
            return -1
        mask = self.isr
        if self.special_mask:
            mask &= ~self.imr
        if self.sfnm and self.master:
            mask &= ~(1 << CASCADE_IRQ)  # special fully nested: the slave may nest
        if p < _priority(self, mask):
            return (p + self.priority_add) & 7
        return -1

    def intack(self, irq: int) -> None:
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        if not self.elcr & (1 << irq):   # a level request is not cleared by the INTA
            self.irr &= ~(1 << irq)

    # ------------------------------------------------------------ registers
    def write_command(self, value: int) -> int | None:
        """Port 0x20/0xA0.  Returns the IRQ an EOI took out of service, if any."""
        if value & ICW1:
            self.reset()
            self.init_state = 1
            self.init4 = bool(value & ICW1_IC4)
            self.single = bool(value & ICW1_SNGL)
            return None
        if value & OCW3:
            if value & OCW3_POLL:
                self.poll = True
            if value & OCW3_RR:
                self.read_isr = bool(value & 1)
            if value & OCW3_ESMM:
                self.special_mask = bool(value & 0x20)
            return None
        cmd = value >> 5                 # OCW2: R SL EOI
        if cmd in (0, 4):                # rotate in auto-EOI mode: clear / set
            self.rotate_on_auto_eoi = cmd == 4
        elif cmd in (1, 5):              # non-specific EOI (5: and rotate)
            p = _priority(self, self.isr)
            if p != 8:
                irq = (p + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if cmd == 5:
                    self.priority_add = (irq + 1) & 7
                return irq
        elif cmd in (3, 7):              # specific EOI (7: and rotate)
            irq = value & 7
            was = self.isr & (1 << irq)
            self.isr &= ~(1 << irq)
            if cmd == 7:
                self.priority_add = (irq + 1) & 7
            return irq if was else None
        elif cmd == 6:                   # set priority: IRQ n lowest
            self.priority_add = (value + 1) & 7
        return None                      # cmd 2: no operation

    def write_data(self, value: int) -> None:
        """Port 0x21/0xA1: OCW1 (IMR), or ICW2-4 during initialisation."""
        if self.init_state == 0:
            self.imr = value
        elif self.init_state == 1:
            self.irq_base = value & 0xF8
            self.init_state = (3 if self.init4 else 0) if self.single else 2
        elif self.init_state == 2:       # ICW3: the cascade wiring, fixed on a PC
            self.init_state = 3 if self.init4 else 0
        else:
            self.sfnm = bool(value & ICW4_SFNM)
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.init_state = 0

    def read(self, port: int) -> int:
        if self.poll:                    # OCW3 poll: the read is the INTA
            self.poll = False
            irq = self.get_irq()
            if irq < 0:
                return 0
            self.intack(irq)
            return 0x80 | irq
        if port == 0:
            return self.isr if self.read_isr else self.irr
        return self.imr

    def write_elcr(self, value: int) -> None:
        self.elcr = value & self.elcr_mask
        # a line switched to level requests at its current level, one switched to edge keeps its request
        self.irr = (self.irr & ~self.elcr) | (self.pins & self.elcr)


class Pic:
    """The master/slave pair.  ``on_eoi(gsi)``: the guest EOI'd a level-triggered IRQ
    (the irqchip's EOI listeners).  ``attach_output(raise_)``: told when INT may have
    risen (vmm.extint.ExtIntInjector.raise_), with no lock held."""

    def __init__(self, on_eoi: Callable[[int], None] | None = None):
        self._lock = ordered_lock("pic")
        self.chips = (I8259(True), I8259(False))
        self._on_eoi = on_eoi
        self._raise: Callable[[], None] | None = None
        self._int = False
        for chip, seq in zip(self.chips, BIOS_INIT):
            chip.write_command(seq[0])
            for v in seq[1:]:
                chip.write_data(v)

    def attach_output(self, raise_: Callable[[], None]) -> None:
        self._raise = raise_

    # ------------------------------------------------------------ snapshot (ARCHITECTURE.md "Snapshots")
    def save(self) -> dict:
        """Primary: both chips' registers (IRR, ISR, IMR, ELCR, ICW state, pin levels) and INT."""
        with self._lock:
            return {"chips": [dict(vars(c)) for c in self.chips], "int": self._int}

    def restore(self, state: dict) -> None:
        with self._lock:
            for chip, s in zip(self.chips, state["chips"]):
                vars(chip).update(s)
            self._int = state["int"]

    def rebuilt(self) -> None:
        """Derived: a pending INT asks vCPU 0 for an interrupt window again (ExtINT injector)."""
        with self._lock:
            level = self._int
        if level and self._raise is not None:
            self._raise()

    def _update(self) -> bool:
        """Lock held: the cascade, then INT.  True if INT rose."""
        master, slave = self.chips
        if slave.get_irq() >= 0:         # KVM's pic_update_irq: pulse master IRQ 2
            master.set_irq(CASCADE_IRQ, True)
            master.set_irq(CASCADE_IRQ, False)
        level = master.get_irq() >= 0
        rose = level and not self._int
        self._int = level
        return rose

    def _after(self, rose: bool, eoi_gsi: int | None) -> None:
        """No lock held: deliver what the update decided."""
        if rose and self._raise is not None:
            self._raise()
        if eoi_gsi is not None and self._on_eoi is not None:
            self._on_eoi(eoi_gsi)

    # ------------------------------------------------------------ the irqchip's side
    def set_irq(self, irq: int, level: bool) -> None:
        """ISA IRQ ``irq`` (0-15, not 2) is at ``level``; called under the irqchip's line lock."""
        if not 0 <= irq < NR_ISA_IRQS or irq == CASCADE_IRQ:
            return
        with self._lock:
            self.chips[irq >> 3].set_irq(irq & 7, level)
            rose = self._update()
        self._after(rose, None)

    # ------------------------------------------------------------ the CPU's side (ExtIntSource)
    def intr(self) -> bool:
        with self._lock:
            return self._int

    def acknowledge(self) -> int | None:
        """INTA (KVM's kvm_pic_read_irq): the vector, IRR -> ISR; None if INT is low."""
        master, slave = self.chips
        with self._lock:
            irq = master.get_irq()
            if irq < 0:
                return None
            master.intack(irq)
            if irq == CASCADE_IRQ:
                irq2 = slave.get_irq()
                if irq2 >= 0:
                    slave.intack(irq2)
                else:
                    irq2 = 7             # the slave's spurious IRQ 7
                vector, isa = slave.irq_base + irq2, 8 + irq2
            else:
                vector, isa = master.irq_base + irq, irq
            self._update()
        if TP_ACK.enabled:
            TP_ACK.emit(irq=isa, vector=vector)
        return vector

    # ------------------------------------------------------------ ports
    def read_port(self, chip: int, port: int) -> int:
        with self._lock:
            v = self.chips[chip].read(port)
            rose = self._update()        # a poll is an INTA
        self._after(rose, None)
        return v

    def write_port(self, chip: int, port: int, value: int) -> None:
        value &= 0xFF
        c = self.chips[chip]
        eoi_gsi = None
        with self._lock:
            if port == 0:
                irq = c.write_command(value)
                if irq is not None and c.elcr & (1 << irq) and not (chip == 0 and irq == CASCADE_IRQ):
                    eoi_gsi = 8 * chip + irq
            else:
                c.write_data(value)
            rose = self._update()
        if TP_WRITE.enabled:
            TP_WRITE.emit(chip="slave" if chip else "master", port=port, value=value)
        if TP_EOI.enabled and eoi_gsi is not None:
            TP_EOI.emit(gsi=eoi_gsi)
        self._after(rose, eoi_gsi)

    def read_elcr(self, chip: int) -> int:
        with self._lock:
            return self.chips[chip].elcr

    def write_elcr(self, chip: int, value: int) -> None:
        with self._lock:
            self.chips[chip].write_elcr(value & 0xFF)
            rose = self._update()
        if TP_WRITE.enabled:
            TP_WRITE.emit(chip="elcr", port=chip, value=value & 0xFF)
        self._after(rose, None)


class PicPorts:
    """One chip's two ports on the PIO bus (offset 0: command, 1: data)."""

    def __init__(self, pic: Pic, chip: int):
        self._pic = pic
        self._chip = chip

    def read(self, offset: int, size: int) -> int:
        return self._pic.read_port(self._chip, offset)

    def write(self, offset: int, size: int, value: int) -> None:
        self._pic.write_port(self._chip, offset, value)


class ElcrPorts:
    """0x4D0 (IRQ 0-7), 0x4D1 (IRQ 8-15)."""

    def __init__(self, pic: Pic):
        self._pic = pic

    def read(self, offset: int, size: int) -> int:
        return self._pic.read_elcr(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        self._pic.write_elcr(offset, value)


__all__ = ["Pic", "I8259", "PicPorts", "ElcrPorts", "PIC_MASTER", "PIC_SLAVE", "PIC_SIZE", "ELCR_BASE", "ELCR_SIZE"]
