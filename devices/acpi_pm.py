"""Hardware-reduced ACPI power management: sleep control/status and reset registers.

The FADT (vmm/boot/acpi.py) points SLEEP_CONTROL_REG, SLEEP_STATUS_REG and
RESET_REG at this port block, as 8-bit System I/O registers:

    +0  SLEEP_CONTROL_PORT  write SLP_TYP << 2 | SLP_EN (ACPI 6.x §4.8.3.7):
                            with SLP_TYP = the \\_S5_ value -> poweroff
    +1  SLEEP_STATUS_PORT   reads 0: WAK_STS never sets (we have no sleep
                            state to wake from); writes (WAK_STS clear) ignored
    +2  RESET_PORT          write RESET_VALUE (§4.8.3.6) -> reset
    +3  reserved            reads 0

Linux: ``poweroff`` -> acpi_power_off -> acpi_hw_extended_sleep (clears
WAK_STS, writes the sleep control register); ``reboot`` -> acpi_reboot ->
acpi_reset (one byte write of RESET_VALUE).  Other SLP_TYP values (S1-S4:
the DSDT announces none) and other reset values are traced and ignored.
"""

from __future__ import annotations

from typing import Callable

from devices.trace_events import TP_ACPI_SLEEP as TP_SLEEP, TP_ACPI_RESET as TP_RESET
from vmm.boot.acpi import (ACPI_PM_BASE, RESET_PORT, RESET_VALUE, S5_SLP_TYP, SLEEP_CONTROL_PORT,
                           SLP_EN, SLP_TYP_MASK, SLP_TYP_SHIFT)

_SLEEP_CONTROL = SLEEP_CONTROL_PORT - ACPI_PM_BASE
_RESET = RESET_PORT - ACPI_PM_BASE


class AcpiPm:
    """Register at ACPI_PM_BASE for ACPI_PM_SIZE ports (vmm/boot/acpi.py)."""

    def __init__(self, poweroff: Callable[[], None], reset: Callable[[], None]):
        self._poweroff = poweroff
        self._reset = reset

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        # The registers are one byte wide; a wider access writes each byte in turn.
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)

    def _write_byte(self, offset: int, value: int) -> None:
        if offset == _SLEEP_CONTROL:
            slp_typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT
            slp_en = bool(value & SLP_EN)
            poweroff = slp_en and slp_typ == S5_SLP_TYP
            if TP_SLEEP.enabled:
                TP_SLEEP.emit(value=value, slp_typ=slp_typ, slp_en=int(slp_en),
                              action="poweroff" if poweroff else "ignored")
            if poweroff:
                self._poweroff()
        elif offset == _RESET:
            reset = value == RESET_VALUE
            if TP_RESET.enabled:
                TP_RESET.emit(value=value, action="reset" if reset else "ignored")
            if reset:
                self._reset()
