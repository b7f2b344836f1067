"""System registers and PSTATE as the Arm ARM (DDI 0487) defines them, for the vCPU's EL3/EL2
context and exception entry.

A register is named by its MRS/MSR encoding (op0, op1, CRn, CRm, op2), as in the Arm ARM's
"System register encoding" tables (D19/D23) and in the ISS of an ESR EC 0x18 trap.
"""

from __future__ import annotations

from typing import NamedTuple


def sysreg_key(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """A system register's S<op0>_<op1>_C<n>_C<m>_<op2> name packed as op0:op1:CRn:CRm:op2
    (2:3:4:4:3 bits): one integer key per register."""
    return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2


class SysReg(NamedTuple):
    op0: int
    op1: int
    crn: int
    crm: int
    op2: int

    @property
    def key(self) -> int:
        return sysreg_key(*self)


SCR_EL3 = SysReg(3, 6, 1, 1, 0)
HCR_EL2 = SysReg(3, 4, 1, 1, 0)
CPTR_EL2 = SysReg(3, 4, 1, 1, 2)
CPTR_EL3 = SysReg(3, 6, 1, 1, 2)
MDCR_EL2 = SysReg(3, 4, 1, 1, 1)
ZCR_EL2 = SysReg(3, 4, 1, 2, 0)
ZCR_EL3 = SysReg(3, 6, 1, 2, 0)
SPSR_EL1 = SysReg(3, 0, 4, 0, 0)
SCTLR_EL1 = SysReg(3, 0, 1, 0, 0)
TCR_EL1 = SysReg(3, 0, 2, 0, 2)
ID_AA64PFR0_EL1 = SysReg(3, 0, 0, 4, 0)
ID_AA64PFR1_EL1 = SysReg(3, 0, 0, 4, 1)
ID_AA64ZFR0_EL1 = SysReg(3, 0, 0, 4, 4)
ID_AA64DFR0_EL1 = SysReg(3, 0, 0, 5, 0)
CNTKCTL_EL1 = SysReg(3, 0, 14, 1, 0)
VMPIDR_EL2 = SysReg(3, 4, 0, 0, 5)  # what EL1 reads as MPIDR_EL1 (EL2 enabled)

# MPIDR_EL1 bit 31 is RES1; KVM gives a vCPU (1 << 31) | its affinity.
MPIDR_RES1 = 1 << 31

# SCR_EL3 (D19.2.116): NS and NSE select the world of EL2/EL1 ({NSE,NS} = {0,1} non-secure,
# {1,1} realm); HCE enables HVC; RW makes the next lower EL AArch64.
SCR_NS = 1 << 0
SCR_HCE = 1 << 8
SCR_RW = 1 << 10
SCR_NSE = 1 << 62

# HCR_EL2 (D19.2.48): RW makes EL1 AArch64; TID3 traps the ID group 3 registers to EL2.
HCR_TID3 = 1 << 18
HCR_RW = 1 << 31

# CPTR_EL2 (nVHE layout): TZ traps SVE to EL2. CPTR_EL3: EZ enables SVE below EL3.
CPTR_EL2_TZ = 1 << 8
CPTR_EL3_EZ = 1 << 8
# ZCR_EL2/ZCR_EL3.LEN (D19.2.185-186): the vector length below that EL is at most (LEN + 1) x 128
# bits; 0b1111 leaves the implementation's largest.
ZCR_LEN_MAX = 0xF
# MDCR_EL2.TPM traps PMU register accesses to EL2.
MDCR_TPM = 1 << 6

# SCTLR_EL1.SPAN: 0 = PSTATE.PAN is set on taking an exception to EL1.
SCTLR_SPAN = 1 << 23

# PSTATE / SPSR (C5.2.18): M[3:0] = EL << 2 | SPSel; DAIF at [9:6]; PAN at [22].
PSTATE_SP = 1 << 0
PSTATE_EL_SHIFT = 2
PSTATE_DAIF = 0xF << 6
PSTATE_I = 1 << 7
PSTATE_F = 1 << 6
PSTATE_PAN = 1 << 22
PSTATE_EL1H = (1 << PSTATE_EL_SHIFT) | PSTATE_SP

# Vector table offsets from VBAR_ELx (D1.10.2): synchronous exceptions.
VECTOR_CURRENT_SP0 = 0x000
VECTOR_CURRENT_SPX = 0x200
VECTOR_LOWER_A64 = 0x400
# ... plus the exception type's offset within each group of four: IRQ 0x080, FIQ 0x100.
VECTOR_IRQ = 0x080
VECTOR_FIQ = 0x100


def pstate_el(pstate: int) -> int:
    return (pstate >> PSTATE_EL_SHIFT) & 3


def field(value: int, lsb: int, width: int = 4) -> int:
    return (value >> lsb) & ((1 << width) - 1)


def with_field(value: int, lsb: int, new: int, width: int = 4) -> int:
    mask = ((1 << width) - 1) << lsb
    return (value & ~mask) | ((new << lsb) & mask)


# ID register fields (D19.2.6x), as (lsb, width).
PFR0_SVE = (32, 4)
PFR0_MPAM = (40, 4)
PFR0_AMU = (44, 4)
PFR1_MTE = (8, 4)
PFR1_SME = (24, 4)
DFR0_PMUVER = (8, 4)
DFR0_BRPS = (12, 4)
DFR0_WRPS = (20, 4)
DFR0_PMSVER = (32, 4)
DFR0_TRACEBUFFER = (44, 4)
