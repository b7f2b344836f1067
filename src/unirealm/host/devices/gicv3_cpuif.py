"""The GICv3 CPU interface of one vCPU (Arm IHI 0069 §12.2, ICC_*_EL1), independent of how the
vCPU executes: the vCPU hands every ICC_* MRS/MSR to `read_sysreg`/`write_sysreg` and asks
`irq_pending()` (or `fiq_pending()`) at instruction boundaries.

Modelled as a single-Security-state interface at EL1 with 5 priority bits and 16-bit INTIDs
(ICC_CTLR_EL1.PRIbits 4, IDbits 0, no SEIS, no A3V, no RSS):

- ICC_SRE_EL1 reads SRE, DFB and DIB as 1 and ignores writes (system registers only).
- ICC_PMR_EL1 (reset 0: everything masked), ICC_IGRPEN0/1_EL1 (reset 0), ICC_BPR0/1_EL1
  (reset to their minimums 2 and 3; lower values written become the minimum; with
  ICC_CTLR_EL1.CBPR set, BPR1 reads BPR0 + 1, saturated at 7, and ignores writes).
- ICC_IAR0/1_EL1 acknowledge the highest priority pending interrupt of their group when it
  is above the priority mask and preempts the running priority: it becomes active (a level
  interrupt whose line is still high stays pending as well), its group priority is set in
  the active priorities, and the read returns its INTID; otherwise 1023.
- ICC_EOIR0/1_EL1 drop the running priority (clear the highest active priority, when it
  belongs to that group) and, with EOImode 0, deactivate the INTID; ICC_DIR_EL1 deactivates
  with EOImode 1 (ignored with EOImode 0). Special INTIDs 1020-1023 are ignored.
- ICC_HPPIR0/1_EL1 the highest priority pending interrupt of the group (no PMR check),
  ICC_RPR_EL1 the running priority (0xFF when idle), ICC_AP0R0/AP1R0_EL1 the active
  priorities (32 levels: AP*R1..3 are not implemented).
- ICC_SGI1R_EL1 makes an SGI pending on the target list at Aff3.Aff2.Aff1 (or, with IRM, on
  every other vCPU); a non-zero RS or Aff3 targets nobody. ICC_SGI0R_EL1 and ICC_ASGI1R_EL1
  generate Group 0 SGIs only (one Security state).

Reading a write-only register or writing a read-only one is UNDEFINED: `read_sysreg` returns
None and `write_sysreg` False, and the vCPU takes the Undefined Instruction exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unirealm.arch.gic import (
    ICC_BPR0_MIN,
    ICC_BPR1_MIN,
    ICC_BPR_MASK,
    ICC_CTLR_CBPR,
    ICC_INTID_MASK,
    ICC_SGIR_INTID_MASK,
    ICC_SGIR_INTID_SHIFT,
    ICC_SGIR_IRM,
    ICC_SGIR_RS_MASK,
    ICC_SGIR_RS_SHIFT,
    ICC_SRE_DFB,
    ICC_SRE_DIB,
    ICC_SRE_SRE,
    IDLE_PRIORITY,
    INTID_SPURIOUS,
    PRIORITY_BITS,
    PRIORITY_MASK,
    SPECIAL_INTIDS,
    ICC_CTLR_EOImode,
    ICC_CTLR_PRIbits_SHIFT,
    ICC_IGRPEN_Enable,
    ICC_SGIR_Aff1_SHIFT,
    ICC_SGIR_Aff2_SHIFT,
    ICC_SGIR_Aff3_SHIFT,
    ICC_SGIR_TargetList_MASK,
    IccSysreg,
)

if TYPE_CHECKING:
    from unirealm.host.devices.gicv3 import GicV3, Irq

ICC_SRE_VALUE = ICC_SRE_SRE | ICC_SRE_DFB | ICC_SRE_DIB
_PRIORITY_SHIFT = 8 - PRIORITY_BITS  # active-priority bit n is group priority n << 3
_APR_MASK = (1 << (1 << PRIORITY_BITS)) - 1
_CTLR_WRITABLE = ICC_CTLR_CBPR | ICC_CTLR_EOImode


class CpuInterface:
    def __init__(self, gic: GicV3, index: int) -> None:
        self.gic = gic
        self.index = index
        self.pmr = 0
        self.igrpen = [False, False]
        self.bpr0 = ICC_BPR0_MIN
        self.bpr1 = ICC_BPR1_MIN
        self.ctlr = 0  # CBPR | EOImode
        self.apr = [0, 0]  # ICC_AP0R0_EL1, ICC_AP1R0_EL1

    # --- priority arithmetic ----------------------------------------------------------------
    def group_enabled(self, group: int) -> bool:
        return self.igrpen[group]

    @property
    def eoimode(self) -> bool:
        return bool(self.ctlr & ICC_CTLR_EOImode)

    def binary_point(self, group: int) -> int:
        """ICC_BPR1_EL1 as read: BPR0 + 1 (saturated) when CBPR is set."""
        if group == 1 and self.ctlr & ICC_CTLR_CBPR:
            return min(self.bpr0 + 1, 7)
        return self.bpr0 if group == 0 else self.bpr1

    def group_priority(self, irq: Irq) -> int:
        """The interrupt's group priority: BPR0's value n keeps bits [7:n+1], BPR1's [7:n]."""
        if irq.group == 0 or self.ctlr & ICC_CTLR_CBPR:
            keep = 0xFF << (self.bpr0 + 1)
        else:
            keep = 0xFF << self.bpr1
        return irq.priority & keep & 0xFF

    def running_priority(self) -> int:
        active = self.apr[0] | self.apr[1]
        if not active:
            return IDLE_PRIORITY
        return ((active & -active).bit_length() - 1) << _PRIORITY_SHIFT

    def _can_signal(self, irq: Irq) -> bool:
        return irq.priority < self.pmr and self.group_priority(irq) < self.running_priority()

    def signalled(self) -> Irq | None:
        """The interrupt this interface signals now: the highest priority pending one, if it is
        above the priority mask and has a higher group priority than the running priority."""
        irq = self.gic.hppi(self.index)
        return irq if irq is not None and self._can_signal(irq) else None

    def irq_pending(self) -> bool:
        irq = self.signalled()
        return irq is not None and irq.group == 1

    def fiq_pending(self) -> bool:
        irq = self.signalled()
        return irq is not None and irq.group == 0

    # --- the operations behind the registers ----------------------------------------------------
    def hppir(self, group: int) -> int:
        irq = self.gic.hppi(self.index)
        return irq.intid if irq is not None and irq.group == group else INTID_SPURIOUS

    def iar_now(self, group: int) -> int:
        """What ICC_IAR<group>_EL1 would return now, without acknowledging it."""
        irq = self.signalled()
        return INTID_SPURIOUS if irq is None or irq.group != group else irq.intid

    def acknowledge(self, group: int) -> int:
        irq = self.signalled()
        if irq is None or irq.group != group:
            return INTID_SPURIOUS
        return self._activate(irq)

    def acknowledge_foreseen(self, group: int, intid: int) -> bool:
        """An ICC_IAR<group>_EL1 read that returned `intid` when `iar_now` said so, applied
        now: the same activation, though a level source (a timer) may have raised a higher
        priority interrupt since. False: `intid` is not a pending, inactive interrupt of that
        group at this interface."""
        irq = self.gic.irq(self.index, intid)
        if irq is None or irq.group != group or irq.active or not irq.pending or irq.cpu != self.index:
            return False
        self._activate(irq)
        return True

    def _activate(self, irq: Irq) -> int:
        group = irq.group
        self.apr[group] |= 1 << (self.group_priority(irq) >> _PRIORITY_SHIFT)
        self.gic.activate(irq)
        self.gic.set_latch(irq, False)  # the line, if level and still high, keeps it pending
        self.gic.trace_event("ack", self.index, irq.intid)
        return irq.intid

    def end_of_interrupt(self, group: int, intid: int) -> None:
        intid &= ICC_INTID_MASK
        if intid in SPECIAL_INTIDS:
            return
        active = self.apr[0] | self.apr[1]
        highest = active & -active
        if not highest & self.apr[group]:
            return  # no active priority, or the highest belongs to the other group
        self.apr[group] &= ~highest
        self.gic.trace_event("eoi", self.index, intid)
        if not self.eoimode:
            self._deactivate(intid, group)
        else:
            self.gic.kick(self.index)

    def deactivate(self, intid: int) -> None:
        """ICC_DIR_EL1; only meaningful with EOImode 1."""
        intid &= ICC_INTID_MASK
        if self.eoimode and intid not in SPECIAL_INTIDS:
            self._deactivate(intid, None)

    def _deactivate(self, intid: int, group: int | None) -> None:
        irq = self.gic.irq(self.index, intid)
        if irq is None or not irq.active or (group is not None and irq.group != group):
            self.gic.kick(self.index)
            return
        self.gic.trace_event("deactivate", self.index, intid)
        self.gic.set_active(irq, False)
        self.gic.kick(self.index)

    def generate_sgi(self, value: int, allow_group1: bool) -> None:
        intid = (value >> ICC_SGIR_INTID_SHIFT) & ICC_SGIR_INTID_MASK
        if value & ICC_SGIR_IRM:
            targets = [c for c in range(self.gic.nr_cpus) if c != self.index]
        else:
            if (value >> ICC_SGIR_RS_SHIFT) & ICC_SGIR_RS_MASK or (value >> ICC_SGIR_Aff3_SHIFT) & 0xFF:
                return  # no range selector support (RSS 0), no Aff3 (A3V 0)
            base = (((value >> ICC_SGIR_Aff2_SHIFT) & 0xFF) << 16) | (
                ((value >> ICC_SGIR_Aff1_SHIFT) & 0xFF) << 8
            )
            target_list = value & ICC_SGIR_TargetList_MASK
            targets = []
            for aff0 in range(16):
                if target_list >> aff0 & 1:
                    cpu = self.gic.cpu_for_affinity(base | aff0)
                    if cpu is not None:
                        targets.append(cpu)
        for cpu in targets:
            self.gic.send_sgi(cpu, intid, allow_group1)

    # --- ICC_CTLR_EL1 -------------------------------------------------------------------------
    def icc_ctlr(self) -> int:
        return self.ctlr | ((PRIORITY_BITS - 1) << ICC_CTLR_PRIbits_SHIFT)

    # --- system register access ---------------------------------------------------------------
    def read_sysreg(self, reg: int) -> int | None:
        """MRS of an ICC_* register; None when the access is UNDEFINED."""
        match reg:
            case IccSysreg.SRE:
                return ICC_SRE_VALUE
            case IccSysreg.PMR:
                return self.pmr
            case IccSysreg.IGRPEN0 | IccSysreg.IGRPEN1:
                return int(self.igrpen[reg == IccSysreg.IGRPEN1])
            case IccSysreg.BPR0:
                return self.binary_point(0)
            case IccSysreg.BPR1:
                return self.binary_point(1)
            case IccSysreg.CTLR:
                return self.icc_ctlr()
            case IccSysreg.IAR0 | IccSysreg.IAR1:
                return self.acknowledge(int(reg == IccSysreg.IAR1))
            case IccSysreg.HPPIR0 | IccSysreg.HPPIR1:
                return self.hppir(int(reg == IccSysreg.HPPIR1))
            case IccSysreg.RPR:
                return self.running_priority()
            case IccSysreg.AP0R0 | IccSysreg.AP1R0:
                return self.apr[int(reg == IccSysreg.AP1R0)]
        return None

    def write_sysreg(self, reg: int, value: int) -> bool:
        """MSR to an ICC_* register; False when the access is UNDEFINED."""
        value &= (1 << 64) - 1
        match reg:
            case IccSysreg.SRE:
                pass
            case IccSysreg.PMR:
                self.pmr = value & PRIORITY_MASK
                self.gic.kick(self.index)
            case IccSysreg.IGRPEN0 | IccSysreg.IGRPEN1:
                self.igrpen[reg == IccSysreg.IGRPEN1] = bool(value & ICC_IGRPEN_Enable)
                self.gic.kick(self.index)
            case IccSysreg.BPR0:
                self.bpr0 = max(value & ICC_BPR_MASK, ICC_BPR0_MIN)
            case IccSysreg.BPR1:
                if not self.ctlr & ICC_CTLR_CBPR:
                    self.bpr1 = max(value & ICC_BPR_MASK, ICC_BPR1_MIN)
            case IccSysreg.CTLR:
                self.ctlr = value & _CTLR_WRITABLE
            case IccSysreg.EOIR0 | IccSysreg.EOIR1:
                self.end_of_interrupt(int(reg == IccSysreg.EOIR1), value)
            case IccSysreg.DIR:
                self.deactivate(value)
            case IccSysreg.SGI1R:
                self.generate_sgi(value, allow_group1=True)
            case IccSysreg.SGI0R | IccSysreg.ASGI1R:
                self.generate_sgi(value, allow_group1=False)
            case IccSysreg.AP0R0 | IccSysreg.AP1R0:
                self.apr[reg == IccSysreg.AP1R0] = value & _APR_MASK
                self.gic.kick(self.index)
            case _:
                return False
        return True
