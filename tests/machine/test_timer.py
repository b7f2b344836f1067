"""The EL1 generic timers (machine/timer.py) against the Arm ARM's register descriptions of
CNTV_/CNTP_ CTL, CVAL and TVAL, over a counter the test sets: ISTATUS and IMASK, the
64-bit compare, TVAL as a signed 32-bit view, the virtual count as physical minus CNTVOFF,
and the PPI lines 27 and 30 the timers drive."""

from __future__ import annotations

import pytest

from unirealm.arch.timer import CntSysreg
from unirealm.machine.timer import GenericTimer

FREQ = 62_500_000  # the machine's system counter: 62.5 MHz (16 ns a tick)
MASK64 = (1 << 64) - 1


class Clock:
    """A system counter the test moves; `step` ticks pass at every read."""

    def __init__(self, now: int = 0, step: int = 0) -> None:
        self.now, self.step = now, step

    def __call__(self) -> int:
        value = self.now
        self.now += self.step
        return value


class Gic:
    def __init__(self) -> None:
        self.levels: dict[tuple[int, int], bool] = {}
        self.sources: list[tuple[int, object]] = []

    def set_ppi_level(self, cpu: int, intid: int, level: bool) -> None:
        self.levels[cpu, intid] = level

    def add_source(self, cpu: int, sync: object) -> None:
        self.sources.append((cpu, sync))


def timer(now: int = 0, cntvoff: int = 0, cpu: int = 1) -> tuple[GenericTimer, Clock, Gic]:
    clock, gic = Clock(now), Gic()
    return GenericTimer(gic, cpu, clock, cntvoff), clock, gic


def test_the_counter_registers_frequency_and_virtual_offset() -> None:
    t, _, gic = timer(now=1_000, cntvoff=300)
    assert gic.sources == [(1, t.sync)]
    assert t.read_sysreg(CntSysreg.CNTFRQ_EL0) == FREQ
    assert t.read_sysreg(CntSysreg.CNTPCT_EL0) == 1_000
    assert t.read_sysreg(CntSysreg.CNTVCT_EL0) == 700  # CNTPCT - CNTVOFF
    t2, _, _ = timer(now=5, cntvoff=10)
    assert t2.read_sysreg(CntSysreg.CNTVCT_EL0) == (5 - 10) & MASK64  # wraps as a 64-bit count
    assert t.read_sysreg(0x1234) is None and t.write_sysreg(0x1234, 1) is False  # not a timer register


@pytest.mark.parametrize("prefix,ppi", [("CNTV", 27), ("CNTP", 30)])
def test_istatus_imask_and_the_interrupt_line(prefix: str, ppi: int) -> None:
    t, clock, gic = timer(now=1_000)
    ctl, cval = CntSysreg[f"{prefix}_CTL_EL0"], CntSysreg[f"{prefix}_CVAL_EL0"]
    offset = 0 if prefix == "CNTP" else t.cntvoff
    assert t.write_sysreg(cval, 1_500 - offset)
    assert t.read_sysreg(cval) == 1_500
    assert t.write_sysreg(ctl, 1)  # ENABLE, condition not met yet
    assert t.read_sysreg(ctl) == 1 and gic.levels[1, ppi] is False
    clock.now = 1_500  # count == CVAL: the condition is met
    assert t.read_sysreg(ctl) == 0b101  # ISTATUS
    t.sync()
    assert gic.levels[1, ppi] is True
    t.write_sysreg(ctl, 0b111)  # IMASK (ISTATUS is read-only: writing it changes nothing)
    assert t.read_sysreg(ctl) == 0b111 and gic.levels[1, ppi] is False
    t.write_sysreg(ctl, 0b010)  # disabled: ISTATUS reads 0, no interrupt
    assert t.read_sysreg(ctl) == 0b010 and gic.levels[1, ppi] is False
    t.write_sysreg(ctl, 1 << 63 | 1)  # RES0 bits are not kept
    assert t.read_sysreg(ctl) == 0b101 and gic.levels[1, ppi] is True


def test_the_compare_is_64_bit_unsigned() -> None:
    t, _, _ = timer(now=MASK64 - 10)
    t.write_sysreg(CntSysreg.CNTP_CVAL_EL0, 5)  # a count 11 ticks before it wraps is past CVAL 5
    t.write_sysreg(CntSysreg.CNTP_CTL_EL0, 1)
    assert t.read_sysreg(CntSysreg.CNTP_CTL_EL0) == 0b101  # unsigned: not "before" it as signed numbers
    t.write_sysreg(CntSysreg.CNTP_CVAL_EL0, MASK64)
    assert t.read_sysreg(CntSysreg.CNTP_CTL_EL0) == 1
    t.write_sysreg(CntSysreg.CNTP_CVAL_EL0, 1 << 64 | 7)  # CVAL is 64 bits: the top is dropped
    assert t.read_sysreg(CntSysreg.CNTP_CVAL_EL0) == 7


def test_tval_is_a_signed_32_bit_view_of_cval() -> None:
    t, clock, _ = timer(now=1_000)
    t.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 500)  # CVAL = count + 500
    assert t.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == 1_500
    assert t.read_sysreg(CntSysreg.CNTV_TVAL_EL0) == 500
    clock.now = 1_600  # fired 100 ticks ago: TVAL reads -100 in 32 bits
    assert t.read_sysreg(CntSysreg.CNTV_TVAL_EL0) == (-100) & 0xFFFF_FFFF
    t.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 0xFFFF_FFFF)  # -1: CVAL one tick in the past
    assert t.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == 1_599
    t.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 1 << 32 | 3)  # only TVAL[31:0] counts
    assert t.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == 1_603
    clock.now = MASK64 - 1
    t.write_sysreg(CntSysreg.CNTP_TVAL_EL0, 10)  # CVAL wraps as a 64-bit value
    assert t.read_sysreg(CntSysreg.CNTP_CVAL_EL0) == 8


def test_the_next_deadline_is_a_physical_count_and_a_time() -> None:
    t, _, _ = timer(now=1_000, cntvoff=400)
    assert t.next_deadline() is None and t.seconds_until_deadline() is None and t.monotonic_deadline() is None
    t.write_sysreg(CntSysreg.CNTV_CVAL_EL0, 700)  # virtual 700 = physical 1100
    t.write_sysreg(CntSysreg.CNTV_CTL_EL0, 1)
    assert t.next_deadline() == 1_100
    t.write_sysreg(CntSysreg.CNTP_CVAL_EL0, 1_050)
    t.write_sysreg(CntSysreg.CNTP_CTL_EL0, 1)
    assert t.next_deadline() == 1_050  # the first of the two
    t.write_sysreg(CntSysreg.CNTP_CTL_EL0, 0b11)  # masked: it will not fire
    assert t.next_deadline() == 1_100
    assert t.seconds_until_deadline() == pytest.approx(100 / FREQ)
    t.write_sysreg(CntSysreg.CNTV_CTL_EL0, 0)
    t.write_sysreg(CntSysreg.CNTP_CVAL_EL0, FREQ)  # one second of counting
    t.write_sysreg(CntSysreg.CNTP_CTL_EL0, 1)
    assert t.monotonic_deadline() == 1.0  # the counter is time.monotonic_ns() / 16
    wrap, _, _ = timer(now=MASK64 - 5, cntvoff=10)
    wrap.write_sysreg(CntSysreg.CNTV_CVAL_EL0, MASK64 - 3)  # the virtual count is MASK64 - 15
    wrap.write_sysreg(CntSysreg.CNTV_CTL_EL0, 1)
    assert wrap.next_deadline() == 6  # physical MASK64 + 7, wrapped


def test_a_deadline_that_passes_while_looked_at_gives_no_sleep() -> None:
    t, clock, _ = timer(now=1_000)
    t.write_sysreg(CntSysreg.CNTP_CVAL_EL0, 1_050)
    t.write_sysreg(CntSysreg.CNTP_CTL_EL0, 1)
    clock.step = 100  # the next read of the counter is past the deadline
    assert t.seconds_until_deadline() == 0.0


def test_a_rec_exit_load_keeps_enable_and_imask_only() -> None:
    t, _, _ = timer(now=50)
    t.virtual.load(0b111, 1 << 64 | 40)
    assert t.virtual.ctl == 0b011 and t.virtual.cval == 40
    assert t.virtual.read_ctl() == 0b111 and t.virtual.output() is False
