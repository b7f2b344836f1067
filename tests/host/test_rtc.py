"""The MC146818 RTC model and the guest's driver agree on the wall clock, in BCD."""

from __future__ import annotations

import calendar

from unirealm.guest.rtc import Mc146818 as RtcDriver
from unirealm.host.devices.rtc import RTC_HOURS, RTC_REG_B, RTC_SECONDS, RTC_YEAR, Mc146818, bcd

WHEN = calendar.timegm((2026, 11, 27, 23, 59, 58, 0, 0, 0))


class BusCpu:
    """Just enough of GuestCpu: byte MMIO to one device at `base`."""

    def __init__(self, device: Mc146818, base: int) -> None:
        self.device, self.base = device, base

    def mmio_write(self, ipa: int, size: int, value: int) -> None:
        self.device.mmio_write(ipa - self.base, size, value)

    def mmio_read(self, ipa: int, size: int) -> int:
        return self.device.mmio_read(ipa - self.base, size)


def read(dev: Mc146818, reg: int) -> int:
    dev.mmio_write(0, 1, reg)
    return dev.mmio_read(1, 1)


def test_time_registers_are_bcd_utc() -> None:
    dev = Mc146818(clock=lambda: WHEN)
    assert read(dev, RTC_SECONDS) == 0x58
    assert read(dev, RTC_HOURS) == 0x23
    assert read(dev, RTC_YEAR) == 0x26
    assert read(dev, RTC_REG_B) == 0x02  # 24-hour, BCD
    assert bcd(59) == 0x59


def test_time_registers_ignore_writes_but_cmos_ram_keeps_them() -> None:
    dev = Mc146818(clock=lambda: WHEN)
    dev.mmio_write(0, 1, RTC_SECONDS)
    dev.mmio_write(1, 1, 0x11)
    assert read(dev, RTC_SECONDS) == 0x58
    dev.mmio_write(0, 1, 0x40)
    dev.mmio_write(1, 1, 0xAB)
    assert read(dev, 0x40) == 0xAB


def test_guest_driver_reads_the_host_clock() -> None:
    base = 0x0101_0000
    driver = RtcDriver(BusCpu(Mc146818(clock=lambda: WHEN + 0.75), base), base)
    assert driver.seconds() == WHEN


def test_calendar_registers_sunday_is_one() -> None:
    # MC146818: day of week 1-7 with Sunday = 1; month 1-12; all BCD. 2026-11-27 is a Friday.
    dev = Mc146818(clock=lambda: WHEN)
    assert calendar.weekday(2026, 11, 27) == calendar.FRIDAY
    assert [read(dev, reg) for reg in (0x06, 0x07, 0x08, 0x32)] == [0x06, 0x27, 0x11, 0x20]
    sunday = calendar.timegm((2026, 11, 29, 12, 0, 0, 0, 0, 0))
    saturday = calendar.timegm((2026, 11, 28, 12, 0, 0, 0, 0, 0))
    assert read(Mc146818(clock=lambda: sunday), 0x06) == 0x01
    assert read(Mc146818(clock=lambda: saturday), 0x06) == 0x07


def test_century_register_rolls_over() -> None:
    dev = Mc146818(clock=lambda: calendar.timegm((2100, 1, 1, 0, 0, 0, 0, 0, 0)))
    assert (read(dev, 0x32), read(dev, RTC_YEAR)) == (0x21, 0x00)


def test_index_starts_at_seconds_and_reads_back() -> None:
    dev = Mc146818(clock=lambda: WHEN)
    assert dev.mmio_read(0, 1) == 0
    assert dev.mmio_read(1, 1) == 0x58  # register 0: seconds
    dev.mmio_write(0, 1, 0x80 | 0x0B)  # bit 7 (the PC's NMI mask) is not part of the index
    assert dev.mmio_read(0, 1) == 0x0B


def test_status_c_d_read_only_and_outside_window_ignored() -> None:
    dev = Mc146818(clock=lambda: WHEN)
    for reg in (0x0C, 0x0D):
        before = read(dev, reg)
        dev.mmio_write(1, 1, 0x55)
        assert read(dev, reg) == before
    assert read(dev, 0x0D) == 0x80  # VRT: valid RAM and time
    dev.mmio_write(0, 1, 0x40)
    dev.mmio_write(2, 1, 0x99)  # past the two registers: dropped
    assert dev.mmio_read(2, 1) == 0
    assert read(dev, 0x40) == 0x00
