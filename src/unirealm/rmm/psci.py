"""PSCI for realms: the RMM answers VERSION and FEATURES itself and takes every call that
changes a REC's or the realm's power state to the host as a PSCI exit (digest §1.4;
TF-RMM runtime/rsi/psci.c). CPU_ON and AFFINITY_INFO then wait for RMI_PSCI_COMPLETE.
"""

from __future__ import annotations

from unirealm.arch.rmi import RealmState, RmiRecExitReason
from unirealm.arch.smccc import PSCI_VERSION_1_1, PsciFid, PsciReturn, unsigned64

from .core import Rmm
from .realm import PendingKind, PsciRequest, Rec
from .run import RecExit

SUPPORTED = {
    PsciFid.VERSION, PsciFid.FEATURES, PsciFid.CPU_SUSPEND, PsciFid.CPU_OFF, PsciFid.CPU_ON,
    PsciFid.AFFINITY_INFO, PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET,
}


def _ret(code: int) -> list[int]:
    return [unsigned64(code)]


def handle_psci(rmm: Rmm, rec: Rec, regs: list[int]) -> list[int] | RecExit:
    """A realm PSCI call: its result registers from x0, or a PSCI exit."""
    from .rmi import mpidr_to_rec_index

    fid = regs[0]
    base = fid & ~(1 << 30)  # the SMC64 forms share the SMC32 function number
    realm = rmm.realms[rec.rd]
    args = regs[1:4]
    if base == PsciFid.VERSION:
        return _ret(PSCI_VERSION_1_1)
    if base == PsciFid.FEATURES:
        asked = args[0] & 0xFFFF_FFFF
        return _ret(PsciReturn.SUCCESS if (asked & ~(1 << 30)) in SUPPORTED else PsciReturn.NOT_SUPPORTED)
    if base in (PsciFid.CPU_ON, PsciFid.AFFINITY_INFO):
        target = args[0]
        index = mpidr_to_rec_index(target)
        if index < 0 or index >= realm.rec_count or index not in realm.recs:
            return _ret(PsciReturn.INVALID_PARAMETERS)
        if base == PsciFid.CPU_ON:
            if not realm.addr_in_par(args[1]):
                return _ret(PsciReturn.INVALID_ADDRESS)
            if index == rec.index:
                return _ret(PsciReturn.ALREADY_ON)
        elif args[1] != 0:  # AFFINITY_INFO: lowest affinity level must be 0
            return _ret(PsciReturn.INVALID_PARAMETERS)
        rec.psci_request = PsciRequest(fid, target, args[1], args[2])
        return RecExit(RmiRecExitReason.PSCI, gprs=[fid, *args])
    if base in (PsciFid.CPU_SUSPEND, PsciFid.CPU_OFF, PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET):
        if base == PsciFid.CPU_OFF:
            rec.runnable = False
        if base in (PsciFid.SYSTEM_OFF, PsciFid.SYSTEM_RESET):
            realm.state = RealmState.SYSTEM_OFF
        rec.pending = PendingKind.PSCI
        return RecExit(RmiRecExitReason.PSCI, gprs=[fid, *args])
    return _ret(PsciReturn.NOT_SUPPORTED)
