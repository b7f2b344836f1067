"""The GICv3 model: register reset values and access rules, interrupt state transitions,
priority selection, the CPU interface and SGI routing, through the kvmtool MMIO windows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unirealm.arch.gic import (
    GICR_SGI_BASE,
    GICR_SIZE,
    ICC_CTLR_CBPR,
    ICC_SGIR_IRM,
    INTID_SPURIOUS,
    Gicd,
    GICD_CTLR_EnableGrp0,
    GICD_CTLR_EnableGrp1,
    GICR_WAKER_ChildrenAsleep,
    GICR_WAKER_ProcessorSleep,
    GicrRd,
    GicrSgi,
    ICC_CTLR_EOImode,
    IccSysreg,
)
from unirealm.arch.timer import PPI_VIRT_TIMER
from unirealm.host.devices.gicv3 import GicError, GicV3, nr_spis_for_lines
from unirealm.host.devices.mmio import MmioBus
from unirealm.host.memmap import ARM_GIC_DIST_BASE, IrqLines, gic_redists_base, vcpu_mpidr

DIST = ARM_GIC_DIST_BASE


class Guest:
    """A guest driving the GIC the way Linux's irq-gic-v3 driver does, over the MMIO bus."""

    def __init__(self, nr_cpus: int = 2, nr_spis: int = 32) -> None:
        self.kicks: list[int] = []
        self.events: list[tuple[str, int, int]] = []
        self.gic = GicV3(nr_cpus, nr_spis, on_kick=self.kicks.append, trace=lambda *e: self.events.append(e))
        self.bus = MmioBus()
        self.gic.attach(self.bus)
        self.redist = gic_redists_base(nr_cpus)

    def rd(self, addr: int, size: int = 4) -> int:
        access = self.bus.read(addr, size)
        assert access.handled
        return access.value

    def wr(self, addr: int, value: int, size: int = 4) -> None:
        assert self.bus.write(addr, size, value).handled

    def sgi_frame(self, cpu: int) -> int:
        return self.redist + cpu * GICR_SIZE + GICR_SGI_BASE

    def rd_frame(self, cpu: int) -> int:
        return self.redist + cpu * GICR_SIZE

    def cpu_on(self, cpu: int, pmr: int = 0xF0) -> None:
        icc = self.gic.cpu(cpu)
        assert icc.write_sysreg(IccSysreg.PMR, pmr)
        assert icc.write_sysreg(IccSysreg.IGRPEN1, 1)

    def enable_spi(self, intid: int, priority: int = 0xA0, edge: bool = False, target: int = 0) -> None:
        self.wr(DIST + Gicd.IPRIORITYR + intid, priority, 1)
        icfgr = DIST + Gicd.ICFGR + (intid // 16) * 4
        self.wr(
            icfgr, (self.rd(icfgr) & ~(3 << (2 * (intid % 16)))) | ((2 if edge else 0) << (2 * (intid % 16)))
        )
        self.wr(DIST + Gicd.IROUTER + 8 * intid, vcpu_mpidr(target), 8)
        self.wr(DIST + Gicd.ISENABLER + (intid // 32) * 4, 1 << (intid % 32))

    def enable_private(self, cpu: int, intid: int, priority: int = 0xA0) -> None:
        self.wr(self.sgi_frame(cpu) + GicrSgi.IPRIORITYR0 + intid, priority, 1)
        self.wr(self.sgi_frame(cpu) + GicrSgi.ISENABLER0, 1 << intid)

    def iar(self, cpu: int = 0) -> int:
        value = self.gic.cpu(cpu).read_sysreg(IccSysreg.IAR1)
        assert value is not None
        return value

    def eoi(self, intid: int, cpu: int = 0) -> None:
        assert self.gic.cpu(cpu).write_sysreg(IccSysreg.EOIR1, intid)


@pytest.fixture
def g() -> Guest:
    guest = Guest()
    guest.wr(DIST + Gicd.CTLR, GICD_CTLR_EnableGrp1)
    return guest


# --- identification and reset values -----------------------------------------------------------


def test_distributor_identification_as_kvm_presents_it() -> None:
    guest = Guest(nr_cpus=2, nr_spis=64)
    assert guest.rd(DIST + Gicd.CTLR) == 0x50  # ARE | DS, both groups disabled
    typer = guest.rd(DIST + Gicd.TYPER)
    assert typer & 0x1F == 2  # (32 + 64) / 32 - 1
    assert (typer >> 19) & 0x1F == 9  # IDbits: 10 bits of INTID
    assert not typer & (1 << 17)  # no LPIs
    assert typer & (1 << 25)  # No1N
    assert guest.rd(DIST + Gicd.IIDR) == 0x4B00_343B
    assert guest.rd(DIST + Gicd.PIDR2) == 0x3B
    assert guest.rd(DIST + Gicd.TYPER2) == 0
    assert guest.rd(DIST + Gicd.STATUSR) == 0


def test_ctlr_ds_and_are_are_rao_wi_and_the_group_enables_stick() -> None:
    guest = Guest()
    guest.wr(DIST + Gicd.CTLR, 0)
    assert guest.rd(DIST + Gicd.CTLR) == 0x50
    guest.wr(DIST + Gicd.CTLR, 0xFFFF_FFFF)
    assert guest.rd(DIST + Gicd.CTLR) == 0x50 | GICD_CTLR_EnableGrp0 | GICD_CTLR_EnableGrp1


def test_kvmtool_spi_count_from_allocated_lines() -> None:
    lines = IrqLines()
    for _ in range(6):
        lines.alloc()
    assert lines.allocated == 6
    assert nr_spis_for_lines(lines.allocated) == 32
    assert nr_spis_for_lines(33) == 64
    assert nr_spis_for_lines(0) == 0
    with pytest.raises(GicError):
        GicV3(1, 33)
    with pytest.raises(GicError):
        GicV3(0)


def test_redistributor_typer_affinity_processor_number_last() -> None:
    guest = Guest(nr_cpus=3)
    for cpu in range(3):
        typer = guest.rd(guest.rd_frame(cpu) + GicrRd.TYPER, 8)
        assert typer >> 32 == vcpu_mpidr(cpu)
        assert (typer >> 8) & 0xFFFF == cpu
        assert bool(typer & (1 << 4)) == (cpu == 2)
        assert not typer & 1  # no physical LPIs
        low = guest.rd(guest.rd_frame(cpu) + GicrRd.TYPER)
        high = guest.rd(guest.rd_frame(cpu) + GicrRd.TYPER + 4)
        assert (high << 32) | low == typer
    assert guest.rd(guest.rd_frame(0) + GicrRd.IIDR) == 0x4B00_043B
    assert guest.rd(guest.rd_frame(0) + GicrRd.PIDR2) == 0x3B
    assert guest.rd(guest.rd_frame(0) + GicrRd.CTLR) == 0b110  # IR | CES, LPIs not enabled


def test_private_interrupt_reset_state() -> None:
    guest = Guest()
    sgi = guest.sgi_frame(1)
    assert guest.rd(sgi + GicrSgi.IGROUPR0) == 0xFFFF_FFFF  # all Group 1
    assert guest.rd(sgi + GicrSgi.ISENABLER0) == 0x0000_FFFF  # SGIs enabled
    assert guest.rd(sgi + GicrSgi.ICFGR0) == 0xAAAA_AAAA  # SGIs edge
    assert guest.rd(sgi + GicrSgi.ICFGR1) == 0  # PPIs level
    assert guest.rd(sgi + GicrSgi.ISPENDR0) == 0
    assert guest.rd(sgi + GicrSgi.ISACTIVER0) == 0
    assert guest.rd(sgi + GicrSgi.IPRIORITYR0 + 0x1C) == 0


def test_waker_processor_sleep_and_children_asleep() -> None:
    guest = Guest()
    waker = guest.rd_frame(0) + GicrRd.WAKER
    assert guest.rd(waker) == 0
    guest.wr(waker, GICR_WAKER_ProcessorSleep | 1)
    assert guest.rd(waker) == GICR_WAKER_ProcessorSleep | GICR_WAKER_ChildrenAsleep
    guest.wr(waker, 0)
    assert guest.rd(waker) == 0


# --- access rules ------------------------------------------------------------------------------


def test_private_ids_in_the_distributor_are_raz_wi(g: Guest) -> None:
    g.wr(DIST + Gicd.ISENABLER, 0xFFFF_FFFF)
    assert g.rd(DIST + Gicd.ISENABLER) == 0
    assert g.rd(DIST + Gicd.IGROUPR) == 0
    g.wr(DIST + Gicd.IPRIORITYR, 0x8080_8080)
    assert g.rd(DIST + Gicd.IPRIORITYR) == 0
    assert g.rd(g.sgi_frame(0) + GicrSgi.ISENABLER0) == 0xFFFF


def test_unimplemented_spis_are_raz_wi(g: Guest) -> None:
    # 32 SPIs: INTIDs 64 and up do not exist.
    g.wr(DIST + Gicd.ISENABLER + 8, 0xFFFF_FFFF)
    assert g.rd(DIST + Gicd.ISENABLER + 8) == 0
    g.wr(DIST + Gicd.IROUTER + 8 * 64, 1, 8)
    assert g.rd(DIST + Gicd.IROUTER + 8 * 64, 8) == 0
    g.wr(DIST + Gicd.ISENABLER + 4, 0xFFFF_FFFF)
    assert g.rd(DIST + Gicd.ISENABLER + 4) == 0xFFFF_FFFF


def test_priority_is_byte_accessible_with_five_bits(g: Guest) -> None:
    g.wr(DIST + Gicd.IPRIORITYR + 33, 0xFF, 1)
    assert g.rd(DIST + Gicd.IPRIORITYR + 33, 1) == 0xF8
    assert g.rd(DIST + Gicd.IPRIORITYR + 32) == 0x0000_F800
    g.wr(DIST + Gicd.IPRIORITYR + 36, 0x1020_3047)
    assert g.rd(DIST + Gicd.IPRIORITYR + 36) == 0x1020_3040
    g.wr(g.sgi_frame(0) + GicrSgi.IPRIORITYR0 + 27, 0x90, 1)
    assert g.gic.irq(0, 27).priority == 0x90
    assert g.gic.irq(1, 27).priority == 0  # banked per redistributor


def test_halfword_and_misaligned_accesses_are_raz_wi(g: Guest) -> None:
    g.wr(DIST + Gicd.ISENABLER + 4, 0xFFFF, 2)
    assert g.rd(DIST + Gicd.ISENABLER + 4) == 0
    g.wr(DIST + Gicd.IPRIORITYR + 32, 0x8080, 2)
    assert g.rd(DIST + Gicd.IPRIORITYR + 32) == 0
    g.wr(DIST + Gicd.ISENABLER + 4, 1, 1)  # bytes only where the spec says so
    assert g.rd(DIST + Gicd.ISENABLER + 4) == 0
    assert g.rd(DIST + Gicd.CTLR, 8) == 0  # 64-bit read of a 32-bit register
    assert g.rd(DIST + Gicd.TYPER + 2, 2) == 0  # misaligned halfword
    g.wr(DIST + Gicd.CTLR + 1, 0xFF, 1)
    assert g.rd(DIST + Gicd.CTLR) == 0x52


def test_irouter_keeps_aff2_aff1_aff0_only(g: Guest) -> None:
    router = DIST + Gicd.IROUTER + 8 * 40
    g.wr(router, (0xFF << 32) | (1 << 31) | 0x00AB_CD01, 8)
    assert g.rd(router, 8) == 0x00AB_CD01  # Aff3 and the routing mode are RES0
    g.wr(router, 1)
    assert g.rd(router) == 1 and g.rd(router + 4) == 0
    g.wr(router + 4, 0xFF)
    assert g.rd(router, 8) == 1


def test_icfgr_for_spis_only_the_edge_bit_is_writable(g: Guest) -> None:
    g.wr(DIST + Gicd.ICFGR + 8, 0xFFFF_FFFF)  # INTIDs 32-47
    assert g.rd(DIST + Gicd.ICFGR + 8) == 0xAAAA_AAAA
    g.wr(g.sgi_frame(0) + GicrSgi.ICFGR1, 0xFFFF_FFFF)  # PPIs stay level
    assert g.rd(g.sgi_frame(0) + GicrSgi.ICFGR1) == 0
    g.wr(g.sgi_frame(0) + GicrSgi.ICFGR0, 0)  # SGIs stay edge
    assert g.rd(g.sgi_frame(0) + GicrSgi.ICFGR0) == 0xAAAA_AAAA


def test_set_and_clear_registers(g: Guest) -> None:
    base = DIST + 4  # INTIDs 32-63
    g.wr(base + Gicd.ISENABLER, 0b1010)
    g.wr(base + Gicd.ISENABLER, 0b0100)
    assert g.rd(base + Gicd.ICENABLER) == 0b1110
    g.wr(base + Gicd.ICENABLER, 0b0010)
    assert g.rd(base + Gicd.ISENABLER) == 0b1100
    g.wr(base + Gicd.ISACTIVER, 1 << 5)
    assert g.rd(base + Gicd.ICACTIVER) == 1 << 5
    g.wr(base + Gicd.ICACTIVER, 1 << 5)
    assert g.rd(base + Gicd.ISACTIVER) == 0
    g.wr(base + Gicd.IGROUPR, 0xFFFF_FFFE)
    assert g.rd(base + Gicd.IGROUPR) == 0xFFFF_FFFE


# --- pending, active, priority -------------------------------------------------------------------


def test_level_spi_follows_its_line_and_stays_pending_while_high(g: Guest) -> None:
    g.cpu_on(0)
    g.enable_spi(40)
    assert not g.gic.irq_pending(0)
    g.gic.set_spi_level(40, True)
    assert g.rd(DIST + Gicd.ISPENDR + 4) == 1 << 8
    assert g.gic.irq_pending(0) and g.gic.highest_pending(0) == 40
    assert g.iar() == 40
    # active and (line still high) pending: not signalled again until deactivated
    assert g.rd(DIST + Gicd.ISACTIVER + 4) == 1 << 8
    assert g.rd(DIST + Gicd.ISPENDR + 4) == 1 << 8
    assert not g.gic.irq_pending(0)
    g.eoi(40)
    assert g.gic.irq_pending(0)  # the line is still high
    g.gic.set_spi_level(40, False)
    assert not g.gic.irq_pending(0) and g.rd(DIST + Gicd.ISPENDR + 4) == 0


def test_level_spi_clear_pending_does_not_beat_a_high_line(g: Guest) -> None:
    g.enable_spi(40)
    g.gic.set_spi_level(40, True)
    g.wr(DIST + Gicd.ICPENDR + 4, 1 << 8)
    assert g.rd(DIST + Gicd.ISPENDR + 4) == 1 << 8
    g.gic.set_spi_level(40, False)
    g.wr(DIST + Gicd.ISPENDR + 4, 1 << 8)  # software pending latches
    assert g.rd(DIST + Gicd.ISPENDR + 4) == 1 << 8
    g.wr(DIST + Gicd.ICPENDR + 4, 1 << 8)
    assert g.rd(DIST + Gicd.ISPENDR + 4) == 0


def test_edge_spi_latches_a_rising_edge_until_acknowledged(g: Guest) -> None:
    g.cpu_on(0)
    g.enable_spi(41, edge=True)
    g.gic.pulse_spi(41)
    assert g.gic.irq(0, 41).pending and not g.gic.irq(0, 41).line
    assert g.iar() == 41
    assert not g.gic.irq(0, 41).pending
    g.gic.pulse_spi(41)  # a new edge while active: active and pending
    assert g.gic.irq(0, 41).pending and g.gic.irq(0, 41).active
    assert g.iar() == INTID_SPURIOUS
    g.eoi(41)
    assert g.iar() == 41
    g.eoi(41)
    assert g.iar() == INTID_SPURIOUS
    assert ("raise", 0, 41) in g.events and ("ack", 0, 41) in g.events and ("eoi", 0, 41) in g.events


def test_disabled_group_or_interrupt_is_not_signalled() -> None:
    guest = Guest()
    guest.cpu_on(0)
    guest.enable_spi(40)
    guest.gic.set_spi_level(40, True)
    assert not guest.gic.irq_pending(0)  # GICD_CTLR.EnableGrp1 is 0
    guest.wr(DIST + Gicd.CTLR, GICD_CTLR_EnableGrp1)
    assert guest.gic.irq_pending(0)
    guest.wr(DIST + Gicd.ICENABLER + 4, 1 << 8)
    assert not guest.gic.irq_pending(0)
    assert guest.rd(DIST + Gicd.ISPENDR + 4) == 1 << 8  # still pending, just not forwarded
    guest.wr(DIST + Gicd.ISENABLER + 4, 1 << 8)
    assert guest.gic.cpu(0).write_sysreg(IccSysreg.IGRPEN1, 0)
    assert not guest.gic.irq_pending(0)
    assert guest.iar() == INTID_SPURIOUS


def test_a_sleeping_redistributor_forwards_nothing(g: Guest) -> None:
    g.cpu_on(0)
    g.enable_private(0, PPI_VIRT_TIMER)
    g.gic.set_ppi_level(0, PPI_VIRT_TIMER, True)
    assert g.gic.irq_pending(0)
    g.wr(g.rd_frame(0) + GicrRd.WAKER, GICR_WAKER_ProcessorSleep)
    assert not g.gic.irq_pending(0)


def test_priority_mask_and_running_priority(g: Guest) -> None:
    g.cpu_on(0, pmr=0xA0)
    icc = g.gic.cpu(0)
    g.enable_spi(40, priority=0xA0)
    g.gic.set_spi_level(40, True)
    assert not g.gic.irq_pending(0)  # not strictly above the mask
    assert icc.read_sysreg(IccSysreg.HPPIR1) == 40  # HPPIR ignores the mask
    assert g.iar() == INTID_SPURIOUS
    icc.write_sysreg(IccSysreg.PMR, 0xFF)
    assert icc.read_sysreg(IccSysreg.PMR) == 0xF8
    assert g.iar() == 40
    assert icc.read_sysreg(IccSysreg.RPR) == 0xA0
    # a higher priority interrupt preempts, an equal or lower one does not
    g.enable_spi(42, priority=0xA0)
    g.gic.set_spi_level(42, True)
    assert not g.gic.irq_pending(0)
    g.enable_spi(43, priority=0x40)
    g.gic.set_spi_level(43, True)
    assert g.gic.highest_pending(0) == 43
    assert g.iar() == 43 and icc.read_sysreg(IccSysreg.RPR) == 0x40
    assert icc.read_sysreg(IccSysreg.AP1R0) == (1 << (0xA0 >> 3)) | (1 << (0x40 >> 3))
    g.gic.set_spi_level(43, False)
    g.eoi(43)
    assert icc.read_sysreg(IccSysreg.RPR) == 0xA0
    g.gic.set_spi_level(40, False)
    g.eoi(40)
    assert icc.read_sysreg(IccSysreg.RPR) == 0xFF
    assert g.iar() == 42


def test_lowest_intid_wins_a_priority_tie(g: Guest) -> None:
    g.cpu_on(0)
    for intid in (45, 39, 50):
        g.enable_spi(intid, priority=0x80)
        g.gic.set_spi_level(intid, True)
    taken = []
    for _ in range(3):
        taken.append(g.iar())
        assert g.iar() == INTID_SPURIOUS  # equal priority does not preempt
        g.gic.set_spi_level(taken[-1], False)
        g.eoi(taken[-1])
    assert taken == [39, 45, 50]


def test_binary_point_groups_priorities() -> None:
    guest = Guest()
    guest.wr(DIST + Gicd.CTLR, GICD_CTLR_EnableGrp1)
    guest.cpu_on(0, pmr=0xFF)
    icc = guest.gic.cpu(0)
    assert icc.read_sysreg(IccSysreg.BPR0) == 2 and icc.read_sysreg(IccSysreg.BPR1) == 3
    icc.write_sysreg(IccSysreg.BPR1, 0)
    assert icc.read_sysreg(IccSysreg.BPR1) == 3  # the minimum
    icc.write_sysreg(IccSysreg.BPR1, 6)  # group priority bits [7:6]
    guest.enable_spi(40, priority=0x88)
    guest.enable_spi(41, priority=0x80)
    guest.gic.set_spi_level(40, True)
    assert guest.iar() == 40
    assert icc.read_sysreg(IccSysreg.RPR) == 0x80  # the group priority
    guest.gic.set_spi_level(41, True)
    assert not guest.gic.irq_pending(0)  # same group priority: no preemption
    icc.write_sysreg(IccSysreg.CTLR, ICC_CTLR_CBPR)
    assert icc.read_sysreg(IccSysreg.BPR1) == 3  # BPR0 + 1
    icc.write_sysreg(IccSysreg.BPR1, 7)
    assert icc.read_sysreg(IccSysreg.BPR1) == 3  # ignored with CBPR


def test_eoimode_1_splits_priority_drop_and_deactivation(g: Guest) -> None:
    g.cpu_on(0)
    icc = g.gic.cpu(0)
    icc.write_sysreg(IccSysreg.CTLR, ICC_CTLR_EOImode)
    assert icc.read_sysreg(IccSysreg.CTLR) == ICC_CTLR_EOImode | (4 << 8)
    g.enable_spi(41, edge=True)
    g.gic.pulse_spi(41)
    assert g.iar() == 41
    g.eoi(41)
    assert icc.read_sysreg(IccSysreg.RPR) == 0xFF
    assert g.gic.irq(0, 41).active  # dropped, not deactivated
    assert icc.write_sysreg(IccSysreg.DIR, 41)
    assert not g.gic.irq(0, 41).active
    # a level interrupt still asserted after the priority drop waits for its deactivation
    g.enable_spi(40)
    g.gic.set_spi_level(40, True)
    assert g.iar() == 40
    g.eoi(40)
    assert not g.gic.irq_pending(0)
    icc.write_sysreg(IccSysreg.DIR, 40)
    assert g.gic.irq_pending(0)
    g.gic.set_spi_level(40, False)
    # with EOImode 0, DIR is ignored and EOIR deactivates
    icc.write_sysreg(IccSysreg.CTLR, 0)
    g.gic.pulse_spi(41)
    assert g.iar() == 41
    icc.write_sysreg(IccSysreg.DIR, 41)
    assert g.gic.irq(0, 41).active
    g.eoi(41)
    assert not g.gic.irq(0, 41).active


def test_eoi_of_special_intids_and_with_nothing_active_is_ignored(g: Guest) -> None:
    g.cpu_on(0)
    g.enable_spi(41, edge=True)
    g.gic.pulse_spi(41)
    assert g.iar() == 41
    g.eoi(1023)
    assert g.gic.cpu(0).read_sysreg(IccSysreg.RPR) != 0xFF
    g.eoi(41)
    g.eoi(41)
    assert g.gic.cpu(0).read_sysreg(IccSysreg.RPR) == 0xFF


def test_group_0_is_an_fiq_and_iar1_does_not_take_it(g: Guest) -> None:
    g.wr(DIST + Gicd.CTLR, GICD_CTLR_EnableGrp0 | GICD_CTLR_EnableGrp1)
    g.cpu_on(0)
    icc = g.gic.cpu(0)
    icc.write_sysreg(IccSysreg.IGRPEN0, 1)
    g.enable_spi(40, priority=0x20)
    g.wr(DIST + Gicd.IGROUPR + 4, 0xFFFF_FFFF & ~(1 << 8))
    g.gic.set_spi_level(40, True)
    assert g.gic.fiq_pending(0) and not g.gic.irq_pending(0)
    assert icc.read_sysreg(IccSysreg.HPPIR1) == INTID_SPURIOUS
    assert g.iar() == INTID_SPURIOUS
    assert icc.read_sysreg(IccSysreg.HPPIR0) == 40
    assert icc.read_sysreg(IccSysreg.IAR0) == 40
    assert icc.read_sysreg(IccSysreg.AP0R0) == 1 << (0x20 >> 3)
    assert icc.write_sysreg(IccSysreg.EOIR1, 40)  # the wrong group: ignored
    assert g.gic.irq(0, 40).active
    assert icc.write_sysreg(IccSysreg.EOIR0, 40)
    assert not g.gic.irq(0, 40).active


def test_spis_go_to_the_vcpu_irouter_names() -> None:
    guest = Guest(nr_cpus=4)
    guest.wr(DIST + Gicd.CTLR, GICD_CTLR_EnableGrp1)
    for cpu in range(4):
        guest.cpu_on(cpu)
    guest.enable_spi(40, target=2)
    guest.gic.set_spi_level(40, True)
    assert [guest.gic.irq_pending(c) for c in range(4)] == [False, False, True, False]
    assert 2 in guest.kicks
    guest.wr(DIST + Gicd.IROUTER + 8 * 40, 0x0F, 8)  # no vCPU has affinity 0.0.0.15
    assert not any(guest.gic.irq_pending(c) for c in range(4))
    guest.wr(DIST + Gicd.IROUTER + 8 * 40, 3, 8)
    assert guest.iar(3) == 40


def test_ppis_are_banked_per_vcpu(g: Guest) -> None:
    g.cpu_on(0)
    g.cpu_on(1)
    g.enable_private(1, PPI_VIRT_TIMER)
    g.gic.set_ppi_level(1, PPI_VIRT_TIMER, True)
    assert not g.gic.irq_pending(0) and g.gic.irq_pending(1)
    assert g.iar(1) == PPI_VIRT_TIMER
    g.gic.set_ppi_level(1, PPI_VIRT_TIMER, False)
    g.eoi(PPI_VIRT_TIMER, cpu=1)
    assert not g.gic.irq_pending(1)
    g.gic.set_ppi_level(1, 40, True)  # not a PPI: ignored
    g.gic.set_ppi_level(7, PPI_VIRT_TIMER, True)  # no such vCPU: ignored
    g.gic.set_spi_level(5, True)  # not an SPI: ignored


# --- SGIs ----------------------------------------------------------------------------------------


def sgi1r(intid: int, targets: int, aff1: int = 0, aff2: int = 0, irm: bool = False) -> int:
    return (intid << 24) | targets | (aff1 << 16) | (aff2 << 32) | (ICC_SGIR_IRM if irm else 0)


def test_sgi1r_target_list_reaches_the_named_cpus() -> None:
    guest = Guest(nr_cpus=4)
    guest.wr(DIST + Gicd.CTLR, GICD_CTLR_EnableGrp1)
    for cpu in range(4):
        guest.cpu_on(cpu)
    assert guest.gic.cpu(0).write_sysreg(IccSysreg.SGI1R, sgi1r(3, 0b1000))
    assert [guest.gic.irq_pending(c) for c in range(4)] == [False, False, False, True]
    assert guest.rd(guest.sgi_frame(3) + GicrSgi.ISPENDR0) == 1 << 3
    assert guest.iar(3) == 3
    guest.eoi(3, cpu=3)
    assert not guest.gic.irq_pending(3)


def test_sgi1r_broadcast_skips_the_sender_and_aff1_must_match() -> None:
    guest = Guest(nr_cpus=3)
    guest.wr(DIST + Gicd.CTLR, GICD_CTLR_EnableGrp1)
    for cpu in range(3):
        guest.cpu_on(cpu)
    guest.gic.cpu(1).write_sysreg(IccSysreg.SGI1R, sgi1r(5, 0, irm=True))
    assert [guest.gic.irq_pending(c) for c in range(3)] == [True, False, True]
    guest.gic.cpu(0).write_sysreg(IccSysreg.SGI1R, sgi1r(6, 0b10, aff1=1))  # cluster 1 is empty
    assert not guest.gic.irq(1, 6).pending
    guest.gic.cpu(0).write_sysreg(IccSysreg.SGI1R, sgi1r(6, 0b10) | (1 << 44))  # RS = 1
    assert not guest.gic.irq(1, 6).pending


def test_sgi0r_only_reaches_group_0_sgis(g: Guest) -> None:
    icc = g.gic.cpu(0)
    icc.write_sysreg(IccSysreg.SGI0R, sgi1r(2, 0b10))
    assert not g.gic.irq(1, 2).pending  # SGI 2 is Group 1
    g.wr(g.sgi_frame(1) + GicrSgi.IGROUPR0, 0xFFFF_FFFB)
    icc.write_sysreg(IccSysreg.ASGI1R, sgi1r(2, 0b10))
    assert g.gic.irq(1, 2).pending


def test_sgis_can_be_disabled(g: Guest) -> None:
    g.cpu_on(1)
    g.wr(g.sgi_frame(1) + GicrSgi.ICENABLER0, 1 << 1)
    g.gic.cpu(0).write_sysreg(IccSysreg.SGI1R, sgi1r(1, 0b10))
    assert g.gic.irq(1, 1).pending and not g.gic.irq_pending(1)


# --- the CPU interface's register access rules ---------------------------------------------------


def test_cpu_interface_reset_values_and_undefined_accesses() -> None:
    icc = GicV3(1).cpu(0)
    assert icc.read_sysreg(IccSysreg.SRE) == 0b111
    assert icc.write_sysreg(IccSysreg.SRE, 0)
    assert icc.read_sysreg(IccSysreg.SRE) == 0b111
    assert icc.read_sysreg(IccSysreg.PMR) == 0
    assert icc.read_sysreg(IccSysreg.IGRPEN1) == 0
    assert icc.read_sysreg(IccSysreg.RPR) == 0xFF
    assert icc.read_sysreg(IccSysreg.CTLR) == 4 << 8  # PRIbits 4, IDbits 0, EOImode 0
    assert icc.read_sysreg(IccSysreg.IAR1) == INTID_SPURIOUS
    for write_only in (IccSysreg.EOIR1, IccSysreg.DIR, IccSysreg.SGI1R):
        assert icc.read_sysreg(write_only) is None
    for read_only in (IccSysreg.IAR1, IccSysreg.HPPIR1, IccSysreg.RPR):
        assert not icc.write_sysreg(read_only, 0)
    assert icc.read_sysreg(IccSysreg.AP1R1) is None  # 5 priority bits: one AP register
    assert icc.read_sysreg(0x1234) is None
    icc.write_sysreg(IccSysreg.CTLR, 0xFFFF_FFFF)
    assert icc.read_sysreg(IccSysreg.CTLR) == (4 << 8) | 0b11


# --- robustness ----------------------------------------------------------------------------------

addresses = st.one_of(
    st.integers(0, 0xFFFF).map(lambda off: DIST + off),
    st.integers(0, 2 * GICR_SIZE - 1).map(lambda off: gic_redists_base(2) + off),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            addresses,
            st.sampled_from((1, 2, 4, 8)),
            st.integers(0, (1 << 64) - 1),
        ),
        max_size=40,
    ),
    st.lists(st.tuples(st.sampled_from(list(IccSysreg)), st.integers(0, (1 << 64) - 1)), max_size=20),
)
def test_random_accesses_never_raise(mmio, sysregs) -> None:
    guest = Guest()
    for is_write, addr, size, value in mmio:
        if not guest.bus.find(addr, size):
            continue
        if is_write:
            guest.bus.write(addr, size, value)
        else:
            assert 0 <= guest.bus.read(addr, size).value < 1 << (8 * size)
    for cpu in range(2):
        icc = guest.gic.cpu(cpu)
        for reg, value in sysregs:
            icc.write_sysreg(reg, value)
            icc.read_sysreg(reg)
        guest.gic.irq_pending(cpu)
        assert 0 <= guest.gic.highest_pending(cpu) <= INTID_SPURIOUS


# --- the VMM's GIC -------------------------------------------------------------------------------


def test_the_vmm_puts_a_gic_behind_the_dt_windows(tmp_path) -> None:
    import io

    import libfdt

    from unirealm.host.cmdline import parse_run_args
    from unirealm.host.image import build_image
    from unirealm.host.vmm import Vmm

    image = tmp_path / "empty.img"
    image.write_bytes(build_image(None))
    vmm = Vmm(parse_run_args(["-k", str(image), "-c", "3"]), io.BytesIO(), None, log_output=io.BytesIO())
    fdt = libfdt.Fdt(vmm.dtb)
    reg = fdt.getprop(fdt.path_offset("/intc"), "reg")
    dist, _, redist, redist_size = (int.from_bytes(reg[i : i + 8], "big") for i in range(0, 32, 8))
    assert vmm.bus.read(dist + Gicd.PIDR2, 4).value == 0x3B
    assert vmm.bus.read(dist + Gicd.TYPER, 4).value & 0x1F == 1  # 4 serial lines: 32 SPIs
    last = redist + redist_size - GICR_SIZE
    assert vmm.bus.read(last + GicrRd.TYPER, 8).value == (2 << 32) | (2 << 8) | (1 << 4)
    assert len(vmm.timers) == 3 and vmm.gic.nr_cpus == 3
