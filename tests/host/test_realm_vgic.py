"""The host's vGIC for realm vCPUs: list registers from the distributor state before REC_ENTER,
read back with the REC's timer state after each exit (as KVM's vGIC does for a realm)."""

from __future__ import annotations

from unirealm.arch.gic import (
    ICH_HCR_UIE,
    LR_STATE_ACTIVE,
    LR_STATE_INVALID,
    LR_STATE_PENDING,
    GICD_CTLR_EnableGrp1,
    lr_intid,
    lr_state,
    lr_with_state,
    make_lr,
)
from unirealm.arch.timer import CNT_CTL_ENABLE, CNT_CTL_IMASK, CNT_CTL_ISTATUS, PPI_VIRT_TIMER
from unirealm.host.devices.gicv3 import GicV3
from unirealm.host.realm_vgic import RealmVgic
from unirealm.machine.timer import GenericTimer


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make(nr_cpus: int = 2) -> tuple[GicV3, list[RealmVgic], Clock]:
    clock = Clock()
    gic = GicV3(nr_cpus, 64)
    gic.distributor.mmio_write(0, 4, GICD_CTLR_EnableGrp1)
    timers = [GenericTimer(gic, cpu, clock) for cpu in range(nr_cpus)]
    return gic, [RealmVgic(gic, timers[cpu], cpu) for cpu in range(nr_cpus)], clock


def no_timers(vgic: RealmVgic, lrs: list[int]) -> None:
    vgic.sync(lrs, 0, 0, 0, 0)


def test_an_edge_spi_goes_pending_active_then_away() -> None:
    gic, [vgic, _], _ = make()
    spi = gic.irq(0, 40)
    assert spi is not None
    gic.set_enabled(spi, True)
    gic.set_priority(spi, 0xA0)
    gic.set_edge(spi, True)
    assert vgic.flush() == (0, [])
    gic.pulse_spi(40)
    assert vgic.has_pending()
    hcr, lrs = vgic.flush()
    assert (hcr, lrs) == (0, [make_lr(40, LR_STATE_PENDING, 0xA0)])
    no_timers(vgic, [lr_with_state(lrs[0], LR_STATE_ACTIVE)])  # the realm acknowledged it
    assert spi.active and not spi.pending
    _, lrs = vgic.flush()
    assert lrs == [make_lr(40, LR_STATE_ACTIVE, 0xA0)]
    no_timers(vgic, [lr_with_state(lrs[0], LR_STATE_INVALID)])  # and EOIed it
    assert not spi.active and vgic.flush() == (0, [])


def test_an_interrupt_still_pending_after_the_exit_stays_pending() -> None:
    gic, [vgic, _], _ = make()
    spi = gic.irq(0, 33)
    assert spi is not None
    gic.set_enabled(spi, True)
    gic.set_edge(spi, True)
    gic.pulse_spi(33)
    _, lrs = vgic.flush()
    no_timers(vgic, lrs)  # masked in the realm: not acknowledged
    assert spi.pending and not spi.active
    assert vgic.flush()[1] == lrs


def test_disabled_interrupts_and_a_disabled_distributor_are_not_given() -> None:
    gic, [vgic, _], _ = make()
    spi = gic.irq(0, 34)
    assert spi is not None
    gic.set_edge(spi, True)
    gic.pulse_spi(34)
    assert vgic.flush()[1] == [] and not vgic.has_pending()
    gic.set_enabled(spi, True)
    gic.distributor.mmio_write(0, 4, 0)
    assert vgic.flush()[1] == []
    gic.distributor.mmio_write(0, 4, GICD_CTLR_EnableGrp1)
    assert [lr_intid(lr) for lr in vgic.flush()[1]] == [34]


def test_the_timer_state_of_the_exit_raises_and_lowers_ppi_27() -> None:
    gic, [vgic, _], clock = make()
    ppi = gic.irq(0, PPI_VIRT_TIMER)
    assert ppi is not None
    gic.set_enabled(ppi, True)
    # The REC armed CNTV for a later count: nothing yet.
    vgic.sync([], CNT_CTL_ENABLE, clock.now + 100, 0, 0)
    assert vgic.flush()[1] == [] and vgic.timers.seconds_until_deadline() is not None
    clock.now += 100
    _, lrs = vgic.flush()
    assert [(lr_intid(lr), lr_state(lr)) for lr in lrs] == [(PPI_VIRT_TIMER, LR_STATE_PENDING)]
    # The realm acknowledged it and, in its handler, masked the timer before the exit.
    vgic.sync([lr_with_state(lrs[0], LR_STATE_ACTIVE)], CNT_CTL_ENABLE | CNT_CTL_IMASK | CNT_CTL_ISTATUS, clock.now, 0, 0)
    _, lrs = vgic.flush()
    assert [(lr_intid(lr), lr_state(lr)) for lr in lrs] == [(PPI_VIRT_TIMER, LR_STATE_ACTIVE)]
    vgic.sync([lr_with_state(lrs[0], LR_STATE_INVALID)], CNT_CTL_ENABLE | CNT_CTL_IMASK | CNT_CTL_ISTATUS, clock.now, 0, 0)
    assert vgic.flush()[1] == []
    # Left asserted after EOI, a level interrupt is given again.
    vgic.sync([], CNT_CTL_ENABLE | CNT_CTL_ISTATUS, clock.now, 0, 0)
    assert [lr_intid(lr) for lr in vgic.flush()[1]] == [PPI_VIRT_TIMER]


def test_active_first_then_by_priority_and_underflow_when_more_wait() -> None:
    gic, [vgic, _], _ = make()
    for n, intid in enumerate(range(32, 52)):
        irq = gic.irq(0, intid)
        assert irq is not None
        gic.set_enabled(irq, True)
        gic.set_edge(irq, True)
        gic.set_priority(irq, 0xF8 - 8 * (n % 4))
        gic.pulse_spi(intid)
    last = gic.irq(0, 51)
    assert last is not None
    gic.set_active(last, True)
    hcr, lrs = vgic.flush()
    assert hcr == ICH_HCR_UIE and len(lrs) == 16
    assert lr_intid(lrs[0]) == 51 and lr_state(lrs[0]) == LR_STATE_ACTIVE | LR_STATE_PENDING
    priorities = [(lr >> 48) & 0xFF for lr in lrs[1:]]
    assert priorities == sorted(priorities)


def test_an_sgi_from_one_vcpu_reaches_the_other() -> None:
    gic, [vgic0, vgic1], _ = make()
    sgi = gic.irq(1, 3)
    assert sgi is not None and sgi.enabled  # SGIs are enabled at reset
    gic.cpu(0).generate_sgi((3 << 24) | (1 << 1), allow_group1=True)  # target list: Aff0 1
    assert not vgic0.has_pending() and vgic1.has_pending()
    assert [lr_intid(lr) for lr in vgic1.flush()[1]] == [3]


def test_what_the_distributor_makes_active_or_routes_elsewhere_is_seen() -> None:
    """GICD_ISACTIVER (a hypervisor restoring state, GIC v3 §12.9.2) makes an interrupt
    active without any exit having shown it: the next flush gives it as active. An SPI
    routed to the other vCPU (GICD_IROUTER) is that vCPU's alone, and follows a new route."""
    from unirealm.arch.gic import Gicd

    gic, [vgic0, vgic1], _ = make()
    spi = gic.irq(0, 45)
    assert spi is not None
    gic.set_enabled(spi, True)
    gic.distributor.mmio_write(Gicd.ISACTIVER + 4, 4, 1 << (45 - 32))
    assert [(lr_intid(lr), lr_state(lr)) for lr in vgic0.flush()[1]] == [(45, LR_STATE_ACTIVE)]
    assert vgic1.flush()[1] == [] and not vgic0.has_pending()
    gic.distributor.mmio_write(Gicd.ICACTIVER + 4, 4, 1 << (45 - 32))
    assert vgic0.flush()[1] == [] and gic.active_irqs() == set()
    gic.set_edge(spi, True)
    gic.distributor.mmio_write(Gicd.IROUTER + 8 * 45, 8, 1)  # Aff0 1: vCPU 1
    gic.pulse_spi(45)
    assert vgic0.flush()[1] == [] and not vgic0.has_pending()
    assert [lr_intid(lr) for lr in vgic1.flush()[1]] == [45] and vgic1.has_pending()
    gic.distributor.mmio_write(Gicd.IROUTER + 8 * 45, 8, 0)
    assert [lr_intid(lr) for lr in vgic0.flush()[1]] == [45]
    assert vgic1.flush()[1] == []


def test_an_acknowledged_interrupt_is_in_the_active_set_until_its_eoi() -> None:
    """The plain VM's CPU interface acknowledges (ICC_IAR1_EL1) and ends (ICC_EOIR1_EL1)
    interrupts: the distributor's active set follows, as the list registers rely on it."""
    gic, _, _ = make()
    spi = gic.irq(0, 40)
    assert spi is not None
    gic.set_enabled(spi, True)
    gic.set_edge(spi, True)
    cpuif = gic.cpu(0)
    gic.pulse_spi(40)
    cpuif.pmr = 0xFF
    cpuif.igrpen[1] = True
    assert cpuif.acknowledge(1) == 40
    assert gic.active_irqs() == {spi} and spi.active
    cpuif.end_of_interrupt(1, 40)
    assert gic.active_irqs() == set() and not spi.active
