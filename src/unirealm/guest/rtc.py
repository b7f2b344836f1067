"""MC146818 RTC driver: the wall-clock time at boot (the host's, so untrusted in a realm).

One read of the time registers once status A's update-in-progress flag reads clear (the
MC146818's rule: UIP rises 244 us before an update, so a read begun with it clear sees one
time on real hardware), confirmed by reading UIP and then the seconds again after the
other registers, as Linux's mc146818_avoid_UIP revalidates its read. An emulated clock
(kvmtool's) never raises UIP and ticks between any two register reads; every carry into
the minutes, hours, date or year comes with a change of the seconds, so equal seconds
around the read mean no update fell inside it. A read that is not confirmed is retried,
SNAPSHOT_TRIES times at most. Each register read is two MMIO exits (index, then data)."""

from __future__ import annotations

import calendar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .interfaces import Cpu

RTC_SECONDS, RTC_MINUTES, RTC_HOURS = 0x00, 0x02, 0x04
RTC_DAY_OF_MONTH, RTC_MONTH, RTC_YEAR = 0x07, 0x08, 0x09
RTC_REG_A, RTC_REG_B, RTC_CENTURY = 0x0A, 0x0B, 0x32
REG_A_UIP = 0x80  # update in progress
REG_B_BINARY = 0x04
REG_B_24H = 0x02
HOURS_PM = 0x80  # 12-hour mode: the hours register's PM flag


def _bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0xF)


SNAPSHOT_TRIES = 8
UIP_POLLS = 1000  # reads of status A while an update is in progress before reading anyway


class RtcError(Exception):
    """The RTC's registers do not read as a clock."""


class Mc146818:
    def __init__(self, cpu: Cpu, base: int) -> None:
        self.cpu = cpu
        self.base = base

    def _read(self, reg: int) -> int:
        self.cpu.mmio_write(self.base, 1, reg)
        return self.cpu.mmio_read(self.base + 1, 1)

    def _snapshot(self) -> tuple[int, ...] | None:
        """The time registers read once UIP is clear, or None if UIP rose or the seconds changed
        meanwhile."""
        for _ in range(UIP_POLLS):
            if not self._read(RTC_REG_A) & REG_A_UIP:
                break
        regs = tuple(self._read(r) for r in (RTC_SECONDS, RTC_MINUTES, RTC_HOURS, RTC_DAY_OF_MONTH, RTC_MONTH,
                                             RTC_YEAR, RTC_CENTURY))
        if self._read(RTC_REG_A) & REG_A_UIP:  # an update began during the read
            return None
        return regs if self._read(RTC_SECONDS) == regs[0] else None

    def seconds(self) -> int:
        """Seconds since the Unix epoch, from one read the seconds confirm (a few tries: an
        RTC whose seconds change at every read is broken). RtcError for a clock that cannot
        be read."""
        for _ in range(SNAPSHOT_TRIES):
            first = self._snapshot()
            if first is not None:
                break
        else:
            raise RtcError("no two reads of the RTC agree")
        reg_b = self._read(RTC_REG_B)
        binary = reg_b & REG_B_BINARY
        twelve_hour = not reg_b & REG_B_24H
        raw = list(first)
        pm = twelve_hour and bool(raw[2] & HOURS_PM)  # bit 7 of the hours, outside the BCD digits
        if twelve_hour:
            raw[2] &= ~HOURS_PM
        sec, minute, hour, mday, mon, year, century = (v if binary else _bcd(v) for v in raw)
        if twelve_hour:  # 1..12: 12 AM is hour 0, 12 PM is noon
            hour = (hour % 12 + (12 if pm else 0)) if 1 <= hour <= 12 else 24
        full_year = (century or 20) * 100 + year
        if not (1 <= mon <= 12 and 1 <= mday <= 31 and hour < 24 and minute < 60 and sec < 61):
            raise RtcError(f"the RTC reads an invalid time {full_year}-{mon}-{mday} {hour}:{minute}:{sec}")
        return calendar.timegm((full_year, mon, mday, hour, minute, sec, 0, 0, 0))
