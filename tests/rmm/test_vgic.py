"""The REC's virtual GICv3 CPU interface: REC_ENTER's checks of RmiRecEnter.gicv3_hcr and
gicv3_lrs (TF-RMM gic_validate_state), the state every exit reports, and the ICV_* operations
the realm's ICC_* accesses perform on the list registers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import unirealm.arch.gic as g
from unirealm.arch.gic import (
    ICH_MISR_EOI,
    ICH_MISR_LRENP,
    ICH_MISR_NP,
    ICH_MISR_U,
    INTID_SPURIOUS,
    LR_STATE_ACTIVE,
    LR_STATE_INVALID,
    LR_STATE_PENDING,
    LR_STATE_PENDING_ACTIVE,
    IccSysreg,
    ICH_HCR_EOIcount_SHIFT,
    ICH_MISR_VGrp1D,
    ICH_MISR_VGrp1E,
    lr_state,
    make_lr,
)
from unirealm.arch.rmi import RmiFid, RmiRecExitReason, RmiStatus, feat_reg0_get
from unirealm.arch.timer import CNT_CTL_ENABLE, CNT_CTL_ISTATUS, CntSysreg
from unirealm.machine.interrupt import HOST_IRQ
from unirealm.machine.pykernel import SYSTEM_COUNTER_PERIOD_NS
from unirealm.rmm import vgic
from unirealm.rmm.vgic import RecInterruptLines, VirtualCpuInterface

from .rsi_support import ScriptedRealm, build_realm

PSCI_VERSION = 0x8400_0000


@pytest.fixture
def realm(tmp_path: Path) -> ScriptedRealm:
    return build_realm(tmp_path)


def enter_status(realm: ScriptedRealm, hcr: int = 0, lrs: list[int] | None = None) -> int:
    run = realm.rec(0).run
    page = bytearray(realm.vm.pages.mem.read(run, 0x800))
    page[0x300:0x308] = hcr.to_bytes(8, "little")
    for i, lr in enumerate((lrs or []) + [0] * (16 - len(lrs or []))):
        page[0x308 + 8 * i : 0x310 + 8 * i] = lr.to_bytes(8, "little")
    realm.vm.pages.mem.write(run, bytes(page))
    return realm.rmi(RmiFid.REC_ENTER, realm.rec(0).pa, run)[0]


def test_features_report_the_list_registers_rec_entry_takes(realm: ScriptedRealm) -> None:
    reg0 = realm.rmi(RmiFid.FEATURES, 0)[1]
    assert feat_reg0_get(reg0, "GICV3_NUM_LRS") + 1 == vgic.NUM_LRS == 16
    # The sixteenth list register is checked like the first.
    assert enter_status(realm, lrs=[0] * 15 + [make_lr(32, LR_STATE_PENDING, 0) | 1 << 61]) == RmiStatus.ERROR_REC


@pytest.mark.parametrize("bit", [0, 8, 9, 10, 11, 12, 13, 15, 16, 27, 31, 32, 63])
def test_hcr_bits_the_host_may_not_set_fail_with_error_rec(realm: ScriptedRealm, bit: int) -> None:
    assert enter_status(realm, hcr=1 << bit) == RmiStatus.ERROR_REC
    assert realm.engines[0].issued == []  # nothing ran


@pytest.mark.parametrize(
    "lr",
    [
        make_lr(32, LR_STATE_PENDING, 0) | 1 << 61,  # HW = 1
        make_lr(32, LR_STATE_ACTIVE, 0) | 1 << 61,
        make_lr(32, LR_STATE_PENDING_ACTIVE, 0) | 1 << 61,
        make_lr(32, LR_STATE_PENDING, 0x04),  # a priority bit the interface does not implement
        make_lr(32, LR_STATE_PENDING, 0x01),
        make_lr(32, LR_STATE_PENDING, 0) | (0x32 << 32),  # a pINTID with HW = 0
        make_lr(32, LR_STATE_PENDING, 0) | (1 << 44),
        make_lr(1020, LR_STATE_PENDING, 0),  # special INTIDs
        make_lr(1023, LR_STATE_PENDING, 0),
        make_lr(4096, LR_STATE_PENDING, 0),  # extended SPI range: not implemented
        make_lr(1056, LR_STATE_PENDING, 0),  # extended PPI range
        make_lr(1 << 16, LR_STATE_PENDING, 0),  # beyond 16-bit virtual INTIDs
    ],
)
def test_bad_list_registers_fail_with_error_rec(realm: ScriptedRealm, lr: int) -> None:
    assert enter_status(realm, lrs=[lr]) == RmiStatus.ERROR_REC


def test_duplicate_vintids_fail_but_invalid_entries_are_not_checked(realm: ScriptedRealm) -> None:
    a = make_lr(40, LR_STATE_PENDING, 0x80)
    assert enter_status(realm, lrs=[a, 0, make_lr(40, LR_STATE_ACTIVE, 0x80)]) == RmiStatus.ERROR_REC
    # An invalid list register may hold anything, and may repeat a valid one's vINTID.
    junk = (1 << 61) | (0x1FFF << 32) | 0xFFFF_FFFF | (0x07 << 48)
    assert enter_status(realm, lrs=[a, junk, 40]) == RmiStatus.SUCCESS


@pytest.mark.parametrize("intid", [0, 15, 16, 31, 32, 1019, 8192, 0xFFFF])
def test_valid_vintids_and_the_eoi_bit_are_accepted(realm: ScriptedRealm, intid: int) -> None:
    lr = make_lr(intid, LR_STATE_PENDING, 0xF8, eoi=True)
    assert enter_status(realm, hcr=0xFE | 1 << 14, lrs=[lr]) == RmiStatus.SUCCESS


def test_list_registers_hcr_and_vmcr_round_trip_through_exits(realm: ScriptedRealm) -> None:
    lrs = [make_lr(32 + i, LR_STATE_PENDING if i % 2 else LR_STATE_ACTIVE, 8 * i, group=i % 3 != 0) for i in range(16)]
    hcr = (1 << 14) | (1 << 6)  # TDIR, VGrp1EIE

    def program(cpu):  # type: ignore[no-untyped-def]
        yield [PSCI_VERSION]
        yield [0x8400_0008]  # SYSTEM_OFF: a PSCI exit

    realm.engines[0].program = program
    ex = realm.vm.enter(realm.rec(0), gicv3_hcr=hcr, gicv3_lrs=lrs)
    assert ex.reason == RmiRecExitReason.PSCI
    assert ex.gicv3_lrs == lrs  # nothing acknowledged them
    assert ex.gicv3_hcr == hcr  # the host's bits, EOIcount 0; En is the RMM's
    assert ex.gicv3_misr == 0  # VGrp1EIE, but the realm has not enabled Group 1
    # VMCR after reset: VPMR 0, both groups off, the binary points at their minimums (2, 3).
    assert ex.gicv3_vmcr == (2 << 21) | (3 << 18)


def test_exit_misr_follows_the_host_enables(realm: ScriptedRealm) -> None:
    def program(cpu):  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield [PSCI_VERSION]
        yield [0x8400_0008]

    realm.engines[0].program = program
    # UIE with no valid list register: the maintenance interrupt is asserted at once, so
    # REC_ENTER ends with an IRQ exit before the realm runs.
    ex = realm.vm.enter(realm.rec(0), gicv3_hcr=1 << 1)
    assert ex.reason == RmiRecExitReason.IRQ and ex.gicv3_misr == ICH_MISR_U
    assert realm.engines[0].issued == []
    # NPIE with a pending list register: nothing asserted, the realm runs.
    ex = realm.vm.enter(realm.rec(0), gicv3_hcr=1 << 3, gicv3_lrs=[make_lr(27, LR_STATE_PENDING, 0)])
    assert ex.reason == RmiRecExitReason.PSCI and ex.gicv3_misr == 0


def test_icv_acknowledge_and_eoi_walk_the_list_register_states() -> None:
    gic = VirtualCpuInterface()
    gic.load_entry(0, [make_lr(27, LR_STATE_PENDING, 0xA0), make_lr(59, LR_STATE_PENDING, 0x80)])
    assert gic.pending() == 0  # VPMR 0 and Group 1 disabled: nothing signalled
    assert gic.any_pending()
    assert gic.read_sysreg(IccSysreg.IAR1) == INTID_SPURIOUS
    gic.write_sysreg(IccSysreg.PMR, 0xFF)
    assert gic.read_sysreg(IccSysreg.PMR) == 0xF8  # five priority bits
    assert gic.pending() == 0
    gic.write_sysreg(IccSysreg.IGRPEN1, 1)
    assert gic.pending() == 1  # IRQ
    assert gic.read_sysreg(IccSysreg.HPPIR1) == 59  # the higher priority (lower value)
    assert gic.read_sysreg(IccSysreg.IAR1) == 59
    assert lr_state(gic.lrs[1]) == LR_STATE_ACTIVE
    assert gic.read_sysreg(IccSysreg.RPR) == 0x80
    # 27 (priority 0xA0) cannot preempt the running 0x80.
    assert gic.pending() == 0 and gic.read_sysreg(IccSysreg.IAR1) == INTID_SPURIOUS
    gic.write_sysreg(IccSysreg.EOIR1, 59)
    assert lr_state(gic.lrs[1]) == LR_STATE_INVALID and gic.read_sysreg(IccSysreg.RPR) == 0xFF
    assert gic.read_sysreg(IccSysreg.IAR1) == 27
    gic.write_sysreg(IccSysreg.EOIR1, 27)
    assert [lr_state(lr) for lr in gic.lrs[:2]] == [LR_STATE_INVALID] * 2
    assert gic.eoicount == 0 and gic.misr() == 0


def test_icv_eoimode_1_splits_priority_drop_and_deactivation() -> None:
    gic = VirtualCpuInterface()
    gic.write_sysreg(IccSysreg.PMR, 0xFF)
    gic.write_sysreg(IccSysreg.IGRPEN1, 1)
    gic.write_sysreg(IccSysreg.CTLR, 1 << 1)
    assert gic.read_sysreg(IccSysreg.CTLR) == (1 << 1) | (4 << 8)
    gic.load_entry(0, [make_lr(30, LR_STATE_PENDING, 0x40, eoi=True)])
    assert gic.read_sysreg(IccSysreg.IAR1) == 30
    gic.write_sysreg(IccSysreg.EOIR1, 30)
    assert gic.read_sysreg(IccSysreg.RPR) == 0xFF and lr_state(gic.lrs[0]) == LR_STATE_ACTIVE
    gic.write_sysreg(IccSysreg.DIR, 30)
    assert lr_state(gic.lrs[0]) == LR_STATE_INVALID
    assert gic.misr() == ICH_MISR_EOI  # an EOI-flagged software interrupt was deactivated
    # DIR of an interrupt no list register holds counts in EOIcount; LRENPIE makes it visible.
    gic.write_sysreg(IccSysreg.DIR, 44)
    gic.load_entry(1 << 2, [0])
    assert gic.eoicount == 1 and gic.misr() & ICH_MISR_LRENP
    assert gic.exit_state()["exit_gicv3_hcr"] == (1 << 2) | (1 << ICH_HCR_EOIcount_SHIFT)
    # With TDIR the write traps to the host instead.
    gic.load_entry(1 << 14, [])
    assert gic.traps(IccSysreg.DIR, True) and not gic.write_sysreg(IccSysreg.DIR, 30)


def test_eoi_of_an_interrupt_not_in_the_list_registers_counts_as_the_acs_expects() -> None:
    """gic_ctrl_hcr's last step: SGI 12 acknowledged and left active, then an EOI of 60."""
    gic = VirtualCpuInterface()
    gic.write_sysreg(IccSysreg.PMR, 0xFF)
    gic.write_sysreg(IccSysreg.IGRPEN1, 1)
    gic.load_entry(1 << 2, [make_lr(12, LR_STATE_PENDING, 0)])
    assert gic.read_sysreg(IccSysreg.IAR1) == 12
    gic.write_sysreg(IccSysreg.EOIR1, 60)
    assert gic.eoicount == 1 and gic.misr() == ICH_MISR_LRENP
    assert lr_state(gic.lrs[0]) == LR_STATE_ACTIVE
    gic.write_sysreg(IccSysreg.EOIR1, 12)  # no active priority left: ignored
    assert gic.eoicount == 1 and lr_state(gic.lrs[0]) == LR_STATE_ACTIVE


def test_misr_underflow_no_pending_and_group_status() -> None:
    gic = VirtualCpuInterface()
    gic.load_entry((1 << 1) | (1 << 3) | (1 << 6) | (1 << 7), [make_lr(32, LR_STATE_PENDING, 0)] * 1)
    assert gic.misr() == ICH_MISR_U | ICH_MISR_VGrp1D
    gic.write_sysreg(IccSysreg.IGRPEN1, 1)
    assert gic.misr() == ICH_MISR_U | ICH_MISR_VGrp1E
    gic.load_entry(1 << 3, [make_lr(32, LR_STATE_ACTIVE, 0), make_lr(33, LR_STATE_PENDING_ACTIVE, 0)])
    assert gic.misr() == ICH_MISR_NP  # pending-and-active is not pending
    assert gic.maintenance()


def test_group0_signals_fiq_and_lpis_have_no_active_state() -> None:
    gic = VirtualCpuInterface()
    gic.write_sysreg(IccSysreg.PMR, 0xFF)
    gic.write_sysreg(IccSysreg.IGRPEN0, 1)
    gic.write_sysreg(IccSysreg.IGRPEN1, 1)
    gic.load_entry(0, [make_lr(5, LR_STATE_PENDING, 0x10, group=0), make_lr(8192, LR_STATE_PENDING, 0x20)])
    assert gic.pending() == 2  # FIQ
    assert gic.read_sysreg(IccSysreg.IAR1) == INTID_SPURIOUS  # the highest is Group 0
    assert gic.read_sysreg(IccSysreg.IAR0) == 5
    gic.write_sysreg(IccSysreg.EOIR0, 5)
    assert gic.read_sysreg(IccSysreg.IAR1) == 8192
    assert lr_state(gic.lrs[1]) == LR_STATE_INVALID


def test_binary_points_and_cbpr() -> None:
    gic = VirtualCpuInterface()
    gic.write_sysreg(IccSysreg.BPR0, 0)
    gic.write_sysreg(IccSysreg.BPR1, 0)
    assert (gic.read_sysreg(IccSysreg.BPR0), gic.read_sysreg(IccSysreg.BPR1)) == (2, 3)
    gic.write_sysreg(IccSysreg.BPR0, 4)
    gic.write_sysreg(IccSysreg.CTLR, 1)
    assert gic.read_sysreg(IccSysreg.BPR1) == 5
    gic.write_sysreg(IccSysreg.BPR1, 7)  # ignored with CBPR
    assert gic.read_sysreg(IccSysreg.BPR1) == 5
    assert (gic.vmcr >> 21) & 7 == 4 and gic.vmcr & (1 << 4)


def test_sgi_writes_trap_and_write_only_registers_are_undefined() -> None:
    gic = VirtualCpuInterface()
    for key in (IccSysreg.SGI1R, IccSysreg.SGI0R, IccSysreg.ASGI1R):
        assert gic.traps(key, True) and not gic.write_sysreg(key, 1)
        assert gic.read_sysreg(key) is None
    assert gic.read_sysreg(IccSysreg.EOIR1) is None
    assert not gic.write_sysreg(IccSysreg.IAR1, 0)
    assert gic.read_sysreg(IccSysreg.SRE) == 7


def test_rec_lines_mask_an_asserted_timer_and_report_level_changes() -> None:
    """TF-RMM check_pending_timers: an output that changed since the last exit ends REC_ENTER;
    while asserted at entry it is masked (no deadline); unmasked again once it drops."""
    lines = RecInterruptLines(VirtualCpuInterface())
    clock = [1000]
    lines.timers.counter = lambda: clock[0]
    v = lines.timers.virtual
    assert not lines.check_timers() and lines.next_deadline() is None
    lines.write_sysreg(CntSysreg.CNTV_CVAL_EL0, 1500)
    lines.write_sysreg(CntSysreg.CNTV_CTL_EL0, CNT_CTL_ENABLE)
    due = lines.next_deadline()
    assert due is not None and abs(due - 1500 * SYSTEM_COUNTER_PERIOD_NS / 1e9) < 1e-9
    clock[0] = 1500
    assert lines.next_deadline() == 0.0  # fired and unmasked: a physical interrupt now
    fields = lines.at_exit()
    assert fields["exit_cntv_ctl"] == CNT_CTL_ENABLE | CNT_CTL_ISTATUS and fields["exit_cntv_cval"] == 1500
    assert not lines.check_timers()  # asserted at the exit and now: masked, the realm runs
    assert lines.next_deadline() is None
    v.write_ctl(0)  # the realm's handler disables it
    lines.at_exit()
    v.write_ctl(CNT_CTL_ENABLE)  # and re-enables it, already due, before the next entry
    assert lines.check_timers()  # changed since the last exit: an IRQ exit before the realm runs


def test_rec_lines_take_the_hosts_timer_and_trapped_writes() -> None:
    lines = RecInterruptLines(VirtualCpuInterface())
    try:
        HOST_IRQ.deadline = 123.0
        assert lines.next_deadline() == 123.0
    finally:
        HOST_IRQ.deadline = None
    assert lines.write_sysreg(IccSysreg.SGI1R, 0x0C00_0008)  # completed, and the run ends at once
    assert lines.trapped == (IccSysreg.SGI1R, 0x0C00_0008) and lines.next_deadline() == 0.0
    assert lines.read_sysreg(CntSysreg.CNTFRQ_EL0) == 62_500_000
    assert lines.read_sysreg(IccSysreg.SRE) == 7 and lines.read_sysreg(0x1234) is None


def _misr_reference(gic: VirtualCpuInterface) -> int:
    """ICH_MISR_EL2, condition by condition as the GICv3 architecture states them."""
    states = [g.lr_state(lr) for lr in gic.lrs]
    hcr, vmcr, misr = gic.hcr, gic.vmcr, 0
    if any(s == g.LR_STATE_INVALID and lr & g.ICH_LR_EOI and not lr & g.ICH_LR_HW for s, lr in zip(states, gic.lrs, strict=True)):
        misr |= g.ICH_MISR_EOI
    if hcr & g.ICH_HCR_UIE and sum(s != g.LR_STATE_INVALID for s in states) <= 1:
        misr |= g.ICH_MISR_U
    if hcr & g.ICH_HCR_LRENPIE and gic.eoicount:
        misr |= g.ICH_MISR_LRENP
    if hcr & g.ICH_HCR_NPIE and g.LR_STATE_PENDING not in states:
        misr |= g.ICH_MISR_NP
    for eie, die, eng, e, d in ((g.ICH_HCR_VGrp0EIE, g.ICH_HCR_VGrp0DIE, g.ICH_VMCR_VENG0, g.ICH_MISR_VGrp0E,
                                 g.ICH_MISR_VGrp0D),
                                (g.ICH_HCR_VGrp1EIE, g.ICH_HCR_VGrp1DIE, g.ICH_VMCR_VENG1, g.ICH_MISR_VGrp1E,
                                 g.ICH_MISR_VGrp1D)):
        misr |= e if hcr & eie and vmcr & eng else 0
        misr |= d if hcr & die and not vmcr & eng else 0
    return misr


def test_misr_matches_the_architecture_over_random_states() -> None:
    """The RMM's ICH_MISR_EL2 (computed at every REC exit, with a fast path for empty list
    registers) against the architecture's conditions, over random list registers, HCR, VMCR."""
    rng = random.Random(5)
    hcr_bits = [g.ICH_HCR_En, g.ICH_HCR_UIE, g.ICH_HCR_LRENPIE, g.ICH_HCR_NPIE, g.ICH_HCR_VGrp0EIE,
                g.ICH_HCR_VGrp0DIE, g.ICH_HCR_VGrp1EIE, g.ICH_HCR_VGrp1DIE]
    seen = set()
    for _ in range(3000):
        gic = VirtualCpuInterface()
        gic.hcr = sum(b for b in hcr_bits if rng.random() < 0.3) | (rng.randrange(4) << g.ICH_HCR_EOIcount_SHIFT)
        gic.vmcr = rng.choice([0, g.ICH_VMCR_VENG0, g.ICH_VMCR_VENG1, g.ICH_VMCR_VENG0 | g.ICH_VMCR_VENG1])
        for i in range(len(gic.lrs)):
            if rng.random() < 0.25:
                lr = g.lr_with_state(rng.randrange(1, 64), rng.randrange(4))
                lr |= g.ICH_LR_EOI if rng.random() < 0.3 else 0
                lr |= g.ICH_LR_HW if rng.random() < 0.1 else 0
                gic.lrs[i] = lr
        expected = _misr_reference(gic)
        assert gic.misr() == expected, (hex(gic.hcr), hex(gic.vmcr), [hex(lr) for lr in gic.lrs])
        seen.add(expected)
    assert len(seen) > 20  # the states reached many different combinations
