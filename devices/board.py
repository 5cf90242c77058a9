"""The standard PC devices of `vmm run`, wired onto a Vm.

    0x060, 0x064   i8042 (reset only)
    0x080          POST code port (ignored)
    0x0e9          debug console
    0x3f8-0x3ff    COM1 16550A, IRQ 4
    0x501          debug-exit (test guests: exit code = value & 0xff)
    0x510-0x51f    testdev (test guests: MSI / GSI requests)
    0xfec00000     I/OAPIC, userspace model (--irqchip split only; else KVM's)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from devices.legacy import (DEBUG_EXIT_PORT, DEBUGCON_PORT, I8042_COMMAND, I8042_DATA, POST_PORT,
                            TESTDEV_BASE, TESTDEV_SIZE, DebugCon, DebugExit, I8042, PostCode, TestDev)
from devices.ioapic import IoApic, attach_ioapic
from devices.serial import COM1_BASE, COM1_IRQ, Serial
from vmm import exitcodes
from vmm.vm import Vm


@dataclass
class PcDevices:
    serial: Serial
    testdev: TestDev
    ioapic: IoApic | None = None     # only with the split irqchip


def attach_pc_devices(vm: Vm, console_out: Callable[[bytes], None]) -> PcDevices:
    irqchip = vm.irqchip
    ioapic = attach_ioapic(vm) if irqchip.name == "split" else None
    serial = Serial(console_out, lambda level: irqchip.set_gsi(COM1_IRQ, level))
    reset = lambda: vm.request_exit(exitcodes.GUEST_RESET, "guest reset (i8042)")  # noqa: E731
    guest_exit = lambda code: vm.request_exit(code, f"guest wrote {code:#x} to the debug-exit port")  # noqa: E731
    testdev = TestDev(irqchip.send_msi, irqchip.set_gsi)
    bus = vm.pio_bus
    bus.register(I8042_DATA, 1, I8042(I8042_DATA, reset), "i8042")
    bus.register(I8042_COMMAND, 1, I8042(I8042_COMMAND, reset), "i8042")
    bus.register(POST_PORT, 1, PostCode(), "post")
    bus.register(DEBUGCON_PORT, 1, DebugCon(console_out), "debugcon")
    bus.register(COM1_BASE, 8, serial, "serial0")
    bus.register(DEBUG_EXIT_PORT, 1, DebugExit(guest_exit), "debug-exit")
    bus.register(TESTDEV_BASE, TESTDEV_SIZE, testdev, "testdev")
    return PcDevices(serial, testdev, ioapic)
