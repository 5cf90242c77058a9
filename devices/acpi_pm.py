"""ACPI fixed hardware (ACPI 6.x §4.8): PM1 event and control blocks, the PM timer, the
SCI, and the reset register.  The FADT (vmm/boot/acpi.py) points at this port block:

    +0   PM1_STS  16 bits, write-1-to-clear: TMR_STS, PWRBTN_STS (and WAK_STS, never set)
    +2   PM1_EN   16 bits: TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN kept as written
    +4   PM1_CNT  16 bits: SCI_EN reads 1 (no SMM: always in ACPI mode, SMI_CMD is 0);
                  SLP_TYP = the \\_S5_ value with SLP_EN -> poweroff
    +8   PM_TMR   32-bit read: a 24-bit count at 3.579545 MHz from the host's monotonic
                  clock (computed on read; nothing ticks)
    +12  RESET    write RESET_VALUE (§4.8.3.6) -> reset
    other        read 0, writes ignored

The SCI (ISA IRQ 9, level, active high: the MADT's interrupt source override) is high
while an enabled event is pending: ``PM1_STS & PM1_EN & (TMR | PWRBTN)``, and drops when
the guest clears the status bit (write 1 to it) or the enable.  TMR_STS is set each time
bit 23 of the count changes (every 2^23 ticks, 2.34 s): it is computed from the clock
when read, and while TMR_EN is set an ``acpi-pm-timer`` ``threading.Timer`` is armed for
the next change so the SCI rises on time.  ``press_power_button()`` sets PWRBTN_STS (the
fixed power button, §4.8.2.2.1; the FADT's PWR_BUTTON flag is clear).

Linux: ``poweroff`` -> acpi_power_off -> acpi_hw_legacy_sleep (clears the PM1 status
bits, writes SLP_TYP, then SLP_TYP | SLP_EN to PM1_CNT); ``reboot`` -> acpi_reboot ->
acpi_reset (one byte write of RESET_VALUE); the acpi_pm clocksource reads PM_TMR.
Other SLP_TYP values (S1-S4: the DSDT announces none) and other reset values are traced
and ignored.

Lock: one ``device`` lock; the SCI line is set under it (devices raise lines holding
their lock), the timer callback takes it too.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from devices.trace_events import (
    TP_ACPI_SLEEP as TP_SLEEP,
    TP_ACPI_RESET as TP_RESET,
    TP_ACPI_SCI as TP_SCI,
)
from vmm.boot.acpi import (ACPI_PM_BASE, GBL_EN, PM1A_CNT_BLK, PM1A_EVT_BLK, PM_TIMER_BITS, PM_TIMER_HZ,
                           PM_TMR_BLK, PWRBTN_EN, PWRBTN_STS, RESET_PORT, RESET_VALUE, RTC_EN, S5_SLP_TYP,
                           SCI_EN, SLP_EN, SLP_TYP_MASK, SLP_TYP_SHIFT, SLPBTN_EN, TMR_EN, TMR_STS)
from vmm.errors import internal_error
from vmm.locks import ordered_lock

_STS = PM1A_EVT_BLK - ACPI_PM_BASE          # 0
_EN = _STS + 2                              # 2
_CNT = PM1A_CNT_BLK - ACPI_PM_BASE          # 4
_TMR = PM_TMR_BLK - ACPI_PM_BASE            # 8
_RESET = RESET_PORT - ACPI_PM_BASE          # 12

EVENTS = TMR_STS | PWRBTN_STS               # the events this platform raises
EN_WRITABLE = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN
CNT_WRITABLE = SLP_TYP_MASK                 # SCI_EN is read-only 1, SLP_EN is write-only
TMR_MASK = (1 << PM_TIMER_BITS) - 1
TMR_STS_SHIFT = PM_TIMER_BITS - 1           # TMR_STS: bit 23 of the count changed


class AcpiPm:
    """Register at ACPI_PM_BASE for ACPI_PM_SIZE ports (vmm/boot/acpi.py).  ``sci``: the SCI
    line's ``set(level)`` (None: no SCI wired, events are only status bits); ``clock``:
    host monotonic ns (tests pass their own)."""

    def __init__(self, poweroff: Callable[[], None], reset: Callable[[], None],
                 sci: Callable[[bool], None] | None = None, clock: Callable[[], int] = time.monotonic_ns):
        self._poweroff = poweroff
        self._reset = reset
        self._sci = sci
        self._clock = clock
        self._lock = ordered_lock("device")
        self._t0 = clock()
        self._sts = 0                        # latched status bits but TMR_STS (computed)
        self._en = 0
        self._cnt = SCI_EN
        self._tmr_epoch = 0                  # count >> 23 when TMR_STS was last cleared
        self._sci_level = False
        self._timer: threading.Timer | None = None
        self._stopped = False
        self.sci_raised = 0                  # rising edges of the SCI (tests)

    # ------------------------------------------------------------ the PM timer
    def _ticks(self, now: int | None = None) -> int:
        """The unwrapped count since the VM started."""
        ns = (self._clock() if now is None else now) - self._t0
        return ns * PM_TIMER_HZ // 1_000_000_000

    def _status(self, ticks: int) -> int:
        sts = self._sts
        if ticks >> TMR_STS_SHIFT != self._tmr_epoch:
            sts |= TMR_STS
        return sts

    # ------------------------------------------------------------ the SCI
    def _update_sci(self, ticks: int) -> None:
        """Lock held: set the SCI to the pending-and-enabled events, and (re)arm the timer
        for TMR_STS when TMR_EN waits on a change to come."""
        sts = self._status(ticks)
        level = bool(sts & self._en & EVENTS) and bool(self._cnt & SCI_EN)
        if level != self._sci_level:
            self._sci_level = level
            if level:
                self.sci_raised += 1
            if TP_SCI.enabled:
                TP_SCI.emit(level=int(level), sts=sts, en=self._en)
            if self._sci is not None:
                self._sci(level)
        want_timer = bool(self._en & TMR_EN) and not sts & TMR_STS and not self._stopped
        if self._timer is not None and not want_timer:
            self._timer.cancel()
            self._timer = None
        elif want_timer and self._timer is None:
            next_change = ((ticks >> TMR_STS_SHIFT) + 1) << TMR_STS_SHIFT
            # the first ns at which _ticks() reaches next_change (ceil division)
            delay_ns = -(-next_change * 1_000_000_000 // PM_TIMER_HZ) - (self._clock() - self._t0)
            timer = threading.Timer(max(delay_ns, 0) / 1e9, self._timer_fired)
            timer.name = "acpi-pm-timer"
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _timer_fired(self) -> None:
        try:
            with self._lock:
                if threading.current_thread() is not self._timer:
                    return                   # cancelled or replaced meanwhile
                self._timer = None
                self._update_sci(self._ticks())
        except BaseException as e:  # noqa: BLE001 - reported; the guest loses a timer event
            internal_error("acpi-pm-timer", e)

    def press_power_button(self) -> None:
        """The fixed power button (§4.8.2.2.1): PWRBTN_STS, an SCI if PWRBTN_EN."""
        with self._lock:
            self._sts |= PWRBTN_STS
            self._update_sci(self._ticks())

    def stop(self) -> None:
        """At close: no timer left behind."""
        with self._lock:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # ------------------------------------------------------------ snapshot (ARCHITECTURE.md "Snapshots")
    def save(self) -> dict:
        """Primary: the registers, the PM timer's count (its origin is this host's clock)
        and TMR_STS's epoch."""
        with self._lock:
            return {"ticks": self._ticks(), "sts": self._sts, "en": self._en, "cnt": self._cnt,
                    "tmr_epoch": self._tmr_epoch}

    def restore(self, state: dict) -> None:
        with self._lock:
            # The count goes on from the saved value: move the origin so _ticks() gives it now.
            self._t0 = self._clock() - state["ticks"] * 1_000_000_000 // PM_TIMER_HZ
            self._sts, self._en, self._cnt = state["sts"], state["en"], state["cnt"]
            self._tmr_epoch = state["tmr_epoch"]

    def rebuilt(self) -> None:
        """Derived: the SCI's level and the TMR_STS timer."""
        with self._lock:
            self._sci_level = False
            self._update_sci(self._ticks())

    @property
    def sci_level(self) -> bool:
        with self._lock:
            return self._sci_level

    # ------------------------------------------------------------ ports
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            ticks = self._ticks()
            regs = (self._status(ticks).to_bytes(2, "little") + self._en.to_bytes(2, "little")
                    + self._cnt.to_bytes(2, "little") + bytes(2)
                    + (ticks & TMR_MASK).to_bytes(4, "little") + bytes(4))
        return int.from_bytes(regs[offset:offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        # Split the access into (register offset, byte mask, value) per 16-bit register.
        regs: dict[int, tuple[int, int]] = {}
        for i in range(size):
            off = offset + i
            byte = (value >> (8 * i)) & 0xFF
            if off == _RESET:
                self._write_reset(byte)
                continue
            base, shift = off & ~1, 8 * (off & 1)
            mask, val = regs.get(base, (0, 0))
            regs[base] = (mask | 0xFF << shift, val | byte << shift)
        poweroff = False
        with self._lock:
            ticks = self._ticks()
            for base, (mask, val) in regs.items():
                if base == _STS:             # write 1 to clear
                    clear = val & mask
                    if clear & TMR_STS:
                        self._tmr_epoch = ticks >> TMR_STS_SHIFT
                    self._sts &= ~clear
                elif base == _EN:
                    self._en = (self._en & ~(mask & EN_WRITABLE)) | (val & mask & EN_WRITABLE)
                elif base == _CNT:
                    self._cnt = (self._cnt & ~(mask & CNT_WRITABLE)) | (val & mask & CNT_WRITABLE)
                    if mask & SLP_EN:
                        poweroff = self._sleep(val)
            self._update_sci(ticks)
        if poweroff:
            self._poweroff()

    def _sleep(self, value: int) -> bool:
        slp_typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT
        slp_en = bool(value & SLP_EN)
        poweroff = slp_en and slp_typ == S5_SLP_TYP
        if TP_SLEEP.enabled and slp_en:
            TP_SLEEP.emit(value=value, slp_typ=slp_typ, slp_en=int(slp_en),
                          action="poweroff" if poweroff else "ignored")
        return poweroff

    def _write_reset(self, value: int) -> None:
        reset = value == RESET_VALUE
        if TP_RESET.enabled:
            TP_RESET.emit(value=value, action="reset" if reset else "ignored")
        if reset:
            self._reset()
