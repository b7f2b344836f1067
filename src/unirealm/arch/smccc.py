"""SMC Calling Convention and PSCI facts (Arm DEN0028 SMCCC 1.2, DEN0022 PSCI 1.1).

FID layout (SMCCC 1.2 §2.5): bit31 fast call, bit30 SMC64, bits[29:24] owning entity,
bits[15:0] function number. RMI and RSI live in the Standard Secure Service range (OEN 4).
"""

from __future__ import annotations

from enum import IntEnum

MASK64 = (1 << 64) - 1

FAST_CALL = 1 << 31
SMC64 = 1 << 30
OEN_SHIFT = 24
OEN_ARCH = 0
OEN_STANDARD = 4
SVE_HINT = 1 << 16  # SMCCC 1.3 SVE live-state hint; ignored by the RMM (digest §1.1)

# Number of argument/result registers the conduit carries: x0..x17 in, x0..x17 out (SMCCC 1.2);
# RMI/RSI define results only up to x4 (RSI_MEASUREMENT_READ: x0..x8).
NUM_ARG_REGS = 18

SMCCC_VERSION = 0x8000_0000
SMCCC_ARCH_FEATURES = 0x8000_0001
SMCCC_ARCH_SOC_ID = 0x8000_0002
SMCCC_VERSION_1_1 = 0x0001_0001  # what KVM reports to its guests
SMCCC_VERSION_1_2 = 0x0001_0002

SMCCC_SUCCESS = 0
SMCCC_NOT_SUPPORTED = MASK64  # -1 as a 64-bit register value
SMCCC_NOT_REQUIRED = MASK64 - 1  # -2


def fid_is_fast(fid: int) -> bool:
    return bool(fid & FAST_CALL)


def fid_is_smc64(fid: int) -> bool:
    return bool(fid & SMC64)


def fid_oen(fid: int) -> int:
    return (fid >> OEN_SHIFT) & 0x3F


def fid_number(fid: int) -> int:
    return fid & 0xFFFF


def strip_sve_hint(fid: int) -> int:
    return fid & ~SVE_HINT & 0xFFFF_FFFF


def signed64(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def unsigned64(value: int) -> int:
    return value & MASK64


class PsciFid(IntEnum):
    """PSCI 1.1 function IDs (DEN0022 §5.1). SMC32 forms; SMC64 forms add bit 30."""

    VERSION = 0x8400_0000
    CPU_SUSPEND = 0x8400_0001
    CPU_OFF = 0x8400_0002
    CPU_ON = 0x8400_0003
    AFFINITY_INFO = 0x8400_0004
    MIGRATE = 0x8400_0005
    MIGRATE_INFO_TYPE = 0x8400_0006
    MIGRATE_INFO_UP_CPU = 0x8400_0007
    SYSTEM_OFF = 0x8400_0008
    SYSTEM_RESET = 0x8400_0009
    FEATURES = 0x8400_000A
    CPU_SUSPEND_64 = 0xC400_0001
    CPU_ON_64 = 0xC400_0003
    AFFINITY_INFO_64 = 0xC400_0004
    MIGRATE_64 = 0xC400_0005
    MIGRATE_INFO_UP_CPU_64 = 0xC400_0007


PSCI_FNUM_MAX = 0x14  # PSCI owns function numbers 0x000..0x014 of the standard range


def is_psci(fid: int) -> bool:
    return fid_oen(fid) == OEN_STANDARD and fid_number(fid) <= PSCI_FNUM_MAX and bool(fid & FAST_CALL)


class PsciReturn(IntEnum):
    SUCCESS = 0
    NOT_SUPPORTED = -1
    INVALID_PARAMETERS = -2
    DENIED = -3
    ALREADY_ON = -4
    ON_PENDING = -5
    INTERNAL_FAILURE = -6
    NOT_PRESENT = -7
    DISABLED = -8
    INVALID_ADDRESS = -9


class PsciAffinityState(IntEnum):
    ON = 0
    OFF = 1
    ON_PENDING = 2


PSCI_VERSION_1_1 = 0x0001_0001


class RmmEl3Fid(IntEnum):
    """The RMM-EL3 interface (TF-A "RMM-EL3 communication interface"), fnum 0x1B0..0x1CF."""

    GTSI_DELEGATE = 0xC400_01B0
    GTSI_UNDELEGATE = 0xC400_01B1
    ATTEST_GET_REALM_KEY = 0xC400_01B2
    ATTEST_GET_PLAT_TOKEN = 0xC400_01B3


class RmmEl3Status(IntEnum):
    OK = 0
    UNKNOWN = -1
    BAD_ADDR = -2
    BAD_PAS = -3
    NOMEM = -4
    INVAL = -5
