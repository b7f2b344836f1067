"""The ID registers a realm reads (rmm/sysreg.py): HCR_EL2.TID3 traps every MRS of the ID
group 3 space (op0 3, op1 0, CRn 0) to the RMM, which answers with the hardware value less
the features it does not give realms (SVE, MPAM, AMU, MTE, SME, PMU, SPE, TRBE) and with
the breakpoint and watchpoint counts of the realm's RmiRealmParams (digest §2.5, TF-RMM
runtime/core/sysreg.c). Any other trapped access is UNDEFINED to the realm.

The masks below are written out from the Arm ARM's field positions (D19.2, ID_AA64PFR0_EL1
and friends) so they do not share the RMM's own field table."""

from __future__ import annotations

import pytest

from unirealm.arch.esr import SysRegAccess
from unirealm.arch.rmi import RmiFid, RmiRecExitReason
from unirealm.arch.sysreg import SysReg
from unirealm.machine.vcpu import SysRegTrap

from .conftest import Env, RecHandle

ONES = (1 << 64) - 1
PATTERNS = [ONES, 0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210, 0x1111_1111_1111_1111, 0]

# ID_AA64PFR0_EL1: SVE [35:32], MPAM [43:40], AMU [47:44].
PFR0_HIDDEN = (0xF << 32) | (0xF << 40) | (0xF << 44)
# ID_AA64PFR1_EL1: MTE [11:8], SME [27:24].
PFR1_HIDDEN = (0xF << 8) | (0xF << 24)
# ID_AA64DFR0_EL1: PMUVer [11:8], BRPs [15:12], WRPs [23:20], PMSVer [35:32], TraceBuffer [47:44].
DFR0_HIDDEN = (0xF << 8) | (0xF << 32) | (0xF << 44)
DFR0_BRPS_SHIFT, DFR0_WRPS_SHIFT = 12, 20
DFR0_COUNTS = (0xF << DFR0_BRPS_SHIFT) | (0xF << DFR0_WRPS_SHIFT)

PFR0 = (3, 0, 0, 4, 0)
PFR1 = (3, 0, 0, 4, 1)
ZFR0 = (3, 0, 0, 4, 4)
DFR0 = (3, 0, 0, 5, 0)
DFR1 = (3, 0, 0, 5, 1)
ISAR0 = (3, 0, 0, 6, 0)
MMFR0 = (3, 0, 0, 7, 0)
MIDR = (3, 0, 0, 0, 0)
ENTRY = 0x1000  # the REC's pc (conftest rec_values)


def expected(reg: tuple[int, ...], raw: int, num_bps: int, num_wps: int) -> int:
    if reg == PFR0:
        return raw & ~PFR0_HIDDEN
    if reg == PFR1:
        return raw & ~PFR1_HIDDEN
    if reg == ZFR0:
        return 0
    if reg == DFR0:
        return (raw & ~(DFR0_HIDDEN | DFR0_COUNTS)) | (num_bps << DFR0_BRPS_SHIFT) | (num_wps << DFR0_WRPS_SHIFT)
    return raw


class Hardware:
    """The values the REC's PE holds, by register encoding, with a record of what was read."""

    def __init__(self, values: dict[tuple[int, ...], int]) -> None:
        self.values = values
        self.read: list[tuple[int, ...]] = []

    def __call__(self, reg: SysReg) -> int:
        key = tuple(reg)
        self.read.append(key)
        return self.values[key]


def realm_with_counts(env: Env, num_bps: int, num_wps: int) -> RecHandle:
    realm = env.create_realm(40, num_bps=num_bps, num_wps=num_wps)
    rec = env.create_rec(realm)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    return rec


def mrs(reg: tuple[int, ...], rt: int, is_read: bool = True) -> SysRegTrap:
    return SysRegTrap(0, access=SysRegAccess(*reg, rt=rt, is_read=is_read))


def feature_counts(env: Env) -> tuple[int, int]:
    feat = env.ok(RmiFid.FEATURES, 0)[1]
    return (feat >> 14) & 0x3F, (feat >> 20) & 0x3F  # NUM_BPS [19:14], NUM_WPS [25:20] (digest §2.4)


@pytest.mark.parametrize("raw", PATTERNS)
@pytest.mark.parametrize("reg", [PFR0, PFR1, ZFR0, DFR0, DFR1, ISAR0, MMFR0, MIDR])
def test_realm_reads_id_register(env: Env, reg: tuple[int, ...], raw: int) -> None:
    max_bps, max_wps = feature_counts(env)
    num_bps, num_wps = min(3, max_bps), min(2, max_wps)
    assert (num_bps, num_wps) != (1, 1)
    rec = realm_with_counts(env, num_bps, num_wps)
    hw = Hardware({reg: raw})
    rec.engine.read_sysreg = hw  # type: ignore[attr-defined]
    rt = 7
    rec.engine.gprs[rt] = 0xDEAD
    rec.engine.push(mrs(reg, rt))
    rec.engine.idle_wfi = True
    _, run = env.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ  # the MRS completed inside the RMM
    assert rec.engine.injected == []
    assert hw.read == [reg]
    assert rec.engine.gprs[rt] == expected(reg, raw, num_bps, num_wps), f"{reg} {raw:#x}"
    assert rec.engine.pc == ENTRY + 4  # the MRS was stepped over, once


@pytest.mark.parametrize("counts", [(1, 1), (2, 1), (1, 2), (4, 3)])
def test_debug_counts_are_the_realms(env: Env, counts: tuple[int, int]) -> None:
    """BRPs and WRPs hold the realm's num_bps and num_wps, each "count - 1" like the
    parameters themselves (digest §2.4), whatever the PE has."""
    max_bps, max_wps = feature_counts(env)
    num_bps, num_wps = min(counts[0], max_bps), min(counts[1], max_wps)
    rec = realm_with_counts(env, num_bps, num_wps)
    rec.engine.read_sysreg = Hardware({DFR0: 0xF0_00F0_F0F0_F000})  # type: ignore[attr-defined]
    rec.engine.push(mrs(DFR0, 3))
    rec.engine.idle_wfi = True
    env.enter(rec)
    value = rec.engine.gprs[3]
    assert (value >> DFR0_BRPS_SHIFT) & 0xF == num_bps
    assert (value >> DFR0_WRPS_SHIFT) & 0xF == num_wps
    assert value == expected(DFR0, 0xF0_00F0_F0F0_F000, num_bps, num_wps)


@pytest.mark.parametrize(
    "access",
    [
        SysRegAccess(*PFR0, rt=2, is_read=False),  # MSR to an ID register
        SysRegAccess(2, 0, 0, 4, 0, rt=2, is_read=True),  # op0 2: the debug space
        SysRegAccess(3, 1, 0, 4, 0, rt=2, is_read=True),  # op1 1
        SysRegAccess(3, 0, 1, 0, 0, rt=2, is_read=True),  # CRn 1: SCTLR_EL1
        SysRegAccess(3, 3, 0, 0, 1, rt=2, is_read=True),  # CTR_EL0 is not trapped by TID3
    ],
)
def test_other_trapped_accesses_are_undefined(env: Env, access: SysRegAccess) -> None:
    rec = realm_with_counts(env, 1, 1)
    hw = Hardware({})
    rec.engine.read_sysreg = hw  # type: ignore[attr-defined]
    rec.engine.gprs[2] = 0x5555
    rec.engine.push(SysRegTrap(0, access=access))
    rec.engine.idle_wfi = True
    _, run = env.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    assert rec.engine.injected == ["undef"]
    assert hw.read == []  # nothing of the PE leaks
    assert rec.engine.gprs[2] == 0x5555
    assert rec.engine.pc == ENTRY


def test_two_realms_see_their_own_counts(env: Env) -> None:
    """The counts come from each realm's own parameters, not from a shared setting."""
    max_bps, max_wps = feature_counts(env)
    first = realm_with_counts(env, 1, min(2, max_wps))
    second = realm_with_counts(env, min(2, max_bps), 1)
    seen = []
    for rec in (first, second):
        rec.engine.read_sysreg = Hardware({DFR0: 0})  # type: ignore[attr-defined]
        rec.engine.push(mrs(DFR0, 0))
        rec.engine.idle_wfi = True
        env.enter(rec)
        seen.append(rec.engine.gprs[0])
    assert seen == [(min(2, max_wps) << DFR0_WRPS_SHIFT) | (1 << DFR0_BRPS_SHIFT),
                    (1 << DFR0_WRPS_SHIFT) | (min(2, max_bps) << DFR0_BRPS_SHIFT)]
