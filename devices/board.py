"""The standard PC devices of `vmm run`, wired onto a Vm.

    0x060, 0x064   i8042 (reset only)
    0x080          POST code port (ignored)
    0x0e9          debug console (its own sink: `--debugcon`, never the serial stream)
    0x020-0x021    8259 master, 0xa0-0xa1 slave, 0x4d0-0x4d1 ELCR (ours with --irqchip split:
                   GSIs 0-15 reach them too, INT goes to vCPU 0's LINT0 as ExtINT; KVM's otherwise)
    0x040-0x043    i8254 PIT, IRQ 0 (ours with --irqchip split; KVM's in-kernel one otherwise)
    0x061          system control port B: PIT channel 2 gate, OUT2 (with the PIT)
    0x070-0x071    CMOS RTC (no IRQ)
    0x3f8-0x3ff    COM1 16550A, IRQ 4
    0x501          debug-exit (test guests: exit code = value & 0xff)
    0x510-0x51f    testdev (test guests: MSI / GSI requests)
    0x600-0x60f    ACPI fixed hardware (the FADT's): PM1a event (0x600) and control (0x604) blocks,
                   PM timer (0x608), reset register (0x60c); the SCI on ISA IRQ 9 (devices/acpi_pm.py)
    0x610-0x614    PCI interrupt router: \\_PIC's model, links A-D (devices/pci.py; with the PCI bus)
    0xcf8-0xcff    PCI config mechanism #1, bus 0 (devices/pci.py; not with pci=False)
    0xc000-        PCI I/O BARs; PCI memory BARs from 0xc0000000 (assigned at plug time)
    0xfec00000     I/OAPIC, userspace model (--irqchip split only; else KVM's)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from devices.acpi_pm import AcpiPm
from devices.legacy import (DEBUG_EXIT_PORT, DEBUGCON_PORT, I8042_COMMAND, I8042_DATA, POST_PORT,
                            PVPANIC_PORT, TESTDEV_BASE, TESTDEV_SIZE, DebugCon, DebugExit, I8042, PostCode,
                            PvPanic, TestDev)
from devices.ioapic import IoApic, attach_ioapic
from devices.pci import PciBus, attach_pci
from devices.pic import ELCR_BASE, ELCR_SIZE, PIC_MASTER, PIC_SIZE, PIC_SLAVE, ElcrPorts, Pic, PicPorts
from devices.pit import PIT_BASE, PIT_IRQ, PIT_SIZE, PORT_B, Pit, PortB
from devices.rtc import RTC_BASE, RTC_SIZE, CmosRtc
from devices.serial import COM1_BASE, COM1_IRQ, LSR, RBR_THR_DLL, Serial
from vmm import exitcodes
from vmm.boot.acpi import ACPI_PM_BASE, ACPI_PM_SIZE, SCI_IRQ
from vmm.extint import ExtIntInjector
from vmm.vm import Vm


@dataclass
class PcDevices:
    """The PC devices attach_pc_devices plugged."""
    serial: Serial
    testdev: TestDev
    ioapic: IoApic | None = None     # only with the split irqchip
    pci: PciBus | None = None        # unless attach_pc_devices(pci=False)
    pit: Pit | None = None           # only with the split irqchip (KVM has its own); stop() at close
    pic: Pic | None = None           # only with the split irqchip (KVM has its own)
    acpi_pm: AcpiPm | None = None    # stop() at close (its PM timer's SCI timer)
    rtc: CmosRtc | None = None


def attach_pc_devices(vm: Vm, console_out: Callable[[bytes], None], pci: bool = True,
                      debugcon_out: Callable[[bytes], None] | None = None) -> PcDevices:
    """The PC set on ``vm``: COM1 writes to ``console_out``; the 0xE9 debug port to
    ``debugcon_out`` (a sink of its own, never the serial stream: None drops it)."""
    irqchip = vm.irqchip
    ioapic = attach_ioapic(vm) if irqchip.name == "split" else None
    serial = Serial(console_out, irqchip.line(COM1_IRQ, "serial0").set,
                    tx_zone=vm.coalesced.zone(COM1_BASE + RBR_THR_DLL, 1, "serial0"),
                    lsr_read=vm.port_cache.entry(COM1_BASE + LSR, "serial0"))
    reset = lambda: vm.request_exit(exitcodes.GUEST_RESET, "guest reset (i8042)")  # noqa: E731
    guest_exit = lambda code: vm.request_exit(code, f"guest wrote {code:#x} to the debug-exit port")  # noqa: E731
    testdev = TestDev(irqchip)
    acpi_pm = AcpiPm(lambda: vm.request_exit(exitcodes.GUEST_POWEROFF, "guest powered off (ACPI S5)"),
                     lambda: vm.request_exit(exitcodes.GUEST_RESET, "guest reset (ACPI reset register)"),
                     irqchip.line(SCI_IRQ, "acpi-sci").set)
    bus = vm.pio_bus
    bus.register(I8042_DATA, 1, I8042(I8042_DATA, reset), "i8042")
    bus.register(I8042_COMMAND, 1, I8042(I8042_COMMAND, reset), "i8042")
    bus.register(POST_PORT, 1, PostCode(), "post")
    rtc = CmosRtc()
    bus.register(RTC_BASE, RTC_SIZE, rtc, "rtc")
    bus.register(DEBUGCON_PORT, 1, DebugCon(debugcon_out), "debugcon")
    bus.register(COM1_BASE, 8, serial, "serial0")
    bus.register(DEBUG_EXIT_PORT, 1, DebugExit(guest_exit), "debug-exit")
    bus.register(PVPANIC_PORT, 1, PvPanic(lambda: vm.request_exit(exitcodes.GUEST_PANIC, "guest kernel panicked (pvpanic)")),
                 "pvpanic")
    bus.register(TESTDEV_BASE, TESTDEV_SIZE, testdev, "testdev")
    bus.register(ACPI_PM_BASE, ACPI_PM_SIZE, acpi_pm, "acpi-pm")
    pit = pic = None
    if irqchip.name == "split":
        # With the kernel irqchip KVM's in-kernel PIT (KVM_CREATE_PIT2) and PICs answer these
        # ports, 0x61 included (arch/x86/kvm/i8254.c speaker_dev), and never exit to us.
        pic = attach_pic(vm)
        pit = Pit(irqchip.line(PIT_IRQ, "pit"))
        bus.register(PIT_BASE, PIT_SIZE, pit, "pit")
        bus.register(PORT_B, 1, PortB(pit), "port61")
    pci_bus = attach_pci(vm) if pci else None
    return PcDevices(serial, testdev, ioapic, pci_bus, pit, pic, acpi_pm, rtc)


def attach_pic(vm: Vm) -> Pic:
    """The 8259 pair on a split-irqchip Vm: ISA IRQs from the irqchip, INT to vCPU 0's LINT0."""
    irqchip = vm.irqchip
    pic = Pic(on_eoi=irqchip.pic_eoi)
    injector = ExtIntInjector(vm.vcpus[0])
    injector.attach(pic)
    pic.attach_output(injector.raise_)
    irqchip.attach_pic(pic)
    bus = vm.pio_bus
    bus.register(PIC_MASTER, PIC_SIZE, PicPorts(pic, 0), "pic-master")
    bus.register(PIC_SLAVE, PIC_SIZE, PicPorts(pic, 1), "pic-slave")
    bus.register(ELCR_BASE, ELCR_SIZE, ElcrPorts(pic), "elcr")
    return pic
