"""The Arm generic timer as an EL1 guest sees it (Arm ARM, "The Generic Timer in AArch64
state", and the register descriptions of CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTV_TVAL_EL0 and
their CNTP_ counterparts).

- CTL: ENABLE (bit 0), IMASK (bit 1), ISTATUS (bit 2, read-only); bits [63:3] RES0.
- The timer condition is met when the count minus CVAL, as unsigned integers of unbounded
  width, is >= 0 (count >= CVAL); ISTATUS shows it while ENABLE is 1; the interrupt is
  asserted when ENABLE is 1, IMASK is 0 and the condition is met.
- TVAL is a 32-bit signed down-counter view of CVAL: a read gives (CVAL - count)[31:0]
  (bits [63:32] RES0), a write sets CVAL = count + SignExtend(TVAL[31:0]).
- The virtual count is the physical count minus CNTVOFF_EL2.

PPIs are the Server Base System Architecture's (and the DT `arm,armv8-timer` order's):
secure physical 29, non-secure physical 30, virtual 27, hypervisor 26.
"""

from __future__ import annotations

from enum import IntEnum

from .sysreg import sysreg_key

CNT_CTL_ENABLE = 1 << 0
CNT_CTL_IMASK = 1 << 1
CNT_CTL_ISTATUS = 1 << 2
CNT_CTL_WRITABLE = CNT_CTL_ENABLE | CNT_CTL_IMASK

COUNTER_MASK = (1 << 64) - 1
TVAL_MASK = (1 << 32) - 1

PPI_SECURE_PHYS_TIMER = 29
PPI_NONSECURE_PHYS_TIMER = 30
PPI_VIRT_TIMER = 27
PPI_HYP_TIMER = 26


class CntSysreg(IntEnum):
    """Generic timer system register encodings (S3_3_C14_*)."""

    CNTFRQ_EL0 = sysreg_key(3, 3, 14, 0, 0)
    CNTPCT_EL0 = sysreg_key(3, 3, 14, 0, 1)
    CNTVCT_EL0 = sysreg_key(3, 3, 14, 0, 2)
    CNTP_TVAL_EL0 = sysreg_key(3, 3, 14, 2, 0)
    CNTP_CTL_EL0 = sysreg_key(3, 3, 14, 2, 1)
    CNTP_CVAL_EL0 = sysreg_key(3, 3, 14, 2, 2)
    CNTV_TVAL_EL0 = sysreg_key(3, 3, 14, 3, 0)
    CNTV_CTL_EL0 = sysreg_key(3, 3, 14, 3, 1)
    CNTV_CVAL_EL0 = sysreg_key(3, 3, 14, 3, 2)


def tval_signed(tval: int) -> int:
    """TimerValue[31:0] as the signed 32-bit count of ticks left (negative once it has fired)."""
    tval &= TVAL_MASK
    return tval - (1 << 32) if tval & (1 << 31) else tval


def condition_met(count: int, cval: int) -> bool:
    """The timer condition: count - CVAL >= 0 as unsigned 64-bit values."""
    return (count & COUNTER_MASK) >= (cval & COUNTER_MASK)


# CNTKCTL_EL1 (D19.12): the EL0 access controls of the EL1&0 timers (HCR_EL2.E2H = 0).
CNTKCTL_EL0PCTEN = 1 << 0  # CNTPCT_EL0 (and CNTFRQ_EL0)
CNTKCTL_EL0VCTEN = 1 << 1  # CNTVCT_EL0 (and CNTFRQ_EL0)
CNTKCTL_EL0VTEN = 1 << 8  # CNTV_CTL/CVAL/TVAL_EL0
CNTKCTL_EL0PTEN = 1 << 9  # CNTP_CTL/CVAL/TVAL_EL0
_EL0_ENABLES = {
    CntSysreg.CNTFRQ_EL0: CNTKCTL_EL0PCTEN | CNTKCTL_EL0VCTEN,
    CntSysreg.CNTPCT_EL0: CNTKCTL_EL0PCTEN,
    CntSysreg.CNTVCT_EL0: CNTKCTL_EL0VCTEN,
    CntSysreg.CNTV_CTL_EL0: CNTKCTL_EL0VTEN,
    CntSysreg.CNTV_CVAL_EL0: CNTKCTL_EL0VTEN,
    CntSysreg.CNTV_TVAL_EL0: CNTKCTL_EL0VTEN,
    CntSysreg.CNTP_CTL_EL0: CNTKCTL_EL0PTEN,
    CntSysreg.CNTP_CVAL_EL0: CNTKCTL_EL0PTEN,
    CntSysreg.CNTP_TVAL_EL0: CNTKCTL_EL0PTEN,
}


def el0_may_access(key: int, cntkctl: int) -> bool:
    """Whether EL0 may access system register `key` as a timer register: only the generic
    timer's, and only those CNTKCTL_EL1 enables (other accesses from EL0 are UNDEFINED)."""
    return bool(_EL0_ENABLES.get(key, 0) & cntkctl)  # type: ignore[call-overload]
