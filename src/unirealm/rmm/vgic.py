"""The virtual GICv3 CPU interface of a REC: the ICH_*_EL2 state the RMM keeps for it and the
ICV_*_EL1 behaviour the realm sees through its ICC_* accesses (Arm IHI 0069 §11 "Virtual
interrupt handling", the ICH_* and ICV_* register descriptions; facts in `arch/gic.py`).

The host fills `gicv3_hcr` and `gicv3_lrs` of RmiRecEnter; REC_ENTER checks them as TF-RMM's
`gic_validate_state` does (ERROR_REC otherwise) and takes the host's HCR bits and all the list
registers into the REC; every REC exit reports the list registers, HCR (the host's bits and
EOIcount), MISR and VMCR (TF-RMM `gic_copy_state_to_rec_exit`). The interface is modelled
as hardware with 16 list registers, 5 priority and 5 preemption bits (AP0R0/AP1R0 only) and
16-bit virtual INTIDs without the extended ranges (ICH_VTR_EL2 ListRegs 15, PRIbits 4,
PREbits 4, IDbits 0).

- Acknowledge (ICV_IAR0/1): the highest priority pending list register of the group whose
  group is enabled (VMCR.VENG0/1), whose priority is below VPMR and whose group priority
  preempts the running priority becomes active (an LPI's becomes invalid: LPIs have no
  active state); its group priority is set in the active priorities; the read returns its
  vINTID, or 1023.
- End of interrupt (ICV_EOIR0/1): drops the highest active priority when it belongs to that
  group (otherwise the write is ignored); with VEOIM 0 it also deactivates the vINTID's
  list register, and a vINTID below 8192 that no list register holds active increments
  ICH_HCR_EL2.EOIcount. ICV_DIR deactivates with VEOIM 1 in the same way. With TDIR set a
  DIR write traps to the host instead.
- ICV_HPPIR0/1 the highest priority pending list register of the group, ICV_RPR the running
  priority, ICV_PMR/BPR0/BPR1/CTLR(CBPR, EOImode)/IGRPEN0/IGRPEN1 live in ICH_VMCR_EL2.
- SGI generation (ICC_SGI0R/SGI1R/ASGI1R) is not virtualised by GICv3: those writes trap to
  EL2 and the RMM reports them to the host (`TRAPPED_WRITES`).
- The maintenance interrupt is asserted while ICH_MISR_EL2 is not zero (En is always set
  while the REC runs): it is a physical interrupt, so it ends REC_ENTER with an IRQ exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from unirealm.arch.gic import (
    ICC_SRE_DFB,
    ICC_SRE_DIB,
    ICC_SRE_SRE,
    ICH_HCR_LRENPIE,
    ICH_HCR_NPIE,
    ICH_HCR_TDIR,
    ICH_HCR_UIE,
    ICH_LR_EOI,
    ICH_LR_HW,
    ICH_MISR_EOI,
    ICH_MISR_LRENP,
    ICH_MISR_NP,
    ICH_MISR_U,
    ICH_VMCR_VBPR0_SHIFT,
    ICH_VMCR_VBPR1_SHIFT,
    ICH_VMCR_VCBPR,
    ICH_VMCR_VENG0,
    ICH_VMCR_VENG1,
    ICH_VMCR_VEOIM,
    ICH_VMCR_VPMR_SHIFT,
    IDLE_PRIORITY,
    INTID_SPURIOUS,
    LR_STATE_ACTIVE,
    LR_STATE_INVALID,
    LR_STATE_PENDING,
    LR_STATE_PENDING_ACTIVE,
    MAX_SPI,
    MIN_LPI,
    SPECIAL_INTIDS,
    ICC_CTLR_EOImode,
    ICC_CTLR_PRIbits_SHIFT,
    IccSysreg,
    ICH_HCR_En,
    ICH_HCR_EOIcount_MASK,
    ICH_HCR_EOIcount_SHIFT,
    ICH_HCR_VGrp0DIE,
    ICH_HCR_VGrp0EIE,
    ICH_HCR_VGrp1DIE,
    ICH_HCR_VGrp1EIE,
    ICH_LR_pINTID_MASK,
    ICH_LR_State_SHIFT,
    ICH_MISR_VGrp0D,
    ICH_MISR_VGrp0E,
    ICH_MISR_VGrp1D,
    ICH_MISR_VGrp1E,
    lr_group,
    lr_intid,
    lr_priority,
    lr_state,
    lr_with_state,
)
from unirealm.arch.timer import COUNTER_MASK
from unirealm.machine.interrupt import HOST_IRQ
from unirealm.machine.pykernel import SYSTEM_COUNTER_PERIOD_NS
from unirealm.machine.timer import GenericTimer

NUM_LRS = 16  # ICH_VTR_EL2.ListRegs + 1; RMI_FEATURES reports GICV3_NUM_LRS = NUM_LRS - 1
PRIORITY_BITS = 5  # ICH_VTR_EL2.PRIbits + 1 (and PREbits + 1)
MAX_VINTID = (1 << 16) - 1  # ICH_VTR_EL2.IDbits 0: 16-bit virtual INTIDs
# Low priority bits an LR may not set (TF-RMM pri_res0_mask), and the implemented ones.
PRIORITY_RES0 = (1 << (8 - PRIORITY_BITS)) - 1
PRIORITY_MASK = 0xFF & ~PRIORITY_RES0
_PRIORITY_SHIFT = 8 - PRIORITY_BITS  # active-priority bit n stands for group priority n << 3
_APR_MASK = (1 << (1 << PRIORITY_BITS)) - 1
BPR0_MIN = 7 - PRIORITY_BITS
BPR1_MIN = BPR0_MIN + 1

# The ICH_HCR_EL2 bits the host controls (TF-RMM ICH_HCR_EL2_NS_MASK): RmiRecEnter.gicv3_hcr
# may set no others, and RmiRecExit.gicv3_hcr shows these and EOIcount.
HCR_HOST_BITS = (
    ICH_HCR_UIE
    | ICH_HCR_LRENPIE
    | ICH_HCR_NPIE
    | ICH_HCR_VGrp0EIE
    | ICH_HCR_VGrp0DIE
    | ICH_HCR_VGrp1EIE
    | ICH_HCR_VGrp1DIE
    | ICH_HCR_TDIR
)
HCR_EXIT_BITS = HCR_HOST_BITS | ICH_HCR_EOIcount_MASK
# The HCR bits that enable a maintenance condition other than EOI.
_MISR_ENABLES = (
    ICH_HCR_UIE | ICH_HCR_LRENPIE | ICH_HCR_NPIE | ICH_HCR_VGrp0EIE | ICH_HCR_VGrp0DIE | ICH_HCR_VGrp1EIE
    | ICH_HCR_VGrp1DIE
)

ICC_SRE_VALUE = ICC_SRE_SRE | ICC_SRE_DFB | ICC_SRE_DIB
# Writes that trap to EL2 whatever the host chose: GICv3 does not virtualise SGI generation.
TRAPPED_WRITES = frozenset({IccSysreg.SGI1R, IccSysreg.SGI0R, IccSysreg.ASGI1R})
_VMCR_WRITABLE_CTLR = ICH_VMCR_VCBPR | ICH_VMCR_VEOIM


def valid_vintid(intid: int) -> bool:
    """SGIs, PPIs and SPIs 0..1019 and LPIs 8192..MAX_VINTID (no extended ranges)."""
    return 0 <= intid <= MAX_SPI or MIN_LPI <= intid <= MAX_VINTID


def entry_state_valid(hcr: int, lrs: list[int] | tuple[int, ...]) -> bool:
    """TF-RMM `gic_validate_state`: only the host's HCR bits; every valid list register has
    HW 0, no priority bits the interface does not implement, nothing in pINTID but the EOI bit,
    a vINTID in range, and no two valid list registers name the same vINTID."""
    if hcr & ~HCR_HOST_BITS:
        return False
    seen: set[int] = set()
    for lr in lrs[:NUM_LRS]:
        if not lr or lr_state(lr) == LR_STATE_INVALID:  # a zero list register is an invalid one
            continue
        intid = lr_intid(lr)
        if lr & ICH_LR_HW or lr_priority(lr) & PRIORITY_RES0 or lr & ICH_LR_pINTID_MASK & ~ICH_LR_EOI:
            return False
        if not valid_vintid(intid) or intid in seen:
            return False
        seen.add(intid)
    return True


class VirtualCpuInterface:
    """ICH_HCR/VMCR/LR/AP0R0/AP1R0_EL2 of one REC and the ICV_* operations on them."""

    def __init__(self) -> None:
        # TF-RMM gic_cpu_state_init: En (plus vSGIEOICount and DVIM, which this model has no
        # use for: no GICv4.1 virtual SGIs, no direct injection).
        self.hcr = ICH_HCR_En
        self.lrs = [0] * NUM_LRS
        # VMCR as the hardware holds it after a zero write: the binary points at their minimum.
        self.vmcr = (BPR0_MIN << ICH_VMCR_VBPR0_SHIFT) | (BPR1_MIN << ICH_VMCR_VBPR1_SHIFT)
        self.apr = [0, 0]  # ICH_AP0R0_EL2, ICH_AP1R0_EL2

    # --- REC entry and exit ---------------------------------------------------------------
    def load_entry(self, hcr: int, lrs: list[int] | tuple[int, ...]) -> None:
        """TF-RMM gic_copy_state_from_rec_entry: every list register, and the host's HCR bits
        (EOIcount stays the REC's)."""
        self.lrs = list(lrs[:NUM_LRS])
        self.hcr = (self.hcr & ~HCR_HOST_BITS) | (hcr & HCR_HOST_BITS)

    def exit_state(self) -> dict[str, object]:
        """The RmiRecExit GIC fields."""
        return {
            "exit_gicv3_hcr": self.hcr & HCR_EXIT_BITS,
            "exit_gicv3_lrs": list(self.lrs),
            "exit_gicv3_misr": self.misr(),
            "exit_gicv3_vmcr": self.vmcr,
        }

    @property
    def eoicount(self) -> int:
        return (self.hcr & ICH_HCR_EOIcount_MASK) >> ICH_HCR_EOIcount_SHIFT

    def _count_eoi(self) -> None:
        count = (self.eoicount + 1) & 0x1F
        self.hcr = (self.hcr & ~ICH_HCR_EOIcount_MASK) | (count << ICH_HCR_EOIcount_SHIFT)

    def misr(self) -> int:
        """ICH_MISR_EL2 from the current state."""
        hcr, vmcr = self.hcr, self.vmcr
        misr = valid = 0
        pending = False
        for lr in self.lrs if any(self.lrs) else ():  # most exits: every list register empty
            if not lr:  # invalid, no EOI: the common case of an empty list register
                continue
            state = (lr >> ICH_LR_State_SHIFT) & 0b11
            if state == LR_STATE_INVALID:
                if lr & ICH_LR_EOI and not lr & ICH_LR_HW:
                    misr |= ICH_MISR_EOI
                continue
            valid += 1
            pending = pending or state == LR_STATE_PENDING
        if not hcr & _MISR_ENABLES:
            return misr
        if hcr & ICH_HCR_UIE and valid <= 1:
            misr |= ICH_MISR_U
        if hcr & ICH_HCR_LRENPIE and self.eoicount:
            misr |= ICH_MISR_LRENP
        if hcr & ICH_HCR_NPIE and not pending:
            misr |= ICH_MISR_NP
        eng0, eng1 = bool(vmcr & ICH_VMCR_VENG0), bool(vmcr & ICH_VMCR_VENG1)
        for enabled_bit, disabled_bit, enabled, e_flag, d_flag in (
            (ICH_HCR_VGrp0EIE, ICH_HCR_VGrp0DIE, eng0, ICH_MISR_VGrp0E, ICH_MISR_VGrp0D),
            (ICH_HCR_VGrp1EIE, ICH_HCR_VGrp1DIE, eng1, ICH_MISR_VGrp1E, ICH_MISR_VGrp1D),
        ):
            if hcr & enabled_bit and enabled:
                misr |= e_flag
            if hcr & disabled_bit and not enabled:
                misr |= d_flag
        return misr

    def maintenance(self) -> bool:
        """The maintenance interrupt (a physical PPI for the host) is asserted."""
        return bool(self.hcr & ICH_HCR_En) and self.misr() != 0

    # --- VMCR fields ----------------------------------------------------------------------
    @property
    def pmr(self) -> int:
        return (self.vmcr >> ICH_VMCR_VPMR_SHIFT) & 0xFF

    def _set_vmcr(self, shift: int, width: int, value: int) -> None:
        mask = ((1 << width) - 1) << shift
        self.vmcr = (self.vmcr & ~mask) | ((value << shift) & mask)

    @property
    def eoimode(self) -> bool:
        return bool(self.vmcr & ICH_VMCR_VEOIM)

    def group_enabled(self, group: int) -> bool:
        return bool(self.vmcr & (ICH_VMCR_VENG1 if group else ICH_VMCR_VENG0))

    def binary_point(self, group: int) -> int:
        bpr0 = (self.vmcr >> ICH_VMCR_VBPR0_SHIFT) & 7
        if group == 0:
            return bpr0
        if self.vmcr & ICH_VMCR_VCBPR:
            return min(bpr0 + 1, 7)
        return (self.vmcr >> ICH_VMCR_VBPR1_SHIFT) & 7

    def group_priority(self, lr: int) -> int:
        group = lr_group(lr)
        if group == 0 or self.vmcr & ICH_VMCR_VCBPR:
            keep = 0xFF << (((self.vmcr >> ICH_VMCR_VBPR0_SHIFT) & 7) + 1)
        else:
            keep = 0xFF << ((self.vmcr >> ICH_VMCR_VBPR1_SHIFT) & 7)
        return lr_priority(lr) & keep & 0xFF

    def running_priority(self) -> int:
        active = self.apr[0] | self.apr[1]
        if not active:
            return IDLE_PRIORITY
        return ((active & -active).bit_length() - 1) << _PRIORITY_SHIFT

    # --- selection ------------------------------------------------------------------------
    def highest_pending(self, group: int | None = None) -> int | None:
        """Index of the highest priority pending list register (of `group`); ties go to the
        lowest list register."""
        best: int | None = None
        for i, lr in enumerate(self.lrs):
            if not lr or lr_state(lr) != LR_STATE_PENDING or (group is not None and lr_group(lr) != group):
                continue
            if best is None or lr_priority(lr) < lr_priority(self.lrs[best]):
                best = i
        return best

    def signalled(self) -> int | None:
        """The list register the interface signals now: pending, its group enabled, its
        priority below the mask, its group priority above the running priority."""
        if not any(self.lrs):  # no list register holds anything: nothing to signal
            return None
        best: int | None = None
        running = self.running_priority()
        pmr = self.pmr
        for i, lr in enumerate(self.lrs):
            if not lr or lr_state(lr) != LR_STATE_PENDING or not self.group_enabled(lr_group(lr)):
                continue
            if lr_priority(lr) >= pmr or self.group_priority(lr) >= running:
                continue
            if best is None or lr_priority(lr) < lr_priority(self.lrs[best]):
                best = i
        return best

    def pending(self) -> int:
        """Bit 0 a virtual IRQ (Group 1), bit 1 a virtual FIQ (Group 0) signalled to the PE."""
        i = self.signalled()
        if i is None:
            return 0
        return 1 if lr_group(self.lrs[i]) else 2

    def any_pending(self) -> bool:
        """Whether any list register holds a pending interrupt: what wakes a WFI, masked or not."""
        return any(lr and lr_state(lr) in (LR_STATE_PENDING, LR_STATE_PENDING_ACTIVE) for lr in self.lrs)

    # --- the ICV_* operations -------------------------------------------------------------
    def iar_now(self, group: int) -> int:
        """What ICV_IAR<group>_EL1 would return now, without acknowledging it."""
        i = self.signalled()
        return INTID_SPURIOUS if i is None or lr_group(self.lrs[i]) != group else lr_intid(self.lrs[i])

    def acknowledge(self, group: int) -> int:
        i = self.signalled()
        if i is None or lr_group(self.lrs[i]) != group:
            return INTID_SPURIOUS
        return self._activate(i)

    def acknowledge_foreseen(self, group: int, intid: int) -> bool:
        """An ICV_IAR<group>_EL1 read that returned `intid` when `iar_now` said so, applied
        now (the list registers change only at REC entry, so it is the same one). False: no
        list register of that group holds `intid` pending."""
        for i, lr in enumerate(self.lrs):
            if lr and lr_intid(lr) == intid and lr_state(lr) == LR_STATE_PENDING and lr_group(lr) == group:
                self._activate(i)
                return True
        return False

    def _activate(self, i: int) -> int:
        lr = self.lrs[i]
        group = lr_group(lr)
        self.apr[group] |= 1 << (self.group_priority(lr) >> _PRIORITY_SHIFT)
        intid = lr_intid(lr)
        self.lrs[i] = lr_with_state(lr, LR_STATE_INVALID if intid >= MIN_LPI else LR_STATE_ACTIVE)
        return intid

    def hppir(self, group: int) -> int:
        i = self.highest_pending(group)
        return INTID_SPURIOUS if i is None else lr_intid(self.lrs[i])

    def _find_active(self, intid: int) -> int | None:
        for i, lr in enumerate(self.lrs):
            if lr and lr_intid(lr) == intid and lr_state(lr) in (LR_STATE_ACTIVE, LR_STATE_PENDING_ACTIVE):
                return i
        return None

    def _deactivate(self, intid: int, group: int | None) -> None:
        i = self._find_active(intid)
        if i is None:
            if intid < MIN_LPI:
                self._count_eoi()
            return
        lr = self.lrs[i]
        if group is not None and lr_group(lr) != group:
            return
        new = LR_STATE_PENDING if lr_state(lr) == LR_STATE_PENDING_ACTIVE else LR_STATE_INVALID
        self.lrs[i] = lr_with_state(lr, new)

    def end_of_interrupt(self, group: int, value: int) -> None:
        intid = value & 0xFF_FFFF
        if intid in SPECIAL_INTIDS:
            return
        active = self.apr[0] | self.apr[1]
        highest = active & -active
        if not highest & self.apr[group]:
            return  # nothing of this group to drop: the write is ignored
        self.apr[group] &= ~highest
        if not self.eoimode:
            self._deactivate(intid, group)

    def deactivate(self, value: int) -> None:
        intid = value & 0xFF_FFFF
        if self.eoimode and intid not in SPECIAL_INTIDS:
            self._deactivate(intid, None)

    def traps(self, key: int, is_write: bool) -> bool:
        """Whether this access traps to EL2 (and the RMM reports it to the host)."""
        if not is_write:
            return False
        return key in TRAPPED_WRITES or (key == IccSysreg.DIR and bool(self.hcr & ICH_HCR_TDIR))

    # --- system register access -----------------------------------------------------------
    def read_sysreg(self, key: int) -> int | None:
        """MRS of an ICC_* register at EL1 (the ICV_* register); None: not one."""
        match key:
            case IccSysreg.SRE:
                return ICC_SRE_VALUE
            case IccSysreg.PMR:
                return self.pmr
            case IccSysreg.IGRPEN0 | IccSysreg.IGRPEN1:
                return int(self.group_enabled(int(key == IccSysreg.IGRPEN1)))
            case IccSysreg.BPR0:
                return self.binary_point(0)
            case IccSysreg.BPR1:
                return self.binary_point(1)
            case IccSysreg.CTLR:
                return (
                    int(bool(self.vmcr & ICH_VMCR_VCBPR))
                    | (ICC_CTLR_EOImode if self.eoimode else 0)
                    | ((PRIORITY_BITS - 1) << ICC_CTLR_PRIbits_SHIFT)
                )
            case IccSysreg.IAR0 | IccSysreg.IAR1:
                return self.acknowledge(int(key == IccSysreg.IAR1))
            case IccSysreg.HPPIR0 | IccSysreg.HPPIR1:
                return self.hppir(int(key == IccSysreg.HPPIR1))
            case IccSysreg.RPR:
                return self.running_priority()
            case IccSysreg.AP0R0 | IccSysreg.AP1R0:
                return self.apr[int(key == IccSysreg.AP1R0)]
        return None

    def write_sysreg(self, key: int, value: int) -> bool:
        """MSR to an ICC_* register at EL1; False: not one this interface completes (a
        read-only register, or a write that traps to EL2: see `traps`)."""
        value &= (1 << 64) - 1
        match key:
            case IccSysreg.SRE:
                pass
            case IccSysreg.PMR:
                self._set_vmcr(ICH_VMCR_VPMR_SHIFT, 8, value & PRIORITY_MASK)
            case IccSysreg.IGRPEN0:
                self._set_vmcr(0, 1, value & 1)
            case IccSysreg.IGRPEN1:
                self._set_vmcr(1, 1, value & 1)
            case IccSysreg.BPR0:
                self._set_vmcr(ICH_VMCR_VBPR0_SHIFT, 3, max(value & 7, BPR0_MIN))
            case IccSysreg.BPR1:
                if not self.vmcr & ICH_VMCR_VCBPR:
                    self._set_vmcr(ICH_VMCR_VBPR1_SHIFT, 3, max(value & 7, BPR1_MIN))
            case IccSysreg.CTLR:
                cbpr = ICH_VMCR_VCBPR if value & 1 else 0
                eoim = ICH_VMCR_VEOIM if value & ICC_CTLR_EOImode else 0
                self.vmcr = (self.vmcr & ~_VMCR_WRITABLE_CTLR) | cbpr | eoim
            case IccSysreg.EOIR0 | IccSysreg.EOIR1:
                self.end_of_interrupt(int(key == IccSysreg.EOIR1), value)
            case IccSysreg.DIR:
                if self.hcr & ICH_HCR_TDIR:
                    return False
                self.deactivate(value)
            case IccSysreg.AP0R0 | IccSysreg.AP1R0:
                self.apr[int(key == IccSysreg.AP1R0)] = value & _APR_MASK
            case _:
                return False
        return True


class _TimerOutputs:
    """Where a REC's timers present their outputs: the physical PPIs 27 and 30 of the PE, which
    belong to the host (TimerGic for machine.timer.GenericTimer)."""

    def __init__(self) -> None:
        self.levels: dict[int, bool] = {}

    def set_ppi_level(self, cpu: int, intid: int, level: bool) -> None:
        self.levels[intid] = level

    def add_source(self, cpu: int, sync: Callable[[], None]) -> None:
        pass


# How long an asserted maintenance interrupt takes to reach EL2 while the realm runs: a
# physical interrupt is taken "in finite time", and code that runs on for a few instructions
# after the EOI that asserted it (to an RSI call, say) reaches that exit first, as on hardware.
MAINTENANCE_LATENCY = 0.05


class RecInterruptLines:
    """The interrupt lines of a PE running a REC (machine.irq.InterruptLines): the REC's virtual
    CPU interface signals the virtual IRQ/FIQ and serves the ICC_* registers; the REC's own EL1
    timers (CNTV, CNTP; CNTVOFF 0) serve the CNT* registers. What ends REC_ENTER with an IRQ
    exit is a physical interrupt for the host, so `next_deadline()` is the first of: the
    host's own EL2 timer (machine.interrupt HOST_IRQ.deadline), the maintenance interrupt
    (due now while asserted), and the REC's timers whose output the RMM has not masked.

    As TF-RMM's check_pending_timers, every entry into the realm masks (CNTHCTL_EL2.CNTxMASK)
    a timer whose output is asserted, so it does not exit again at once, and unmasks it
    otherwise; a change of either output since the last REC exit ends REC_ENTER with an IRQ
    exit before the realm runs, so the host always learns the timer level from the exit.
    The maintenance interrupt ends REC_ENTER at once when it is asserted as the realm is
    entered, and within MAINTENANCE_LATENCY while the realm runs."""

    def __init__(self, gic: VirtualCpuInterface) -> None:
        self.gic = gic
        self.timers = GenericTimer(_TimerOutputs(), 0)
        self.masked = (False, False)  # CNTVMASK, CNTPMASK
        self.asserted_at_exit = (False, False)
        self.maintenance_since: float | None = None  # when the maintenance interrupt was seen asserted
        # A write that traps to EL2 (`VirtualCpuInterface.traps`): (key, value). The vCPU has
        # completed the MSR; the deadline is due at once, so the run ends and the RMM reports it.
        self.trapped: tuple[int, int] | None = None

    def asserted(self) -> tuple[bool, bool]:
        return self.timers.virtual.output(), self.timers.physical.output()

    def check_timers(self) -> bool:
        """At each entry into the realm: set the masks; True if an output changed since the
        last exit (REC_ENTER ends with an IRQ exit)."""
        now = self.asserted()
        self.masked = now
        return now != self.asserted_at_exit

    def at_exit(self) -> dict[str, int]:
        """Remember the outputs, and give RmiRecExit's timer fields (CVAL less CNTVOFF, 0)."""
        self.asserted_at_exit = self.asserted()
        v, p = self.timers.virtual, self.timers.physical
        return {
            "exit_cntv_ctl": v.read_ctl(),
            "exit_cntv_cval": v.cval,
            "exit_cntp_ctl": p.read_ctl(),
            "exit_cntp_cval": p.cval,
        }

    # --- machine.irq.InterruptLines ---------------------------------------------------------
    def pending(self) -> int:
        return self.gic.pending()

    def next_deadline(self) -> float | None:
        if self.trapped is not None:
            return 0.0
        deadlines = [HOST_IRQ.deadline] if HOST_IRQ.deadline is not None else []
        if self.gic.maintenance():
            if self.maintenance_since is None:
                self.maintenance_since = time.monotonic()
            deadlines.append(self.maintenance_since + MAINTENANCE_LATENCY)
        else:
            self.maintenance_since = None
        # Each channel's deadline on the physical count (the virtual count is CNTVOFF behind).
        offsets = (self.timers.cntvoff, 0)
        for channel, masked, offset in zip(self.timers.channels, self.masked, offsets, strict=True):
            if masked:
                continue
            if channel.output():
                return 0.0
            count = channel.deadline()
            if count is not None:
                deadlines.append(((count + offset) & COUNTER_MASK) * SYSTEM_COUNTER_PERIOD_NS / 1e9)
        return min(deadlines, default=None)

    def read_sysreg(self, key: int) -> int | None:
        value = self.gic.read_sysreg(key)
        return self.timers.read_sysreg(key) if value is None else value

    def write_sysreg(self, key: int, value: int) -> bool:
        if self.gic.traps(key, True):
            self.trapped = (key, value & ((1 << 64) - 1))
            return True
        return self.gic.write_sysreg(key, value) or self.timers.write_sysreg(key, value)

    def iar1_now(self) -> int | None:
        # ICV_IAR1 reads and ICV_EOIR0/1 writes never trap (only SGI generation and, with
        # TDIR, ICV_DIR do); an MSR already trapped is waiting for its exit.
        if self.trapped is not None:
            return None
        return self.gic.iar_now(1)

    def acknowledge_foreseen(self, intid: int) -> bool:
        return self.gic.acknowledge_foreseen(1, intid)
