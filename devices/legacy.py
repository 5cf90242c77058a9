"""Small fixed-function port devices of a PC and of our test harness.

* ``I8042``      — keyboard controller, just enough for a reset (0x64 <- 0xFE)
* ``DebugCon``   — Bochs/QEMU 0xE9 debug console
* ``DebugExit``  — port 0x501: a write of V ends the VMM with exit code V & 0xff
* ``TestDev``    — 0x510-0x51f: lets test guests ask for an MSI or a GSI level
* ``PostCode``   — port 0x80 POST/delay port (writes ignored, quietly)
* ``PvPanic``    — port 0x505, QEMU's pvpanic (docs/specs/pvpanic.rst): a guest kernel
                   that panics says so, and `vmm run` ends with its own status (83)
"""

from __future__ import annotations

from typing import Callable

from devices.trace_events import (
    TP_I8042_RESET as TP_RESET,
    TP_DEBUG_EXIT_WRITE as TP_DEBUG_EXIT,
    TP_TESTDEV_MSI,
    TP_TESTDEV_GSI,
    TP_PVPANIC_WRITE as TP_PVPANIC,
)

I8042_DATA = 0x60
I8042_COMMAND = 0x64
I8042_CMD_RESET = 0xFE
DEBUGCON_PORT = 0xE9
DEBUG_EXIT_PORT = 0x501
TESTDEV_BASE = 0x510
TESTDEV_SIZE = 0x10
POST_PORT = 0x80
PVPANIC_PORT = 0x505        # QEMU's pvpanic-isa default ioport
# Event bits (QEMU docs/specs/pvpanic.rst; Linux include/uapi/misc/pvpanic.h)
PVPANIC_PANICKED = 1 << 0
PVPANIC_CRASH_LOADED = 1 << 1


class I8042:
    """Registered at 0x60 (1 port) and 0x64 (1 port) by the board: the
    offset alone can't tell them apart, so each port gets its own instance."""

    def __init__(self, port: int, reset: Callable[[], None]):
        self.port = port
        self._reset = reset

    def read(self, offset: int, size: int) -> int:
        return 0   # status: output buffer empty, input buffer empty; data: 0

    def write(self, offset: int, size: int, value: int) -> None:
        if self.port == I8042_COMMAND and value & 0xFF == I8042_CMD_RESET:
            if TP_RESET.enabled:
                TP_RESET.emit(value=value)
            self._reset()


class DebugCon:
    """Port 0xE9: each byte written goes to ``output`` (None: dropped; reads still
    answer 0xE9, so a guest probing for the port finds it)."""

    def __init__(self, output: Callable[[bytes], None] | None):
        self._out = output

    def read(self, offset: int, size: int) -> int:
        return DEBUGCON_PORT   # Bochs convention: reading 0xE9 returns 0xE9

    def write(self, offset: int, size: int, value: int) -> None:
        if self._out is not None:
            self._out(bytes((value & 0xFF,)))


class DebugExit:
    def __init__(self, exit_fn: Callable[[int], None]):
        self._exit = exit_fn

    def read(self, offset: int, size: int) -> int:
        return 0xFFFFFFFF & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if TP_DEBUG_EXIT.enabled:
            TP_DEBUG_EXIT.emit(value=value)
        self._exit(value & 0xFF)


class TestDev:
    """Registers (32-bit): +0 MSI address low, +4 MSI address high,
    +8 MSI data (the write sends the MSI), +0xC GSI | level << 31."""

    def __init__(self, irqchip):
        self._irqchip = irqchip
        self._lines: dict = {}               # gsi -> its IrqLine (made on first use)
        self.addr_lo = 0
        self.addr_hi = 0
        self.delivered = 0

    def read(self, offset: int, size: int) -> int:
        if offset == 0xC:
            return self.delivered
        return 0

    # snapshot: the registers and the level of each GSI line it drives
    def save(self) -> dict:
        return {"addr_lo": self.addr_lo, "addr_hi": self.addr_hi, "delivered": self.delivered,
                "lines": {str(g): line.level for g, line in self._lines.items()}}

    def restore(self, state: dict) -> None:
        self.addr_lo, self.addr_hi, self.delivered = state["addr_lo"], state["addr_hi"], state["delivered"]
        self._saved_lines = {int(g): lvl for g, lvl in state["lines"].items()}

    def rebuilt(self) -> None:
        """Derived: its lines, driven again at their saved levels."""
        for gsi, level in getattr(self, "_saved_lines", {}).items():
            line = self._lines.get(gsi)
            if line is None:
                line = self._lines[gsi] = self._irqchip.line(gsi, "testdev")
            if level:
                line.set(True)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0x0:
            self.addr_lo = value & 0xFFFFFFFF
        elif offset == 0x4:
            self.addr_hi = value & 0xFFFFFFFF
        elif offset == 0x8:
            addr = (self.addr_hi << 32) | self.addr_lo
            ok = self._irqchip.send_msi(addr, value & 0xFFFFFFFF)
            self.delivered += 1 if ok else 0
            if TP_TESTDEV_MSI.enabled:
                TP_TESTDEV_MSI.emit(addr=addr, data=value, ok=ok)
        elif offset == 0xC:
            gsi, level = value & 0xFF, bool(value >> 31)
            if TP_TESTDEV_GSI.enabled:
                TP_TESTDEV_GSI.emit(gsi=gsi, level=int(level))
            line = self._lines.get(gsi)
            if line is None:
                if not 0 <= gsi < self._irqchip.nr_pins:
                    return                   # no such pin: the write goes nowhere
                line = self._lines[gsi] = self._irqchip.line(gsi, "testdev")
            line.set(level)


class PostCode:
    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        pass


class PvPanic:
    """Reads answer the events we take; a write of PANICKED ends the VMM with
    GUEST_PANIC (``panicked()``), CRASH_LOADED (a kdump kernel takes over) is only
    traced.  Linux's pvpanic-mmio driver finds the port through the DSDT's QEMU0001
    device and writes PANICKED from its panic notifier, before panic=N reboots."""

    def __init__(self, panicked: Callable[[], None]):
        self._panicked = panicked

    def read(self, offset: int, size: int) -> int:
        return PVPANIC_PANICKED

    def write(self, offset: int, size: int, value: int) -> None:
        if TP_PVPANIC.enabled:
            TP_PVPANIC.emit(value=value)
        if value & PVPANIC_PANICKED:
            self._panicked()
