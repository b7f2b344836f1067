"""Realm Management Interface, DEN0137 1.0-rel0 (digest §2; TF-RMM smc-rmi.h, status.h).

The ABI the host uses to build and run realms: function IDs, status codes with their
status+index packing, realm/granule/RTT enums, feature register 0 and the RMI structures
(RmiRealmParams, RmiRecParams, RmiRecRun).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

from .layout import Field, Layout
from .rsi import version

RMI_ABI_VERSION = version(1, 0)


class RmiFid(IntEnum):
    VERSION = 0xC400_0150
    GRANULE_DELEGATE = 0xC400_0151
    GRANULE_UNDELEGATE = 0xC400_0152
    DATA_CREATE = 0xC400_0153
    DATA_CREATE_UNKNOWN = 0xC400_0154
    DATA_DESTROY = 0xC400_0155
    REALM_ACTIVATE = 0xC400_0157
    REALM_CREATE = 0xC400_0158
    REALM_DESTROY = 0xC400_0159
    REC_CREATE = 0xC400_015A
    REC_DESTROY = 0xC400_015B
    REC_ENTER = 0xC400_015C
    RTT_CREATE = 0xC400_015D
    RTT_DESTROY = 0xC400_015E
    RTT_MAP_UNPROTECTED = 0xC400_015F
    RTT_READ_ENTRY = 0xC400_0161
    RTT_UNMAP_UNPROTECTED = 0xC400_0162
    PSCI_COMPLETE = 0xC400_0164
    FEATURES = 0xC400_0165
    RTT_FOLD = 0xC400_0166
    REC_AUX_COUNT = 0xC400_0167
    RTT_INIT_RIPAS = 0xC400_0168
    RTT_SET_RIPAS = 0xC400_0169


RMI_FNUM_FIRST = 0x150
RMI_FNUM_LAST = 0x16F  # the 1.0 RMI range; unassigned numbers return SMCCC NOT_SUPPORTED


class RmiStatus(IntEnum):
    SUCCESS = 0
    ERROR_INPUT = 1
    ERROR_REALM = 2
    ERROR_REC = 3
    ERROR_RTT = 4


def pack_status(status: int, index: int = 0) -> int:
    """X0 = status in bits [7:0] | index in bits [15:8] (digest §2.1)."""
    return (int(status) & 0xFF) | ((index & 0xFF) << 8)


def status_of(x0: int) -> RmiStatus:
    return RmiStatus(x0 & 0xFF)


def index_of(x0: int) -> int:
    return (x0 >> 8) & 0xFF


class RealmState(IntEnum):
    NEW = 0
    ACTIVE = 1
    SYSTEM_OFF = 2


class GranuleState(IntEnum):
    """RMM granule states (digest §2.3). The numbers are TF-RMM's internal ones."""

    UNDELEGATED = 0
    DELEGATED = 1
    RD = 2
    REC = 3
    REC_AUX = 4
    DATA = 5
    RTT = 6


class RmiRipas(IntEnum):
    EMPTY = 0
    RAM = 1
    DESTROYED = 2


class RmiHipas(IntEnum):
    """Host IPA state of a protected RTT entry, plus the two unprotected-half states."""

    UNASSIGNED = 0
    ASSIGNED = 1
    UNASSIGNED_NS = 2
    ASSIGNED_NS = 3


class RttEntryState(IntEnum):
    """RMI_RTT_READ_ENTRY X2 (digest §2.3)."""

    UNASSIGNED = 0
    ASSIGNED = 1
    TABLE = 2


class RmiRecExitReason(IntEnum):
    SYNC = 0
    IRQ = 1
    FIQ = 2
    PSCI = 3
    RIPAS_CHANGE = 4
    HOST_CALL = 5
    SERROR = 6


class RmiRealmFlags(IntFlag):
    LPA2 = 1 << 0
    SVE = 1 << 1
    PMU = 1 << 2


class RmiRecFlags(IntFlag):
    RUNNABLE = 1 << 0


class RmiRecEnterFlags(IntFlag):
    EMULATED_MMIO = 1 << 0
    INJECT_SEA = 1 << 1
    TRAP_WFI = 1 << 2
    TRAP_WFE = 1 << 3
    RIPAS_RESPONSE = 1 << 4  # 1 = the host rejects the realm's RIPAS change request


class RmiDataFlags(IntEnum):
    UNMEASURED = 0
    MEASURED = 1


class RmiHashAlgorithm(IntEnum):
    SHA_256 = 0
    SHA_512 = 1


class RmiPmuOverflowStatus(IntEnum):
    NOT_ACTIVE = 0
    ACTIVE = 1


# Feature register 0 (RMI_FEATURES index 0), 1.0-rel0 packing (digest §2.4): (lsb, width).
FEAT_REG0_FIELDS: dict[str, tuple[int, int]] = {
    "S2SZ": (0, 8),
    "LPA2": (8, 1),
    "SVE_EN": (9, 1),
    "SVE_VL": (10, 4),
    "NUM_BPS": (14, 6),
    "NUM_WPS": (20, 6),
    "PMU_EN": (26, 1),
    "PMU_NUM_CTRS": (27, 5),
    "HASH_SHA_256": (32, 1),
    "HASH_SHA_512": (33, 1),
    "GICV3_NUM_LRS": (34, 4),
    "MAX_RECS_ORDER": (38, 4),
}


def feat_reg0_pack(**fields: int) -> int:
    value = 0
    for name, v in fields.items():
        lsb, width = FEAT_REG0_FIELDS[name]
        if v >> width:
            raise ValueError(f"FeatReg0.{name}={v} does not fit in {width} bits")
        value |= v << lsb
    return value


def feat_reg0_get(reg: int, name: str) -> int:
    lsb, width = FEAT_REG0_FIELDS[name]
    return (reg >> lsb) & ((1 << width) - 1)


# RmiRealmParams (digest §2.5). TF-RMM reads the 1-byte fields as 32-bit words; the spec
# defines them at 8-byte strides. Only flags..hash_algo are measured (digest §4.3.1).
RMI_REALM_PARAMS = Layout(
    "RmiRealmParams",
    "DEN0137 1.0-rel0, RmiRealmParams type (digest §2.5)",
    4096,
    (
        Field("flags", 0x000, "Q"),
        Field("s2sz", 0x008, "B"),
        Field("sve_vl", 0x010, "B"),
        Field("num_bps", 0x018, "B"),
        Field("num_wps", 0x020, "B"),
        Field("pmu_num_ctrs", 0x028, "B"),
        Field("hash_algo", 0x030, "B"),
        Field("rpv", 0x400, "64s"),
        Field("vmid", 0x800, "H"),
        Field("rtt_base", 0x808, "Q"),
        Field("rtt_level_start", 0x810, "q"),
        Field("rtt_num_start", 0x818, "I"),
    ),
)
# The fields REALM_CREATE copies into the zero page it hashes for the initial RIM.
REALM_PARAMS_MEASURED = ("flags", "s2sz", "sve_vl", "num_bps", "num_wps", "pmu_num_ctrs", "hash_algo")

MAX_REC_AUX_GRANULES = 16

RMI_REC_PARAMS = Layout(
    "RmiRecParams",
    "DEN0137 1.0-rel0, RmiRecParams type (digest §2.5)",
    4096,
    (
        Field("flags", 0x000, "Q"),
        Field("mpidr", 0x100, "Q"),
        Field("pc", 0x200, "Q"),
        Field("gprs", 0x300, "8Q"),
        Field("num_rec_aux", 0x800, "Q"),
        Field("aux", 0x808, "16Q"),
    ),
)
REC_PARAMS_MEASURED = ("flags", "pc", "gprs")

NUM_REC_GPRS = 31
NUM_GICV3_LRS = 16
REC_EXIT_OFFSET = 0x800

# RmiRecRun = RmiRecEnter at 0x000 followed by RmiRecExit at 0x800, one NS granule.
RMI_REC_RUN = Layout(
    "RmiRecRun",
    "DEN0137 1.0-rel0, RmiRecRun / RmiRecEnter / RmiRecExit types (digest §2.5)",
    4096,
    (
        # RmiRecEnter
        Field("enter_flags", 0x000, "Q"),
        Field("enter_gprs", 0x200, "31Q"),
        Field("enter_gicv3_hcr", 0x300, "Q"),
        Field("enter_gicv3_lrs", 0x308, "16Q"),
        # RmiRecExit
        Field("exit_reason", 0x800, "Q"),
        Field("exit_esr", 0x900, "Q"),
        Field("exit_far", 0x908, "Q"),
        Field("exit_hpfar", 0x910, "Q"),
        Field("exit_gprs", 0xA00, "31Q"),
        Field("exit_gicv3_hcr", 0xB00, "Q"),
        Field("exit_gicv3_lrs", 0xB08, "16Q"),
        Field("exit_gicv3_misr", 0xB88, "Q"),
        Field("exit_gicv3_vmcr", 0xB90, "Q"),
        Field("exit_cntp_ctl", 0xC00, "Q"),
        Field("exit_cntp_cval", 0xC08, "Q"),
        Field("exit_cntv_ctl", 0xC10, "Q"),
        Field("exit_cntv_cval", 0xC18, "Q"),
        Field("exit_ripas_base", 0xD00, "Q"),
        Field("exit_ripas_top", 0xD08, "Q"),
        Field("exit_ripas_value", 0xD10, "B"),
        Field("exit_imm", 0xE00, "H"),
        Field("exit_pmu_ovf_status", 0xF00, "B"),
    ),
)
RMI_REC_EXIT_FIELDS = tuple(f.name for f in RMI_REC_RUN.fields if f.name.startswith("exit_"))
# RmiRecEnter and RmiRecExit, each as one compiled struct over its half of the granule: the
# RMM reads the one and writes the other, whole, at every REC_ENTER (its other bytes zero).
RMI_REC_ENTER_SPAN = RMI_REC_RUN.span(
    (f.name for f in RMI_REC_RUN.fields if f.name.startswith("enter_")), 0, REC_EXIT_OFFSET
)
RMI_REC_EXIT_SPAN = RMI_REC_RUN.span(RMI_REC_EXIT_FIELDS, REC_EXIT_OFFSET, RMI_REC_RUN.size)

# Argument and result register names, for traces and for decoding (digest §2.2).
RMI_ARGS: dict[RmiFid, tuple[str, ...]] = {
    RmiFid.VERSION: ("req",),
    RmiFid.GRANULE_DELEGATE: ("pa",),
    RmiFid.GRANULE_UNDELEGATE: ("pa",),
    RmiFid.DATA_CREATE: ("rd", "data", "ipa", "src", "flags"),
    RmiFid.DATA_CREATE_UNKNOWN: ("rd", "data", "ipa"),
    RmiFid.DATA_DESTROY: ("rd", "ipa"),
    RmiFid.REALM_ACTIVATE: ("rd",),
    RmiFid.REALM_CREATE: ("rd", "params"),
    RmiFid.REALM_DESTROY: ("rd",),
    RmiFid.REC_CREATE: ("rd", "rec", "params"),
    RmiFid.REC_DESTROY: ("rec",),
    RmiFid.REC_ENTER: ("rec", "run"),
    RmiFid.RTT_CREATE: ("rd", "rtt", "ipa", "level"),
    RmiFid.RTT_DESTROY: ("rd", "ipa", "level"),
    RmiFid.RTT_MAP_UNPROTECTED: ("rd", "ipa", "level", "desc"),
    RmiFid.RTT_READ_ENTRY: ("rd", "ipa", "level"),
    RmiFid.RTT_UNMAP_UNPROTECTED: ("rd", "ipa", "level"),
    RmiFid.PSCI_COMPLETE: ("calling_rec", "target_rec", "status"),
    RmiFid.FEATURES: ("index",),
    RmiFid.RTT_FOLD: ("rd", "ipa", "level"),
    RmiFid.REC_AUX_COUNT: ("rd",),
    RmiFid.RTT_INIT_RIPAS: ("rd", "base", "top"),
    RmiFid.RTT_SET_RIPAS: ("rd", "rec", "base", "top"),
}
RMI_RESULTS: dict[RmiFid, tuple[str, ...]] = {
    RmiFid.VERSION: ("lower", "higher"),
    RmiFid.DATA_DESTROY: ("data", "top"),
    RmiFid.RTT_DESTROY: ("rtt", "top"),
    RmiFid.RTT_READ_ENTRY: ("walk_level", "state", "desc", "ripas"),
    RmiFid.RTT_UNMAP_UNPROTECTED: ("top",),
    RmiFid.FEATURES: ("value",),
    RmiFid.RTT_FOLD: ("rtt",),
    RmiFid.REC_AUX_COUNT: ("aux_count",),
    RmiFid.RTT_INIT_RIPAS: ("top",),
    RmiFid.RTT_SET_RIPAS: ("top",),
}
