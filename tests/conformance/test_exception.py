"""ACS 1.0 exception suite: REC exits and what the host may see of them (DEN0137 1.0-rel0
RmiRecExit; the realm is the ACS's default, s2sz 32 starting at level 1 with one root)."""

from __future__ import annotations

import time

from unirealm.arch.rmi import RmiFid, RmiRecEnterFlags, RmiRecExitReason, RmiStatus
from unirealm.arch.rsi import RsiFid
from unirealm.machine.interrupt import HOST_IRQ
from unirealm.machine.vcpu import WfxTrap

from .acs import (
    B_SELF,
    CODE_IPA,
    DATA_IPA,
    HVC0,
    PSCI_SYSTEM_OFF,
    SMC0,
    WFI,
    AcsEnv,
    assert_status,
    br,
    ldp_x,
    ldr_w,
    mov64,
    str_x,
    with_vectors,
)

UNPROTECTED = 1 << 31  # s2sz 32: IPA bit 31 selects the unprotected half
EC_DABT = 0x24 << 26
EC_IABT = 0x20 << 26
EC_WFX = 0x01 << 26
ISV = 1 << 24
SAS_WORD = 2 << 22
SAS_DOUBLE = 3 << 22
SF = 1 << 15
WNR = 1 << 6
PSCI_CPU_ON = 0xC400_0003


def hpfar(ipa: int) -> int:
    return (ipa >> 12) << 4


def scripted_realm(acs: AcsEnv):  # type: ignore[no-untyped-def]
    realm = acs.default_realm()
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    return realm, rec


def test_exception_rec_exit_wfi(acs: AcsEnv) -> None:
    code = acs.code_realm([WFI, *mov64(0, PSCI_SYSTEM_OFF), SMC0])
    out, run = acs.enter(code.rec, RmiRecEnterFlags.TRAP_WFI)
    assert_status(out, RmiStatus.SUCCESS)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    assert run["exit_esr"] == EC_WFX  # EC and TI (0: WFI) only
    assert (run["exit_far"], run["exit_hpfar"]) == (0, 0)
    out, run = acs.enter(code.rec)  # the REC continues after the WFI
    assert run["exit_reason"] == RmiRecExitReason.PSCI and run["exit_gprs"][0] == PSCI_SYSTEM_OFF


def test_exception_rec_exit_wfe(acs: AcsEnv) -> None:
    """WFE executes as a no-op on the vCPU, so a scripted REC makes the trapped WFE."""
    _realm, rec = scripted_realm(acs)
    rec.engine.push(WfxTrap(0x1000, True))
    out, run = acs.enter(rec, RmiRecEnterFlags.TRAP_WFE)
    assert_status(out, RmiStatus.SUCCESS)
    assert (run["exit_reason"], run["exit_esr"]) == (RmiRecExitReason.SYNC, EC_WFX | 1)  # TI = WFE


def test_exception_rec_exit_irq(acs: AcsEnv) -> None:
    """A physical interrupt for the host while the realm runs (the host's EL2 timer here, as
    the ACS raises one): an IRQ exit with nothing else reported; the REC resumes where it was."""
    code = acs.code_realm([*mov64(2, 1 << 40), 0xF100_0442, 0x54FF_FFE1, *mov64(0, PSCI_SYSTEM_OFF), SMC0])
    HOST_IRQ.deadline = time.monotonic() + 0.05
    try:
        out, run = acs.enter(code.rec)  # subs x2, x2, #1; b.ne .-4: a long loop
    finally:
        HOST_IRQ.deadline = None
    assert_status(out, RmiStatus.SUCCESS)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    assert (run["exit_esr"], run["exit_far"], run["exit_hpfar"]) == (0, 0, 0)
    pc = acs.rmm.recs[code.rec.rec].engine.pc
    assert CODE_IPA + 16 <= pc <= CODE_IPA + 20  # inside the loop


def test_exception_rec_exit_hostcall(acs: AcsEnv) -> None:
    realm = acs.default_realm()
    acs.ensure_rtts(realm, DATA_IPA, 3)
    acs.data_create(realm, DATA_IPA, (0x1234).to_bytes(2, "little"))  # RsiHostCall.imm
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.push([RsiFid.HOST_CALL, DATA_IPA])
    _, run = acs.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.HOST_CALL
    assert run["exit_imm"] == 0x1234 and run["exit_esr"] == 0
    acs.enter(rec, gprs=[7, 8, 9])
    assert rec.engine.log[0].out is not None and rec.engine.log[0].out[0] == 0  # RSI_SUCCESS
    data = acs.rmm.stage2_translate(acs.realm(realm), DATA_IPA)
    assert data is not None and acs.realm_mem.read(data.pa + 8, 24) == b"".join(v.to_bytes(8, "little") for v in (7, 8, 9))


def test_exception_rec_exit_psci(acs: AcsEnv) -> None:
    _realm, rec = scripted_realm(acs)
    # One REC: CPU_ON of an MPIDR the realm does not have is answered inside the realm.
    rec.engine.push([PSCI_CPU_ON, 5, 0x1000, 0])
    rec.engine.push([PSCI_SYSTEM_OFF, 1, 2, 3])
    out, run = acs.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    assert list(run["exit_gprs"][:4]) == [PSCI_SYSTEM_OFF, 1, 2, 3]
    assert rec.engine.log[0].out is not None and rec.engine.log[0].out[0] == (1 << 64) - 2  # INVALID_PARAMETERS
    out = acs.smc(RmiFid.REC_ENTER, rec.rec, rec.run)
    assert_status(out, RmiStatus.ERROR_REALM, 1)  # SYSTEM_OFF


def test_exception_realm_unsupported_smc(acs: AcsEnv) -> None:
    _realm, rec = scripted_realm(acs)
    rec.engine.push([RmiFid.GRANULE_DELEGATE, 0x8_8000_0000], [0xC500_0000])
    acs.enter(rec)
    assert [r.out[0] for r in rec.engine.log[:2] if r.out] == [(1 << 64) - 1] * 2


def test_exception_rec_exit_hvc(acs: AcsEnv) -> None:
    code = acs.code_realm(with_vectors([HVC0]))
    _out, run = acs.enter(code.rec)
    assert run["exit_reason"] == RmiRecExitReason.PSCI  # the realm's handler ran
    assert run["exit_gprs"][1] >> 26 == 0  # ESR_EL1.EC = Unknown: HVC is undefined in a realm


def test_exception_rec_exit_ripas(acs: AcsEnv) -> None:
    _realm, rec = scripted_realm(acs)
    rec.engine.push([RsiFid.IPA_STATE_SET, 0x10_0000, 0x10_2000, 1, 0])
    _out, run = acs.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.RIPAS_CHANGE
    assert (run["exit_ripas_base"], run["exit_ripas_top"], run["exit_ripas_value"]) == (0x10_0000, 0x10_2000, 1)
    assert run["exit_esr"] == 0


def test_exception_rec_exit_ia(acs: AcsEnv) -> None:
    target = 0x40_0000  # protected, RIPAS RAM, never given a DATA granule
    code = acs.code_realm([*mov64(1, target), br(1)], activate=False)
    acs.ensure_rtts(code.realm, target, 3)
    acs.init_ripas(code.realm, target, target + 0x1000)
    acs.ok(RmiFid.REALM_ACTIVATE, code.realm.rd)
    _out, run = acs.enter(code.rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    level = acs.read_entry(code.realm, target, 3)[0]
    assert run["exit_esr"] == EC_IABT | (0x04 + level)
    assert (run["exit_far"], run["exit_hpfar"]) == (0, hpfar(target))


def test_exception_emulatable_da(acs: AcsEnv) -> None:
    """A 32-bit store, then a load, at an unassigned unprotected IPA: emulatable."""
    ipa = UNPROTECTED + 0x1000
    words = [*mov64(1, ipa), *mov64(3, 0x333), 0xB900_0023, ldr_w(4, 1), *mov64(0, PSCI_SYSTEM_OFF), 0xAA04_03E1, SMC0]
    code = acs.code_realm(words)  # 0xB9000023: STR W3, [X1]; 0xAA0403E1: MOV X1, X4
    acs.ensure_rtts(code.realm, ipa, 3)
    _, run = acs.enter(code.rec)
    assert run["exit_esr"] == EC_DABT | ISV | SAS_WORD | WNR | 0x07  # no IL, SRT, SSE, SF
    assert (run["exit_far"], run["exit_hpfar"], run["exit_gprs"][0]) == (0, hpfar(ipa), 0x333)
    _, run = acs.enter(code.rec, RmiRecEnterFlags.EMULATED_MMIO)
    assert run["exit_esr"] == EC_DABT | ISV | SAS_WORD | 0x07
    _out, run = acs.enter(code.rec, RmiRecEnterFlags.EMULATED_MMIO, gprs=[0xABCD_1234_5678])
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    assert run["exit_gprs"][1] == 0x1234_5678  # the load took entry.gprs[0], 32 bits of it


def test_exception_non_emulatable_da(acs: AcsEnv) -> None:
    """A read of a write-only unprotected mapping: a permission fault at the mapping level."""
    ipa = UNPROTECTED + 0x2000
    code = acs.code_realm([*mov64(1, ipa), *mov64(3, 0x55), str_x(3, 1), ldr_w(4, 1), B_SELF])
    pa = acs.map_unprotected(code.realm, ipa, s2ap=0b10)
    out, run = acs.enter(code.rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    assert run["exit_esr"] == EC_DABT | 0x0F  # permission fault, level 3; no ISV, SAS, WnR, IL
    assert (run["exit_far"], run["exit_hpfar"], run["exit_gprs"][0]) == (0, hpfar(ipa), 0)
    assert acs.ns.read_u64(pa) == 0x55  # the store was allowed
    out = acs.smc(RmiFid.REC_ENTER, code.rec.rec, code.rec.run)
    assert_status(out, RmiStatus.SUCCESS)


def test_exception_non_emulatable_da_1(acs: AcsEnv) -> None:
    """An access without instruction syndrome (LDP) at an unassigned unprotected IPA."""
    ipa = UNPROTECTED + 0x3000
    code = acs.code_realm(with_vectors([*mov64(1, ipa), ldp_x(2, 3, 1)]))
    acs.ensure_rtts(code.realm, ipa, 3)
    out, run = acs.enter(code.rec)
    assert run["exit_esr"] == EC_DABT | 0x07
    assert (run["exit_far"], run["exit_hpfar"]) == (0, hpfar(ipa))
    out, _ = acs.enter(code.rec, RmiRecEnterFlags.EMULATED_MMIO)
    assert_status(out, RmiStatus.ERROR_REC)  # not an emulatable abort
    out, run = acs.enter(code.rec, RmiRecEnterFlags.INJECT_SEA)
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    assert run["exit_gprs"][1] >> 26 == 0x25 and run["exit_gprs"][1] & 0x3F == 0x10  # SEA in the realm


def _protected_destroyed_da(acs: AcsEnv, write: bool) -> None:
    words = [*mov64(1, DATA_IPA), str_x(3, 1) if write else ldr_w(3, 1), B_SELF]
    code = acs.code_realm(words, activate=False)
    acs.ok(RmiFid.REALM_ACTIVATE, code.realm.rd)
    acs.ok(RmiFid.DATA_DESTROY, code.realm.rd, DATA_IPA)  # HIPAS UNASSIGNED, RIPAS DESTROYED
    out, run = acs.enter(code.rec)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    assert run["exit_esr"] == EC_DABT | 0x07  # translation fault, level 3; nothing else
    assert (run["exit_far"], run["exit_hpfar"]) == (0, hpfar(DATA_IPA))
    for flag in (RmiRecEnterFlags.EMULATED_MMIO, RmiRecEnterFlags.INJECT_SEA):
        out, _ = acs.enter(code.rec, flag)
        assert_status(out, RmiStatus.ERROR_REC)  # a protected IPA: neither may complete it


def test_exception_non_emulatable_da_2(acs: AcsEnv) -> None:
    """A read of a protected IPA whose DATA the host destroyed."""
    _protected_destroyed_da(acs, write=False)


def test_exception_non_emulatable_da_3(acs: AcsEnv) -> None:
    """A write to a protected IPA whose DATA the host destroyed."""
    _protected_destroyed_da(acs, write=True)


def test_entry_flags_after_an_exit_that_was_not_a_data_abort(acs: AcsEnv) -> None:
    code = acs.code_realm([WFI, B_SELF])
    acs.enter(code.rec, RmiRecEnterFlags.TRAP_WFI)
    for flag in (RmiRecEnterFlags.EMULATED_MMIO, RmiRecEnterFlags.INJECT_SEA):
        out, _ = acs.enter(code.rec, flag)
        assert_status(out, RmiStatus.ERROR_REC)
