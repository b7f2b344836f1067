"""Exception syndrome encodings used in REC exits (Arm ARM, ESR_EL2 and HPFAR_EL2 descriptions; digest §2.3).

A REC exit caused by a stage-2 data abort carries ESR_EL2 (with the instruction syndrome
when the access can be emulated), FAR_EL2 (the page offset only) and HPFAR_EL2 (the IPA page).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

EC_SHIFT = 26
IL = 1 << 25


class Ec(IntEnum):
    UNKNOWN = 0x00
    WFX = 0x01
    SVC64 = 0x15
    HVC64 = 0x16
    SMC64 = 0x17
    SYSREG = 0x18
    SVE = 0x19
    IABT_LOWER = 0x20
    IABT_CUR = 0x21
    PC_ALIGNMENT = 0x22
    DABT_LOWER = 0x24
    DABT_CUR = 0x25
    SERROR = 0x2F
    BRK64 = 0x3C


# Data abort ISS fields
ISV = 1 << 24
SAS_SHIFT = 22
SSE = 1 << 21
SRT_SHIFT = 16
SF = 1 << 15
AR = 1 << 14
SET_SHIFT = 11  # synchronous error type, 2 bits
FNV = 1 << 10
EA = 1 << 9
WNR = 1 << 6
DFSC_MASK = 0x3F
DFSC_TRANSLATION_L0 = 0x04  # + level
DFSC_PERMISSION_L0 = 0x0C  # + level
DFSC_SEA = 0x10
ISS_WFX_TI_WFE = 1
EC_MASK = 0x3F << EC_SHIFT

# What RmiRecExit.esr may show the host (DEN0137 1.0-rel0 RmiRecExit, "esr"; TF-RMM
# ESR_NONEMULATED_ABORT_MASK / ESR_EMULATED_ABORT_MASK): an abort shows EC, SET, FnV, EA and
# the fault status; an emulatable data abort also ISV, SAS, SF and WnR. A WFI/WFE exit shows
# EC and TI. IL, SRT, SSE, AR and the rest stay inside the realm.
REC_EXIT_ABORT_ESR_MASK = EC_MASK | (0b11 << SET_SHIFT) | FNV | EA | DFSC_MASK
REC_EXIT_EMULATABLE_ABORT_ESR_MASK = REC_EXIT_ABORT_ESR_MASK | ISV | (0b11 << SAS_SHIFT) | SF | WNR
REC_EXIT_WFX_ESR_MASK = EC_MASK | ISS_WFX_TI_WFE

WFI_INSN = 0xD503207F
WFE_INSN = 0xD503205F


def esr(ec: int, iss: int = 0) -> int:
    return (ec << EC_SHIFT) | IL | iss


def esr_ec(value: int) -> int:
    return (value >> EC_SHIFT) & 0x3F


def esr_iss(value: int) -> int:
    return value & 0x1FF_FFFF


# Abort DFSC/IFSC values (ESR_ELx ISS for EC 0x20-0x25).
DFSC_SEA_ON_WALK_L0 = 0x14  # + level, 0..3
DFSC_ALIGNMENT = 0x21


def is_sea_on_walk(fsc: int) -> bool:
    """A synchronous external abort on a stage-1 translation table walk (level 0..3)."""
    return DFSC_SEA_ON_WALK_L0 <= fsc <= DFSC_SEA_ON_WALK_L0 + 3


def is_translation_fault(fsc: int) -> bool:
    return DFSC_TRANSLATION_L0 <= fsc <= DFSC_TRANSLATION_L0 + 3


def may_be_unmapped_table(fsc: int) -> bool:
    """A stage-1 fault a walk through a table page stage 2 had not mapped yet can cause."""
    return is_translation_fault(fsc) or is_sea_on_walk(fsc)


@dataclass(frozen=True)
class SysRegAccess:
    """The ISS of an EC 0x18 trap (MSR/MRS): Op0[21:20] Op2[19:17] Op1[16:14] CRn[13:10]
    Rt[9:5] CRm[4:1] Direction[0] (1 = read)."""

    op0: int
    op1: int
    crn: int
    crm: int
    op2: int
    rt: int
    is_read: bool

    @classmethod
    def from_iss(cls, iss: int) -> SysRegAccess:
        return cls(
            op0=(iss >> 20) & 3,
            op1=(iss >> 14) & 7,
            crn=(iss >> 10) & 0xF,
            crm=(iss >> 1) & 0xF,
            op2=(iss >> 17) & 7,
            rt=(iss >> 5) & 0x1F,
            is_read=bool(iss & 1),
        )

    @property
    def encoding(self) -> tuple[int, int, int, int, int]:
        return (self.op0, self.op1, self.crn, self.crm, self.op2)

    @classmethod
    def from_insn(cls, insn: int) -> SysRegAccess | None:
        """The access an MSR/MRS (register) instruction makes — what its EC 0x18 trap reports —
        or None for any other instruction. MSR is 0xD51<op0-2:1><op1:3><CRn:4><CRm:4><op2:3><Rt:5>,
        MRS the same with L (bit 21) set (C6.2 "MSR (register)", "MRS")."""
        if insn & 0xFFD0_0000 != 0xD510_0000:
            return None
        return cls(
            op0=2 + ((insn >> 19) & 1),
            op1=(insn >> 16) & 7,
            crn=(insn >> 12) & 0xF,
            crm=(insn >> 8) & 0xF,
            op2=(insn >> 5) & 7,
            rt=insn & 0x1F,
            is_read=bool(insn & (1 << 21)),
        )

    @property
    def iss(self) -> int:
        return (
            (self.op0 << 20)
            | (self.op2 << 17)
            | (self.op1 << 14)
            | (self.crn << 10)
            | (self.rt << 5)
            | (self.crm << 1)
            | int(self.is_read)
        )


@dataclass(frozen=True)
class AccessSyndrome:
    """What a single-register load or store reveals to the hypervisor."""

    is_write: bool
    size: int  # bytes: 1, 2, 4, 8
    srt: int  # register number; 31 = xzr/wzr
    sign_extend: bool = False
    sixty_four: bool = False  # SF: the register is 64-bit

    def iss(self, level: int = 3) -> int:
        sas = {1: 0, 2: 1, 4: 2, 8: 3}[self.size]
        iss = ISV | (sas << SAS_SHIFT) | (self.srt << SRT_SHIFT) | (DFSC_TRANSLATION_L0 + level)
        if self.sign_extend:
            iss |= SSE
        if self.sixty_four:
            iss |= SF
        if self.is_write:
            iss |= WNR
        return iss


@functools.lru_cache(maxsize=256)  # an AccessSyndrome is immutable; the host decodes one per MMIO exit
def decode_esr_access(value: int) -> AccessSyndrome | None:
    """The access an emulatable data-abort ESR describes, or None if ISV is clear."""
    if esr_ec(value) != Ec.DABT_LOWER or not value & ISV:
        return None
    return AccessSyndrome(
        is_write=bool(value & WNR),
        size=1 << ((value >> SAS_SHIFT) & 3),
        srt=(value >> SRT_SHIFT) & 0x1F,
        sign_extend=bool(value & SSE),
        sixty_four=bool(value & SF),
    )


def decode_load_store(insn: int) -> AccessSyndrome | None:
    """Syndrome for an A64 single general-register load/store without writeback.

    Covers LDR/STR (unsigned immediate), LDUR/STUR, LDTR/STTR and the register-offset form,
    in all sizes and sign-extending variants. Pair, exclusive, SIMD and writeback forms give
    None: the hardware reports ISV = 0 for them, so the access cannot be emulated.
    """
    if insn & (1 << 26):  # V: SIMD&FP register
        return None
    size_bits = (insn >> 30) & 3
    opc = (insn >> 22) & 3
    op_class = insn & 0x3B000000
    if op_class == 0x39000000:  # unsigned immediate
        pass
    elif op_class == 0x38000000:
        bit21 = (insn >> 21) & 1
        op2 = (insn >> 10) & 3
        if bit21 == 1 and op2 != 2:  # atomics / other
            return None
        if bit21 == 0 and op2 in (1, 3):  # post/pre-index writeback
            return None
    else:
        return None
    size = 1 << size_bits
    rt = insn & 0x1F
    if opc == 0:
        return AccessSyndrome(True, size, rt, sixty_four=size == 8)
    if opc == 1:
        return AccessSyndrome(False, size, rt, sixty_four=size == 8)
    if size == 8:  # opc 2/3 with size 8: PRFM / unallocated
        return None
    if opc == 2:
        return AccessSyndrome(False, size, rt, sign_extend=True, sixty_four=True)
    if size == 4:  # LDRSW only exists with opc 2
        return None
    return AccessSyndrome(False, size, rt, sign_extend=True, sixty_four=False)


def hpfar_for_ipa(ipa: int) -> int:
    """HPFAR_EL2.FIPA holds IPA[51:12] in bits [43:4]."""
    return (ipa >> 12) << 4


def ipa_from_hpfar_far(hpfar: int, far: int) -> int:
    return ((hpfar >> 4) << 12) | (far & 0xFFF)
