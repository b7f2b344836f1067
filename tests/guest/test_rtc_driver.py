"""The guest's MC146818 driver (guest/rtc.py): against the VMM's RTC model (BCD, 24-hour,
the host clock ticking between reads) and against scripted register files for what the
model never shows: binary mode, 12-hour PM and AM, a missing century, the update-in-
progress flag, reads that never agree and register values that are not a time."""

from __future__ import annotations

import calendar
from collections.abc import Callable

import pytest

from unirealm.guest.rtc import (
    REG_A_UIP,
    REG_B_24H,
    REG_B_BINARY,
    RTC_CENTURY,
    RTC_DAY_OF_MONTH,
    RTC_HOURS,
    RTC_MINUTES,
    RTC_MONTH,
    RTC_REG_A,
    RTC_REG_B,
    RTC_SECONDS,
    RTC_YEAR,
    SNAPSHOT_TRIES,
    Mc146818,
    RtcError,
)
from unirealm.host.devices.rtc import Mc146818 as RtcModel

BASE = 0x0101_0000


class Registers:
    """An RTC as a register file; `read(reg)` may be replaced to change values per read."""

    def __init__(self, regs: dict[int, int]) -> None:
        self.regs = dict(regs)
        self.index = 0
        self.reads: list[int] = []
        self.hook: Callable[[int, int], int] | None = None

    def mmio_write(self, ipa: int, size: int, value: int) -> None:
        assert ipa == BASE and size == 1
        self.index = value

    def mmio_read(self, ipa: int, size: int) -> int:
        assert ipa == BASE + 1 and size == 1
        self.reads.append(self.index)
        value = self.regs.get(self.index, 0)
        return self.hook(self.index, value) if self.hook else value


def regs(sec: int, minute: int, hour: int, mday: int, mon: int, year: int, century: int, b: int) -> dict[int, int]:
    return {RTC_SECONDS: sec, RTC_MINUTES: minute, RTC_HOURS: hour, RTC_DAY_OF_MONTH: mday, RTC_MONTH: mon,
            RTC_YEAR: year, RTC_CENTURY: century, RTC_REG_B: b, RTC_REG_A: 0}


def seconds(r: dict[int, int]) -> int:
    return Mc146818(Registers(r), BASE).seconds()  # type: ignore[arg-type]


def utc(*tm: int) -> int:
    return calendar.timegm((*tm, 0, 0, 0))


class ModelCpu:
    def __init__(self, model: RtcModel) -> None:
        self.model = model

    def mmio_write(self, ipa: int, size: int, value: int) -> None:
        self.model.mmio_write(ipa - BASE, size, value)

    def mmio_read(self, ipa: int, size: int) -> int:
        return self.model.mmio_read(ipa - BASE, size)


def test_the_vmm_model_in_bcd() -> None:
    when = utc(2099, 12, 31, 23, 59, 59)
    assert Mc146818(ModelCpu(RtcModel(lambda: when + 0.5)), BASE).seconds() == when  # type: ignore[arg-type]


def test_a_clock_ticking_between_reads_gives_a_consistent_time() -> None:
    """Every register read advances the host clock by 10 ms and the first snapshot straddles
    13:00:00 (its seconds read 59, its minutes 00): the time is the one two equal snapshots
    give, 13:00:00, not the mix 13:00:59."""
    ticks = [utc(2026, 3, 1, 12, 59, 59) * 100 + 97]  # in hundredths of a second
    model = RtcModel(lambda: ticks[0] / 100)
    real = model.mmio_read

    def ticking(offset: int, size: int) -> int:
        if offset == 1:
            ticks[0] += 1
        return real(offset, size)
    model.mmio_read = ticking  # type: ignore[method-assign]
    assert Mc146818(ModelCpu(model), BASE).seconds() == utc(2026, 3, 1, 13, 0, 0)  # type: ignore[arg-type]


def test_bcd_and_binary_modes() -> None:
    assert seconds(regs(0x30, 0x45, 0x13, 0x28, 0x02, 0x24, 0x20, REG_B_24H)) == utc(2024, 2, 28, 13, 45, 30)
    assert seconds(regs(30, 45, 13, 28, 2, 24, 20, REG_B_24H | REG_B_BINARY)) == utc(2024, 2, 28, 13, 45, 30)


@pytest.mark.parametrize(("hour", "binary", "want"), [
    (0x81, False, 13), (0x92, False, 12), (0x12, False, 0), (0x01, False, 1), (0x11, False, 11),
    (0x81, True, 13), (0x8C, True, 12), (0x0C, True, 0), (0x0B, True, 11),
])
def test_twelve_hour_mode(hour: int, binary: bool, want: int) -> None:
    # 12-hour: bit 7 = PM over the hours 1..12, in BCD or binary; 12 AM is midnight, 12 PM noon
    b = REG_B_BINARY if binary else 0
    year = 26 if binary else 0x26
    assert seconds(regs(0, 0, hour, 1, 1, year, 20 if binary else 0x20, b)) == utc(2026, 1, 1, want, 0, 0)


@pytest.mark.parametrize("hour", [0x00, 0x80, 0x13, 0x93])
def test_twelve_hour_mode_outside_1_to_12_is_refused(hour: int) -> None:
    with pytest.raises(RtcError, match="invalid time"):
        seconds(regs(0, 0, hour, 1, 1, 0x26, 0x20, 0))


def test_pm_flag_ignored_in_24_hour_mode_is_an_invalid_hour() -> None:
    with pytest.raises(RtcError, match="invalid time"):
        seconds(regs(0, 0, 0x81, 1, 1, 0x26, 0x20, REG_B_24H))


def test_a_missing_century_means_20xx() -> None:
    assert seconds(regs(0, 0, 0, 1, 1, 0x26, 0, REG_B_24H)) == utc(2026, 1, 1, 0, 0, 0)
    assert seconds(regs(0, 0, 0, 1, 1, 0x26, 0x21, REG_B_24H)) == utc(2126, 1, 1, 0, 0, 0)


@pytest.mark.parametrize("bad", [
    {RTC_MONTH: 0}, {RTC_MONTH: 0x13}, {RTC_DAY_OF_MONTH: 0}, {RTC_DAY_OF_MONTH: 0x32},
    {RTC_HOURS: 0x24}, {RTC_MINUTES: 0x60}, {RTC_SECONDS: 0x61},
])
def test_values_that_are_not_a_time_are_refused(bad: dict[int, int]) -> None:
    r = regs(0x59, 0x59, 0x23, 0x31, 0x12, 0x26, 0x20, REG_B_24H)
    assert seconds(r) == utc(2026, 12, 31, 23, 59, 59)
    r.update(bad)
    with pytest.raises(RtcError, match="invalid time"):
        seconds(r)


def test_a_leap_second_reading_is_accepted() -> None:
    assert seconds(regs(0x60, 0x59, 0x23, 0x31, 0x12, 0x16, 0x20, REG_B_24H)) == utc(2017, 1, 1, 0, 0, 0)


def test_reads_wait_for_the_update_in_progress_flag() -> None:
    dev = Registers(regs(0x01, 0x02, 0x03, 0x04, 0x05, 0x26, 0x20, REG_B_24H))
    busy = [3]

    def uip(reg: int, value: int) -> int:
        if reg == RTC_REG_A and busy[0]:
            busy[0] -= 1
            return REG_A_UIP
        return value
    dev.hook = uip
    assert Mc146818(dev, BASE).seconds() == utc(2026, 5, 4, 3, 2, 1)  # type: ignore[arg-type]
    first_time_read = dev.reads.index(RTC_SECONDS)
    assert dev.reads[:first_time_read] == [RTC_REG_A] * 4  # three busy, then clear


def test_an_rtc_whose_reads_never_agree_is_refused() -> None:
    dev = Registers(regs(0, 0, 0, 1, 1, 0x26, 0x20, REG_B_24H))
    n = [0]

    def garbage(reg: int, value: int) -> int:
        n[0] += 1
        return n[0] & 0xFF if reg == RTC_SECONDS else value
    dev.hook = garbage
    with pytest.raises(RtcError, match="no two reads of the RTC agree"):
        Mc146818(dev, BASE).seconds()  # type: ignore[arg-type]
    assert dev.reads.count(RTC_SECONDS) == 2 * SNAPSHOT_TRIES  # each try's first and confirming read


def test_reads_that_agree_on_the_last_try_are_accepted() -> None:
    dev = Registers(regs(0, 0, 0, 1, 1, 26, 20, REG_B_24H | REG_B_BINARY))
    n = [0]
    last = 2 * SNAPSHOT_TRIES - 1  # the last try's first read of the seconds

    def settles(reg: int, value: int) -> int:
        if reg == RTC_SECONDS:
            n[0] += 1
            return min(n[0], last)  # every earlier try's two reads differ
        return value
    dev.hook = settles
    assert Mc146818(dev, BASE).seconds() == utc(2026, 1, 1, 0, 0, last)  # type: ignore[arg-type]


def test_one_steady_read_is_uip_the_time_uip_and_the_seconds_again() -> None:
    """The MC146818's rule, as Linux's mc146818_avoid_UIP applies it: status A clear, the
    time registers, status A still clear and the seconds unchanged; then status B."""
    dev = Registers(regs(0x30, 0x45, 0x13, 0x28, 0x02, 0x24, 0x20, REG_B_24H))
    assert Mc146818(dev, BASE).seconds() == utc(2024, 2, 28, 13, 45, 30)  # type: ignore[arg-type]
    assert dev.reads == [RTC_REG_A, RTC_SECONDS, RTC_MINUTES, RTC_HOURS, RTC_DAY_OF_MONTH, RTC_MONTH, RTC_YEAR,
                         RTC_CENTURY, RTC_REG_A, RTC_SECONDS, RTC_REG_B]


def test_an_update_that_begins_during_the_read_is_read_again() -> None:
    """UIP set when status A is read after the time registers: those may be read mid-update
    (here the minutes, while the seconds still read the same), so the time is read again."""
    dev = Registers(regs(0x59, 0x59, 0x12, 0x01, 0x03, 0x26, 0x20, REG_B_24H))
    seen = {RTC_REG_A: 0, RTC_MINUTES: 0}

    def update(reg: int, value: int) -> int:
        if reg in seen:
            seen[reg] += 1
            if reg == RTC_MINUTES and seen[reg] == 1:
                return 0x7F  # not a minute: the register is being updated
            if reg == RTC_REG_A and seen[reg] == 2:  # the first read's check
                return REG_A_UIP
        return value
    dev.hook = update
    assert Mc146818(dev, BASE).seconds() == utc(2026, 3, 1, 12, 59, 59)  # type: ignore[arg-type]
    assert seen[RTC_MINUTES] == 2
