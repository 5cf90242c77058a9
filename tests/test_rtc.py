"""The CMOS RTC's register semantics at fixed clock times (devices/rtc.py)."""

from __future__ import annotations

import calendar

import pytest

from devices.rtc import CmosRtc

AFTERNOON = calendar.timegm((2026, 12, 7, 13, 7, 25, 0, 0, 0))
MORNING = calendar.timegm((2026, 12, 7, 9, 7, 25, 0, 0, 0))


def reg(rtc: CmosRtc, r: int, value: int | None = None) -> int:
    rtc.write(0, 1, r)
    if value is None:
        return rtc.read(1, 1)
    rtc.write(1, 1, value)
    return value


@pytest.mark.parametrize("now", [MORNING, AFTERNOON], ids=["am", "pm"])
def test_set_from_12_hour_mode_into_24_hour_mode_keeps_the_hour(now):
    """The cmos_rtc guest's sequence: binary 12-hour, then SET with binary 24-hour, year+1,
    SET off.  The frozen registers are in the new mode, so a PM hour isn't read back as AM
    (it lost 12 hours after noon UTC)."""
    rtc = CmosRtc(now=lambda: now)
    reg(rtc, 0x0B, 0x04)                       # binary, 12-hour
    reg(rtc, 0x0B, 0x86)                       # SET, binary, 24-hour
    assert reg(rtc, 4) == (13 if now == AFTERNOON else 9)
    reg(rtc, 9, reg(rtc, 9) + 1)               # year + 1
    reg(rtc, 0x0B, 0x06)
    assert rtc.offset == 365 * 86400
    assert reg(rtc, 4) == (13 if now == AFTERNOON else 9)


def test_12_hour_mode_pm_bit():
    rtc = CmosRtc(now=lambda: AFTERNOON)
    reg(rtc, 0x0B, 0x04)
    assert reg(rtc, 4) == 0x80 | 1
    reg(rtc, 0x0B, 0x00)                       # BCD, 12-hour
    assert reg(rtc, 4) == 0x80 | 0x01
