"""MC146818-style CMOS real-time clock at ports 0x70 (index) / 0x71 (data).

Why a PC needs it even with a paravirtual clock: Linux takes a platform with
no CMOS RTC (FADT IAPC_BOOT_ARCH "CMOS RTC not present") and no VGA for a Xen
*PVH* guest (arch/x86/xen/enlighten_hvm.c xen_hvm_guest_late_init), and then
skips what an HVM guest does (the platform PCI device, PIRQs).  Plain Linux
also reads its wall clock from here at boot.

The time registers read the host's UTC clock plus an offset the guest sets by
writing them (with SET in register B, as the datasheet wants, or without).
Register B's DM (binary) and 24/12-hour bits are honoured.  Each register read
samples the clock, so, as on the chip, a reader must not straddle the once-a-
second update: UIP (register A bit 7) is set for the last 2 ms of every second
(the datasheet promises >= 244 us of stability after UIP reads clear; Linux's
mc146818_get_time waits for it and re-checks).  Registers 0x0E-0x7F are plain
CMOS RAM.  No interrupts yet, and register C never raises a flag (periodic,
alarm and update-ended, IRQ 8): nothing we boot uses them, and the ACPI device
lists no IRQ.
"""

from __future__ import annotations

import threading
import time

from devices.trace_events import TP_RTC_WRITE as TP_RTC
from vmm.locks import ordered_lock

RTC_BASE = 0x70
RTC_SIZE = 2
CMOS_SIZE = 128

SEC, SEC_ALARM, MIN, MIN_ALARM, HOUR, HOUR_ALARM, WDAY, MDAY, MONTH, YEAR = range(10)
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32                 # the ACPI FADT's "century" field names this register
TIME_REGS = (SEC, MIN, HOUR, WDAY, MDAY, MONTH, YEAR, CENTURY)

A_DIVIDER_32K = 0x26           # 32.768 kHz time base, 1024 Hz rate: what firmware leaves
A_UIP = 0x80                   # update in progress
UIP_WINDOW_S = 0.002           # UIP is set this long before each second ends
B_SET, B_DM_BINARY, B_24H = 0x80, 0x04, 0x02
D_VRT = 0x80                   # valid RAM and time
PM_BIT = 0x80                  # 12-hour mode: hour register bit 7


def _bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def _unbcd(v: int) -> int:
    return (v >> 4) * 10 + (v & 0xF)


class CmosRtc:
    def __init__(self, now=time.time):
        self._now = now
        self._lock = ordered_lock("device")
        self.index = 0
        self.ram = bytearray(CMOS_SIZE)
        self.ram[REG_A] = A_DIVIDER_32K
        self.ram[REG_B] = B_24H         # BCD, 24-hour: the PC default
        self.ram[REG_D] = D_VRT
        self.offset = 0.0               # guest time - host time, in seconds
        self._frozen: list[int] | None = None   # the time registers while SET is on

    # -- the time registers
    def _fields(self) -> dict[int, int]:
        t = time.gmtime(self._now() + self.offset)
        hour = t.tm_hour
        b = self.ram[REG_B]
        pm = 0
        if not b & B_24H:
            pm = PM_BIT if hour >= 12 else 0
            hour = hour % 12 or 12
        raw = {SEC: t.tm_sec, MIN: t.tm_min, HOUR: hour, WDAY: (t.tm_wday + 1) % 7 + 1, MDAY: t.tm_mday,
               MONTH: t.tm_mon, YEAR: t.tm_year % 100, CENTURY: t.tm_year // 100}
        enc = (lambda v: v) if b & B_DM_BINARY else _bcd
        out = {reg: enc(v) for reg, v in raw.items()}
        out[HOUR] |= pm
        return out

    def _set_time(self, regs: dict[int, int]) -> None:
        b = self.ram[REG_B]
        dec = (lambda v: v) if b & B_DM_BINARY else _unbcd
        hour = dec(regs[HOUR] & ~PM_BIT)
        if not b & B_24H:
            hour = hour % 12 + (12 if regs[HOUR] & PM_BIT else 0)
        import calendar            # (here: it imports datetime, ~3 ms of every start for a rare write)
        try:
            guest = calendar.timegm((dec(regs[CENTURY]) * 100 + dec(regs[YEAR]), dec(regs[MONTH]),
                                     dec(regs[MDAY]), hour, dec(regs[MIN]), dec(regs[SEC]), 0, 0, 0))
        except (ValueError, OverflowError):
            return                      # nonsense from the guest: the clock keeps its time
        self.offset = guest - self._now()

    # -- snapshot (ARCHITECTURE.md "Snapshots"): CMOS RAM, the index, the guest's clock as an offset
    # from the host's UTC (so the guest's clock keeps running while saved, as a real RTC's battery)
    def save(self) -> dict:
        with self._lock:
            return {"index": self.index, "ram": bytes(self.ram), "offset": self.offset, "frozen": self._frozen}

    def restore(self, state: dict) -> None:
        with self._lock:
            self.index = state["index"]
            self.ram[:] = state["ram"]
            self.offset = state["offset"]
            self._frozen = state["frozen"]

    # -- ports: offset 0 = index (bit 7: NMI mask, ignored), offset 1 = data
    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return 0xFF                 # the index register is write-only
        with self._lock:
            reg = self.index
            if reg in TIME_REGS:
                if self._frozen is not None:
                    return self._frozen[TIME_REGS.index(reg)]
                return self._fields()[reg]
            value = self.ram[reg]
            if reg == REG_A and self._frozen is None and (self._now() + self.offset) % 1 >= 1 - UIP_WINDOW_S:
                value |= A_UIP
            if reg == REG_C:
                self.ram[REG_C] = 0     # reading C acknowledges (no flags are ever raised)
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            self.index = value & 0x7F
            return
        with self._lock:
            reg = self.index
            if TP_RTC.enabled:
                TP_RTC.emit(reg=reg, value=value)
            if reg in TIME_REGS:
                regs = self._frozen if self._frozen is not None else [self._fields()[r] for r in TIME_REGS]
                regs[TIME_REGS.index(reg)] = value
                if self._frozen is None:            # written while running: takes effect now
                    self._set_time(dict(zip(TIME_REGS, regs)))
            elif reg == REG_B:
                if value & B_SET and self._frozen is None:
                    # Frozen in the mode this write selects: the guest reads and writes them
                    # in it, and they are decoded in it when SET goes off.
                    self.ram[REG_B] = value
                    self._frozen = [self._fields()[r] for r in TIME_REGS]
                elif not value & B_SET and self._frozen is not None:
                    # decoded in the mode they were written in, before B changes it
                    self._set_time(dict(zip(TIME_REGS, self._frozen)))
                    self._frozen = None
                self.ram[REG_B] = value
            elif reg in (REG_C, REG_D):
                pass                        # read-only
            elif reg == REG_A:
                self.ram[REG_A] = value & 0x7F      # UIP is read-only
            else:
                self.ram[reg] = value
