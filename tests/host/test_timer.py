"""The EL1 generic timers: CTL/CVAL/TVAL semantics over a controlled counter, and their PPIs
through the GIC as level interrupts."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from unirealm.arch.gic import GICR_SGI_BASE, GICD_CTLR_EnableGrp1, GicrSgi, IccSysreg
from unirealm.arch.timer import (
    CNT_CTL_ENABLE,
    CNT_CTL_IMASK,
    CNT_CTL_ISTATUS,
    PPI_NONSECURE_PHYS_TIMER,
    PPI_VIRT_TIMER,
    CntSysreg,
    condition_met,
    tval_signed,
)
from unirealm.host.devices.gicv3 import GicV3
from unirealm.machine.pykernel import SYSTEM_COUNTER_HZ
from unirealm.machine.timer import GenericTimer, system_count


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make(nr_cpus: int = 1, cntvoff: int = 0) -> tuple[GicV3, list[GenericTimer], Clock]:
    clock = Clock()
    gic = GicV3(nr_cpus)
    gic.distributor.mmio_write(0, 4, GICD_CTLR_EnableGrp1)
    timers = [GenericTimer(gic, cpu, clock, cntvoff) for cpu in range(nr_cpus)]
    for cpu in range(nr_cpus):
        icc = gic.cpu(cpu)
        icc.write_sysreg(IccSysreg.PMR, 0xFF)
        icc.write_sysreg(IccSysreg.IGRPEN1, 1)
        for ppi in (PPI_VIRT_TIMER, PPI_NONSECURE_PHYS_TIMER):
            gic.irq(cpu, ppi).enabled = True
    return gic, timers, clock


def test_reset_state_and_counters() -> None:
    _, [timer], clock = make(cntvoff=400)
    assert timer.read_sysreg(CntSysreg.CNTV_CTL_EL0) == 0
    assert timer.read_sysreg(CntSysreg.CNTP_CTL_EL0) == 0
    assert timer.read_sysreg(CntSysreg.CNTPCT_EL0) == clock.now
    assert timer.read_sysreg(CntSysreg.CNTVCT_EL0) == clock.now - 400
    assert timer.read_sysreg(CntSysreg.CNTFRQ_EL0) == SYSTEM_COUNTER_HZ
    assert timer.next_deadline() is None
    assert timer.read_sysreg(0x1234) is None and not timer.write_sysreg(0x1234, 0)
    assert not timer.write_sysreg(CntSysreg.CNTVCT_EL0, 0)  # read-only from EL1


def test_virtual_timer_fires_at_cval_and_is_level() -> None:
    gic, [timer], clock = make()
    timer.write_sysreg(CntSysreg.CNTV_CVAL_EL0, clock.now + 100)
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    assert timer.next_deadline() == clock.now + 100
    assert not gic.irq_pending(0)
    assert timer.read_sysreg(CntSysreg.CNTV_CTL_EL0) == CNT_CTL_ENABLE
    clock.now += 99
    assert not gic.irq_pending(0)
    clock.now += 1  # count == CVAL: the condition is met
    assert timer.read_sysreg(CntSysreg.CNTV_CTL_EL0) == CNT_CTL_ENABLE | CNT_CTL_ISTATUS
    assert timer.next_deadline() is None
    assert gic.irq_pending(0)
    icc = gic.cpu(0)
    assert icc.read_sysreg(IccSysreg.IAR1) == PPI_VIRT_TIMER
    # level: still asserted after the EOI until the guest quietens the timer
    icc.write_sysreg(IccSysreg.EOIR1, PPI_VIRT_TIMER)
    assert gic.irq_pending(0)
    assert icc.read_sysreg(IccSysreg.IAR1) == PPI_VIRT_TIMER
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE | CNT_CTL_IMASK)
    icc.write_sysreg(IccSysreg.EOIR1, PPI_VIRT_TIMER)
    assert not gic.irq_pending(0)
    # ISTATUS shows the condition even while masked
    assert timer.read_sysreg(CntSysreg.CNTV_CTL_EL0) == CNT_CTL_ENABLE | CNT_CTL_IMASK | CNT_CTL_ISTATUS


def test_the_redistributor_shows_a_fired_timer_as_pending() -> None:
    gic, [timer], clock = make()
    timer.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 10)
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    ispendr0 = GICR_SGI_BASE + GicrSgi.ISPENDR0
    assert gic.redistributors.mmio_read(ispendr0, 4) == 0
    clock.now += 10  # no GIC decision in between: the read itself must see the line
    assert gic.redistributors.mmio_read(ispendr0, 4) == 1 << PPI_VIRT_TIMER


def test_physical_timer_uses_ppi_30_and_the_physical_count() -> None:
    gic, [timer], clock = make(cntvoff=10_000)
    timer.write_sysreg(CntSysreg.CNTP_CVAL_EL0, clock.now + 5)
    timer.write_sysreg(CntSysreg.CNTP_CTL_EL0, CNT_CTL_ENABLE)
    timer.write_sysreg(CntSysreg.CNTV_CVAL_EL0, clock.now - 10_000 + 50)  # virtual: CNTVCT-based
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    assert timer.next_deadline() == clock.now + 5
    clock.now += 5
    assert gic.highest_pending(0) == PPI_NONSECURE_PHYS_TIMER
    assert timer.next_deadline() == clock.now + 45  # the virtual one, in physical count
    timer.write_sysreg(CntSysreg.CNTP_CTL_EL0, 0)
    assert not gic.irq_pending(0)
    clock.now += 45
    assert gic.highest_pending(0) == PPI_VIRT_TIMER


def test_disabled_or_masked_timer_raises_nothing() -> None:
    gic, [timer], clock = make()
    timer.write_sysreg(CntSysreg.CNTV_CVAL_EL0, clock.now)
    assert not gic.irq_pending(0)
    assert timer.read_sysreg(CntSysreg.CNTV_CTL_EL0) == 0  # ISTATUS reads 0 while disabled
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE | CNT_CTL_IMASK)
    assert not gic.irq_pending(0)
    assert timer.next_deadline() is None
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    assert gic.irq_pending(0)


def test_ctl_res0_bits_and_read_only_istatus() -> None:
    _, [timer], clock = make()
    timer.write_sysreg(CntSysreg.CNTP_CVAL_EL0, clock.now + 1000)
    timer.write_sysreg(CntSysreg.CNTP_CTL_EL0, (1 << 64) - 1)
    assert timer.read_sysreg(CntSysreg.CNTP_CTL_EL0) == CNT_CTL_ENABLE | CNT_CTL_IMASK


def test_tval_is_a_signed_32_bit_view_of_cval() -> None:
    gic, [timer], clock = make()
    timer.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 1000)
    assert timer.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == clock.now + 1000
    clock.now += 400
    assert timer.read_sysreg(CntSysreg.CNTV_TVAL_EL0) == 600
    clock.now += 700
    tval = timer.read_sysreg(CntSysreg.CNTV_TVAL_EL0)
    assert tval == (-100) & 0xFFFF_FFFF  # bits [63:32] RES0
    assert tval_signed(tval) == -100
    # a written TVAL is sign-extended from bit 31; bits [63:32] are ignored
    timer.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 0xFFFF_FFFF_FFFF_FF00)
    assert timer.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == clock.now - 0x100
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    assert gic.irq_pending(0)  # already in the past: fires at once
    timer.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 0x7FFF_FFFF)
    assert timer.read_sysreg(CntSysreg.CNTV_CVAL_EL0) == clock.now + 0x7FFF_FFFF
    assert not gic.irq_pending(0)


def test_cval_compare_is_unsigned_64_bit() -> None:
    assert condition_met(5, 5) and condition_met(6, 5) and not condition_met(4, 5)
    assert not condition_met(1 << 62, (1 << 64) - 1)  # no signed wrap-around
    _, [timer], _ = make()
    timer.write_sysreg(CntSysreg.CNTV_CVAL_EL0, (1 << 64) - 1)
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    assert timer.read_sysreg(CntSysreg.CNTV_CTL_EL0) == CNT_CTL_ENABLE
    assert timer.next_deadline() == (1 << 64) - 1


def test_timers_are_per_vcpu() -> None:
    gic, timers, clock = make(nr_cpus=2)
    timers[1].write_sysreg(CntSysreg.CNTV_TVAL_EL0, 10)
    timers[1].write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    clock.now += 10
    assert not gic.irq_pending(0) and gic.irq_pending(1)


def test_realm_exit_state_loads_into_a_channel() -> None:
    gic, [timer], clock = make()
    timer.virtual.load(CNT_CTL_ENABLE | CNT_CTL_ISTATUS, clock.now + 3)
    assert timer.virtual.ctl == CNT_CTL_ENABLE and timer.next_deadline() == clock.now + 3
    clock.now += 3
    assert gic.irq_pending(0)


def test_wfi_sleep_length_follows_the_deadline() -> None:
    _, [timer], clock = make()
    assert timer.seconds_until_deadline() is None
    timer.write_sysreg(CntSysreg.CNTV_TVAL_EL0, SYSTEM_COUNTER_HZ // 100)
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    assert timer.seconds_until_deadline() == 0.01
    clock.now += SYSTEM_COUNTER_HZ
    assert timer.seconds_until_deadline() is None  # fired: the line is up, nothing to wait for


def test_the_deadline_is_a_monotonic_time_on_the_system_counter() -> None:
    gic = GicV3(1)
    timer = GenericTimer(gic, 0)
    assert timer.monotonic_deadline() is None
    before = time.monotonic()
    timer.write_sysreg(CntSysreg.CNTV_TVAL_EL0, SYSTEM_COUNTER_HZ // 20)  # 50 ms
    after = time.monotonic()
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    deadline = timer.monotonic_deadline()
    tick = 1 / SYSTEM_COUNTER_HZ
    assert deadline is not None and before + 0.05 - tick <= deadline <= after + 0.05 + tick
    while time.monotonic() < deadline:
        assert not timer.virtual.istatus()
        time.sleep(0.005)
    assert timer.virtual.istatus() and timer.monotonic_deadline() is None


def test_el0_access_follows_cntkctl() -> None:
    from unirealm.arch.timer import CNTKCTL_EL0PTEN, CNTKCTL_EL0VCTEN, el0_may_access

    assert not any(el0_may_access(reg, 0) for reg in CntSysreg)
    assert el0_may_access(CntSysreg.CNTVCT_EL0, CNTKCTL_EL0VCTEN)
    assert el0_may_access(CntSysreg.CNTFRQ_EL0, CNTKCTL_EL0VCTEN)
    assert not el0_may_access(CntSysreg.CNTPCT_EL0, CNTKCTL_EL0VCTEN)
    assert el0_may_access(CntSysreg.CNTP_CVAL_EL0, CNTKCTL_EL0PTEN)
    assert not el0_may_access(CntSysreg.CNTV_CTL_EL0, CNTKCTL_EL0PTEN)
    assert not el0_may_access(IccSysreg.IAR1, 0xFFFF)  # never the GIC's from EL0


def test_system_count_runs_at_the_machine_frequency() -> None:
    first = system_count()
    time.sleep(0.002)
    elapsed = system_count() - first
    assert SYSTEM_COUNTER_HZ // 1000 <= elapsed < SYSTEM_COUNTER_HZ  # 2 ms, generously bounded


@given(
    st.lists(
        st.tuples(st.sampled_from(list(CntSysreg)), st.integers(0, (1 << 64) - 1), st.integers(0, 1 << 40)),
        max_size=30,
    )
)
def test_random_timer_accesses_never_raise(ops) -> None:
    gic, [timer], clock = make()
    for reg, value, step in ops:
        clock.now = (clock.now + step) & ((1 << 64) - 1)
        timer.write_sysreg(reg, value)
        read = timer.read_sysreg(reg)
        assert read is None or 0 <= read < 1 << 64
        gic.irq_pending(0)
        deadline = timer.next_deadline()
        assert deadline is None or deadline > timer.cntpct()


def test_kicks_come_only_with_changes_so_a_kick_handler_may_ask_again() -> None:
    clock = Clock()
    kicks: list[bool] = []
    gic = GicV3(1, on_kick=lambda cpu: kicks.append(gic.irq_pending(cpu)))
    gic.distributor.mmio_write(0, 4, GICD_CTLR_EnableGrp1)
    timer = GenericTimer(gic, 0, clock)
    gic.cpu(0).write_sysreg(IccSysreg.PMR, 0xFF)
    gic.cpu(0).write_sysreg(IccSysreg.IGRPEN1, 1)
    gic.irq(0, PPI_VIRT_TIMER).enabled = True
    kicks.clear()
    timer.write_sysreg(CntSysreg.CNTV_TVAL_EL0, 10)
    timer.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    for _ in range(3):
        gic.irq_pending(0)
    assert kicks == []
    clock.now += 10
    assert gic.irq_pending(0)
    assert kicks == [True]  # the line rose once
