"""PSCI for realms, one handler per function: the RMM answers VERSION and FEATURES itself
and takes every call that changes a REC's or the realm's power state to the host as a PSCI
exit (digest §1.4; TF-RMM runtime/rsi/psci.c). CPU_ON and AFFINITY_INFO then wait for
RMI_PSCI_COMPLETE. Each handler gets the RMM, the calling REC and the call's registers
(x0 = FID, then its arguments), and returns x0 or a RecExit.
"""

from __future__ import annotations

from unirealm.arch.rmi import RealmState, RmiRecExitReason
from unirealm.arch.smccc import (
    PSCI_VERSION_1_1,
    SMCCC_VERSION,
    PsciAffinityState,
    PsciFid,
    PsciReturn,
    unsigned64,
)

from .realm import PendingKind, PsciRequest, Rec, mpidr_to_rec_index
from .run import RecExit
from .state import RmmState

# The functions PSCI_FEATURES reports as present (TF-RMM psci_features).
FEATURES = frozenset({
    PsciFid.CPU_SUSPEND, PsciFid.CPU_SUSPEND_64, PsciFid.CPU_OFF, PsciFid.CPU_ON, PsciFid.CPU_ON_64,
    PsciFid.AFFINITY_INFO, PsciFid.AFFINITY_INFO_64, PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET,
    PsciFid.FEATURES, SMCCC_VERSION,
})

Result = list[int] | RecExit


def _ret(code: int) -> list[int]:
    return [unsigned64(code)]


def _exit(regs: list[int]) -> RecExit:
    """A PSCI exit: the host sees the FID and the first three arguments."""
    return RecExit(RmiRecExitReason.PSCI, gprs=[*regs, 0, 0, 0][:4])


def psci_version(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    return _ret(PSCI_VERSION_1_1)


def psci_features(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    asked = regs[1] & 0xFFFF_FFFF
    return _ret(PsciReturn.SUCCESS if asked in FEATURES else PsciReturn.NOT_SUPPORTED)


def _target_index(rmm: RmmState, rec: Rec, mpidr: int) -> int | None:
    realm = rmm.realms[rec.rd]
    index = mpidr_to_rec_index(mpidr)
    if index < 0 or index >= realm.rec_count or index not in realm.recs:
        return None
    return index


def cpu_on(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    """The entry point is checked first, then the target (TF-RMM psci_cpu_on)."""
    fid, target, entry, context_id = regs
    if not rmm.realms[rec.rd].addr_in_par(entry):
        return _ret(PsciReturn.INVALID_ADDRESS)
    index = _target_index(rmm, rec, target)
    if index is None:
        return _ret(PsciReturn.INVALID_PARAMETERS)
    if index == rec.index:
        return _ret(PsciReturn.ALREADY_ON)
    rec.psci_request = PsciRequest(fid, target, entry, context_id)
    return _exit(regs)


def affinity_info(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    """A REC asking about itself is ON without an exit (TF-RMM psci_affinity_info)."""
    fid, target, lowest_level = regs
    index = _target_index(rmm, rec, target)
    if lowest_level != 0 or index is None:
        return _ret(PsciReturn.INVALID_PARAMETERS)
    if index == rec.index:
        return _ret(PsciAffinityState.ON)
    rec.psci_request = PsciRequest(fid, target)
    return _exit(regs)


def _power_exit(rec: Rec, regs: list[int]) -> RecExit:
    rec.pending = PendingKind.PSCI
    return _exit(regs)


def cpu_suspend(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    return _power_exit(rec, regs)


def cpu_off(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    rec.runnable = False
    return _power_exit(rec, regs)


def system_off(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    rmm.realms[rec.rd].state = RealmState.SYSTEM_OFF
    return _power_exit(rec, regs)


def system_reset(rmm: RmmState, rec: Rec, regs: list[int]) -> Result:
    rmm.realms[rec.rd].state = RealmState.SYSTEM_OFF
    return _power_exit(rec, regs)
