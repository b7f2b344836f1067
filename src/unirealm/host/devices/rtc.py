"""The MC146818 real-time clock kvmtool puts at 0x0101_0000 (kvmtool hw/rtc.c).

Two byte registers: offset 0 selects a CMOS register (index), offset 1 reads or writes it.
Time registers read the host's UTC clock in BCD, 24-hour mode (status B = 0x02), as
kvmtool's emulation does; writes to them are ignored (the host clock is not settable).
"""

from __future__ import annotations

import time
from collections.abc import Callable

RTC_SECONDS = 0x00
RTC_MINUTES = 0x02
RTC_HOURS = 0x04
RTC_DAY_OF_WEEK = 0x06
RTC_DAY_OF_MONTH = 0x07
RTC_MONTH = 0x08
RTC_YEAR = 0x09
RTC_REG_A = 0x0A
RTC_REG_B = 0x0B
RTC_REG_C = 0x0C
RTC_REG_D = 0x0D
RTC_CENTURY = 0x32
RTC_REG_B_24H = 0x02
RTC_REG_D_VRT = 0x80  # valid RAM and time
CMOS_SIZE = 128
RTC_MMIO_SIZE = 2


def bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


class Mc146818:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.index = 0
        self.cmos = bytearray(CMOS_SIZE)
        self.cmos[RTC_REG_B] = RTC_REG_B_24H
        self.cmos[RTC_REG_D] = RTC_REG_D_VRT

    def _time_register(self, reg: int) -> int | None:
        tm = time.gmtime(self.clock())
        values = {
            RTC_SECONDS: tm.tm_sec,
            RTC_MINUTES: tm.tm_min,
            RTC_HOURS: tm.tm_hour,
            RTC_DAY_OF_WEEK: (tm.tm_wday + 1) % 7 + 1,  # 1 = Sunday
            RTC_DAY_OF_MONTH: tm.tm_mday,
            RTC_MONTH: tm.tm_mon,
            RTC_YEAR: tm.tm_year % 100,
            RTC_CENTURY: tm.tm_year // 100,
        }
        value = values.get(reg)
        return None if value is None else bcd(value)

    def mmio_read(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.index
        if offset == 1:
            value = self._time_register(self.index)
            return self.cmos[self.index] if value is None else value
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.index = value & 0x7F  # bit 7 is the NMI mask on PCs
        elif offset == 1 and self._time_register(self.index) is None and self.index not in (RTC_REG_C, RTC_REG_D):
            self.cmos[self.index] = value & 0xFF
