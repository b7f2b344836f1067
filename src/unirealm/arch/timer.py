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
