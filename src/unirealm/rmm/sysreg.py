"""System register accesses a REC traps to the RMM (HCR_EL2.TID3): the ID registers show
the realm only the features its RmiRealmParams enabled (digest §2.5; TF-RMM
runtime/core/sysreg.c). This RMM offers no SVE, SME, PMU, MTE, AMU, MPAM or trace to a
realm, and the debug ID register counts the breakpoints and watchpoints the realm asked for."""

from __future__ import annotations

from collections.abc import Callable

from unirealm.arch import sysreg
from unirealm.arch.esr import SysRegAccess

from .realm import Realm

ReadRaw = Callable[[sysreg.SysReg], int]


def id_register(realm: Realm, reg: sysreg.SysReg, raw: int) -> int:
    """The value a realm reads from the ID register `reg` whose hardware value is `raw`."""
    if reg == sysreg.ID_AA64PFR0_EL1:
        for lsb, width in (sysreg.PFR0_SVE, sysreg.PFR0_MPAM, sysreg.PFR0_AMU):
            raw = sysreg.with_field(raw, lsb, 0, width)
        return raw
    if reg == sysreg.ID_AA64PFR1_EL1:
        for lsb, width in (sysreg.PFR1_MTE, sysreg.PFR1_SME):
            raw = sysreg.with_field(raw, lsb, 0, width)
        return raw
    if reg == sysreg.ID_AA64ZFR0_EL1:
        return 0  # SVE is not offered
    if reg == sysreg.ID_AA64DFR0_EL1:
        for lsb, width in (sysreg.DFR0_PMUVER, sysreg.DFR0_PMSVER, sysreg.DFR0_TRACEBUFFER):
            raw = sysreg.with_field(raw, lsb, 0, width)
        raw = sysreg.with_field(raw, *sysreg.DFR0_BRPS[:1], int(realm.params["num_bps"]), sysreg.DFR0_BRPS[1])
        return sysreg.with_field(raw, *sysreg.DFR0_WRPS[:1], int(realm.params["num_wps"]), sysreg.DFR0_WRPS[1])
    return raw


def emulate(realm: Realm, access: SysRegAccess, read_raw: ReadRaw) -> int | None:
    """The value for Rt of a trapped MRS, or None if the access must be UNDEFINED."""
    reg = sysreg.SysReg(*access.encoding)
    if not access.is_read or reg.op0 != 3 or reg.op1 != 0 or reg.crn != 0:
        return None
    return id_register(realm, reg, read_raw(reg))
