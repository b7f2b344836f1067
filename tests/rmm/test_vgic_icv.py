"""More of the ICV_* behaviour a realm sees (rmm/vgic.py), each case from the GICv3
architecture (IHI 0069 §11.2 and the ICV_* register descriptions): Group 1's binary point
when CBPR is clear, preemption only by a strictly higher group priority, EOI of the other
group ignored, DIR only with EOImode 1, the IGRPEN/AP*R0/CTLR registers, and the REC's
interrupt lines (the ICC_* writes they complete, the maintenance and timer deadlines)."""

from __future__ import annotations

import time

import pytest

from unirealm.arch.gic import (
    INTID_SPURIOUS,
    LR_STATE_ACTIVE,
    LR_STATE_PENDING,
    IccSysreg,
    lr_state,
    make_lr,
)
from unirealm.arch.timer import CNT_CTL_ENABLE, CntSysreg
from unirealm.machine.interrupt import HOST_IRQ
from unirealm.machine.pykernel import SYSTEM_COUNTER_PERIOD_NS
from unirealm.rmm.vgic import MAINTENANCE_LATENCY, RecInterruptLines, VirtualCpuInterface

ICH_HCR_UIE = 1 << 1
ICH_HCR_TDIR = 1 << 14
EOICOUNT_SHIFT = 27


def enabled(*lrs: int) -> VirtualCpuInterface:
    gic = VirtualCpuInterface()
    gic.load_entry(0, list(lrs))
    gic.write_sysreg(IccSysreg.PMR, 0xFF)
    gic.write_sysreg(IccSysreg.IGRPEN0, 1)
    gic.write_sysreg(IccSysreg.IGRPEN1, 1)
    return gic


def test_group1_uses_bpr1_when_cbpr_is_clear() -> None:
    """Group priority of a Group 1 interrupt: the priority bits above BPR1 (CBPR 0); BPR0 + 1
    only with CBPR 1. Priority 0x28 with BPR1 5 has group priority 0x20."""
    gic = enabled(make_lr(40, LR_STATE_PENDING, 0x28, group=1))
    gic.write_sysreg(IccSysreg.BPR1, 5)
    assert gic.read_sysreg(IccSysreg.BPR1) == 5 and gic.read_sysreg(IccSysreg.BPR0) == 2
    assert gic.read_sysreg(IccSysreg.IAR1) == 40
    assert gic.read_sysreg(IccSysreg.RPR) == 0x20
    assert gic.read_sysreg(IccSysreg.AP1R0) == 1 << (0x20 >> 3)
    assert gic.read_sysreg(IccSysreg.AP0R0) == 0


def test_group1_uses_bpr0_plus_one_when_cbpr_is_set() -> None:
    gic = enabled(make_lr(40, LR_STATE_PENDING, 0x28, group=1))
    gic.write_sysreg(IccSysreg.BPR1, 5)
    gic.write_sysreg(IccSysreg.BPR0, 4)
    gic.write_sysreg(IccSysreg.CTLR, 1)  # CBPR
    assert gic.read_sysreg(IccSysreg.BPR1) == 5  # BPR1 reads BPR0 + 1
    assert gic.read_sysreg(IccSysreg.IAR1) == 40
    assert gic.read_sysreg(IccSysreg.RPR) == 0x20  # 0x28 less the bits at and below BPR0 + 1 = 5


def test_equal_group_priority_does_not_preempt() -> None:
    gic = enabled(make_lr(40, LR_STATE_PENDING, 0x20), make_lr(41, LR_STATE_PENDING, 0x20),
                  make_lr(42, LR_STATE_PENDING, 0x18))
    assert gic.read_sysreg(IccSysreg.IAR1) == 42  # 0x18 first
    assert gic.read_sysreg(IccSysreg.RPR) == 0x18
    gic.write_sysreg(IccSysreg.EOIR1, 42)
    assert gic.read_sysreg(IccSysreg.IAR1) == 40  # the lower list register of the two 0x20s
    assert gic.read_sysreg(IccSysreg.RPR) == 0x20
    assert gic.pending() == 0
    assert gic.read_sysreg(IccSysreg.IAR1) == INTID_SPURIOUS  # 41 at 0x20 cannot preempt 0x20
    assert lr_state(gic.lrs[1]) == LR_STATE_PENDING


def test_eoi_of_the_other_group_is_ignored() -> None:
    """EOIR1 while the highest active priority is Group 0's drops nothing, deactivates nothing
    and, for a vINTID no list register holds, counts nothing."""
    gic = enabled(make_lr(30, LR_STATE_PENDING, 0x40, group=0))
    assert gic.read_sysreg(IccSysreg.IAR0) == 30
    gic.write_sysreg(IccSysreg.EOIR1, 500)
    gic.write_sysreg(IccSysreg.EOIR1, 30)
    assert gic.apr == [1 << (0x40 >> 3), 0]
    assert lr_state(gic.lrs[0]) == LR_STATE_ACTIVE
    assert gic.eoicount == 0
    gic.write_sysreg(IccSysreg.EOIR0, 500)  # its own group: dropped, and 500 is counted
    assert gic.apr == [0, 0] and gic.eoicount == 1
    assert (gic.hcr >> EOICOUNT_SHIFT) & 0x1F == 1


def test_eoi_with_nothing_active_is_ignored() -> None:
    gic = enabled()
    gic.write_sysreg(IccSysreg.EOIR1, 77)
    gic.write_sysreg(IccSysreg.EOIR0, 77)
    assert gic.eoicount == 0 and gic.apr == [0, 0]


def test_dir_deactivates_only_in_eoimode_1() -> None:
    gic = enabled(make_lr(50, LR_STATE_PENDING, 0x40))
    assert gic.read_sysreg(IccSysreg.IAR1) == 50
    assert gic.write_sysreg(IccSysreg.DIR, 50)  # EOImode 0: DIR has no effect here
    assert lr_state(gic.lrs[0]) == LR_STATE_ACTIVE and gic.eoicount == 0
    gic.write_sysreg(IccSysreg.DIR, 51)
    assert gic.eoicount == 0
    gic.write_sysreg(IccSysreg.CTLR, 1 << 1)  # EOImode 1
    gic.write_sysreg(IccSysreg.DIR, 50)
    assert lr_state(gic.lrs[0]) != LR_STATE_ACTIVE


def test_dir_traps_only_with_tdir() -> None:
    gic = VirtualCpuInterface()
    assert not gic.traps(IccSysreg.DIR, True)
    assert not gic.traps(IccSysreg.PMR, True) and not gic.traps(IccSysreg.SGI1R, False)
    assert gic.traps(IccSysreg.SGI1R, True)
    gic.load_entry(ICH_HCR_TDIR, [])
    assert gic.traps(IccSysreg.DIR, True) and not gic.traps(IccSysreg.DIR, False)
    assert not gic.write_sysreg(IccSysreg.DIR, 5)


@pytest.mark.parametrize(("reg", "bit"), [(IccSysreg.IGRPEN0, 0), (IccSysreg.IGRPEN1, 1)])
def test_group_enables_read_back_each_their_own(reg: int, bit: int) -> None:
    gic = VirtualCpuInterface()
    other = IccSysreg.IGRPEN1 if reg == IccSysreg.IGRPEN0 else IccSysreg.IGRPEN0
    gic.write_sysreg(reg, 1)
    assert (gic.read_sysreg(reg), gic.read_sysreg(other)) == (1, 0)
    assert gic.vmcr & 3 == 1 << bit  # VENG0 bit 0, VENG1 bit 1
    gic.write_sysreg(reg, 0)
    assert gic.read_sysreg(reg) == 0 and gic.vmcr & 3 == 0
    gic.write_sysreg(reg, 2)  # only bit 0 is the enable
    assert gic.read_sysreg(reg) == 0


def test_active_priority_registers_read_and_write() -> None:
    gic = VirtualCpuInterface()
    gic.write_sysreg(IccSysreg.AP0R0, 0x0000_0101)
    gic.write_sysreg(IccSysreg.AP1R0, 0xFFFF_FFFF_0000_8000)  # 32 priority levels: bits [31:0]
    assert gic.read_sysreg(IccSysreg.AP0R0) == 0x101
    assert gic.read_sysreg(IccSysreg.AP1R0) == 0x8000
    assert gic.read_sysreg(IccSysreg.RPR) == 0  # bit 0 of AP0R0: priority 0


def test_ctlr_writes_set_and_clear_eoimode_and_cbpr() -> None:
    gic = VirtualCpuInterface()
    pribits = 4 << 8  # PRIbits: five priority bits, minus one
    gic.write_sysreg(IccSysreg.CTLR, 0b11)
    assert gic.read_sysreg(IccSysreg.CTLR) == pribits | 0b11
    gic.write_sysreg(IccSysreg.CTLR, 0)
    assert gic.read_sysreg(IccSysreg.CTLR) == pribits
    assert not gic.eoimode
    gic.write_sysreg(IccSysreg.CTLR, 0b10)
    assert gic.read_sysreg(IccSysreg.CTLR) == pribits | 0b10


def test_rec_lines_complete_icc_writes_on_the_interface() -> None:
    gic = VirtualCpuInterface()
    lines = RecInterruptLines(gic)
    assert lines.write_sysreg(IccSysreg.PMR, 0xF0)
    assert lines.read_sysreg(IccSysreg.PMR) == 0xF0 and gic.pmr == 0xF0
    assert lines.write_sysreg(IccSysreg.IGRPEN1, 1) and gic.group_enabled(1)
    assert lines.write_sysreg(CntSysreg.CNTV_CVAL_EL0, 1234)
    assert lines.timers.virtual.cval == 1234
    assert not lines.write_sysreg(IccSysreg.IAR1, 0)  # read-only: not completed
    assert lines.trapped is None


def test_rec_lines_deadline_of_an_asserted_maintenance_interrupt() -> None:
    """Asserted maintenance is due MAINTENANCE_LATENCY after it was first seen, and stays at
    that time while it stays asserted."""
    gic = VirtualCpuInterface()
    gic.load_entry(ICH_HCR_UIE, [])  # underflow: no valid list register
    assert gic.maintenance()
    lines = RecInterruptLines(gic)
    assert HOST_IRQ.deadline is None
    before = time.monotonic()
    due = lines.next_deadline()
    after = time.monotonic()
    assert due is not None and before + MAINTENANCE_LATENCY <= due <= after + MAINTENANCE_LATENCY
    assert lines.next_deadline() == due
    gic.load_entry(0, [])
    assert not gic.maintenance() and lines.next_deadline() is None
    gic.load_entry(ICH_HCR_UIE, [])
    later = lines.next_deadline()
    assert later is not None and later >= after + MAINTENANCE_LATENCY  # seen anew


@pytest.mark.parametrize("cval", [1500, 62_500_000, (1 << 56) - 1])
def test_rec_lines_timer_deadline_is_its_count_in_seconds(cval: int) -> None:
    lines = RecInterruptLines(VirtualCpuInterface())
    lines.timers.counter = lambda: 1000
    lines.write_sysreg(CntSysreg.CNTV_CVAL_EL0, cval)
    lines.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    assert lines.next_deadline() == cval * SYSTEM_COUNTER_PERIOD_NS / 1e9
