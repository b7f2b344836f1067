"""ACS 1.0 memory-management suite: RIPAS changes, what a realm access does for each
HIPAS/RIPAS, IPA-space boundaries, start levels and folding. Realms are the ACS's default
(s2sz 32, level 1, one root) unless a test says otherwise."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import GranuleState, RmiFid, RmiRecEnterFlags, RmiRecExitReason, RttEntryState
from unirealm.arch.rsi import RsiFid
from unirealm.machine.memory import GranuleProtectionFault

from .acs import DATA_IPA, PSCI_SYSTEM_OFF, SMC0, AcsEnv, br, ldr_x, mov64, with_vectors

L2, L3 = 1 << 21, 1 << 12
UNPROTECTED = 1 << 31
EC_DABT, EC_IABT = 0x24, 0x20
EC_DABT_SAME_EL, EC_IABT_SAME_EL = 0x25, 0x21
DFSC_SEA = 0x10
TARGET = 0x40_0000  # a protected page no test maps at first


def realm_sees_sea(run: dict, ec: int) -> bool:  # type: ignore[type-arg]
    """The realm's handler ended the run: ESR_EL1 names a synchronous external abort."""
    esr = run["exit_gprs"][1]
    return run["exit_reason"] == RmiRecExitReason.PSCI and esr >> 26 == ec and esr & 0x3F == DFSC_SEA


def access(acs: AcsEnv, ipa: int, fetch: bool, prepare=None):  # type: ignore[no-untyped-def]
    """Run realm code that loads from (or branches to) `ipa`; `prepare(realm)` runs first."""
    body = [*mov64(1, ipa), br(1) if fetch else ldr_x(0, 1)]
    code = acs.code_realm(with_vectors(body), activate=False)
    if prepare is not None:
        prepare(code.realm)
    acs.ok(RmiFid.REALM_ACTIVATE, code.realm.rd)
    _, run = acs.enter(code.rec)
    return code, run


def scripted(acs: AcsEnv):  # type: ignore[no-untyped-def]
    realm = acs.default_realm()
    acs.ensure_rtts(realm, 0, 3)
    rec = acs.create_rec(realm)
    acs.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    return realm, rec


def ripas_change(acs: AcsEnv, ripas: int, reject: bool, partial: bool) -> tuple[list[int] | None, object]:
    realm, rec = scripted(acs)
    rec.engine.push([RsiFid.IPA_STATE_SET, 0, 4 * L3, ripas, 0])
    _, run = acs.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.RIPAS_CHANGE
    if not reject:
        acs.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, 0, 2 * L3 if partial else 4 * L3)
    acs.enter(rec, RmiRecEnterFlags.RIPAS_RESPONSE if reject else 0)
    return rec.engine.log[0].out, (realm, acs.read_entry(realm, 0, 3)[3], acs.read_entry(realm, 3 * L3, 3)[3])


def test_mm_ripas_change(acs: AcsEnv) -> None:
    out, (_, first, last) = ripas_change(acs, 1, reject=False, partial=False)
    assert out is not None and out[:3] == [0, 4 * L3, 0]  # SUCCESS, all of it, ACCEPT
    assert (first, last) == (1, 1)


def test_mm_ripas_change_reject(acs: AcsEnv) -> None:
    out, (_, first, last) = ripas_change(acs, 1, reject=True, partial=False)
    assert out is not None and out[:3] == [0, 0, 1]  # nothing changed, REJECT
    assert (first, last) == (0, 0)


def test_mm_ripas_change_partial(acs: AcsEnv) -> None:
    out, (_, first, last) = ripas_change(acs, 1, reject=False, partial=True)
    assert out is not None and out[:3] == [0, 2 * L3, 0]  # the realm learns how far it got
    assert (first, last) == (1, 0)


@pytest.mark.parametrize("fetch", [False, True], ids=["da", "ia"])
def test_mm_hipas_assigned_ripas_empty_da_ia(acs: AcsEnv, fetch: bool) -> None:
    def prepare(realm):  # type: ignore[no-untyped-def]
        acs.ensure_rtts(realm, TARGET, 3)
        acs.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, acs.delegated(), TARGET)  # ASSIGNED, RIPAS EMPTY

    _, run = access(acs, TARGET, fetch, prepare)
    assert realm_sees_sea(run, EC_IABT_SAME_EL if fetch else EC_DABT_SAME_EL)


@pytest.mark.parametrize("fetch", [False, True], ids=["da", "ia"])
def test_mm_hipas_unassigned_ripas_empty_da_ia(acs: AcsEnv, fetch: bool) -> None:
    _, run = access(acs, TARGET, fetch)
    assert realm_sees_sea(run, EC_IABT_SAME_EL if fetch else EC_DABT_SAME_EL)


@pytest.mark.parametrize("fetch", [False, True], ids=["da", "ia"])
def test_mm_hipas_unassigned_ripas_ram_da_ia(acs: AcsEnv, fetch: bool) -> None:
    def prepare(realm):  # type: ignore[no-untyped-def]
        acs.ensure_rtts(realm, TARGET, 3)
        acs.init_ripas(realm, TARGET, TARGET + L3)

    _, run = access(acs, TARGET, fetch, prepare)
    assert run["exit_reason"] == RmiRecExitReason.SYNC
    assert run["exit_esr"] == ((EC_IABT if fetch else EC_DABT) << 26) | 0x07
    assert run["exit_hpfar"] == (TARGET >> 12) << 4


def _destroyed(acs: AcsEnv, fetch: bool) -> dict:  # type: ignore[type-arg]
    def prepare(realm):  # type: ignore[no-untyped-def]
        acs.ok(RmiFid.DATA_DESTROY, realm.rd, DATA_IPA)

    _, run = access(acs, DATA_IPA, fetch, prepare)
    return run  # type: ignore[no-any-return]


def test_mm_ripas_destroyed_da(acs: AcsEnv) -> None:
    run = _destroyed(acs, fetch=False)
    assert (run["exit_reason"], run["exit_esr"]) == (RmiRecExitReason.SYNC, (EC_DABT << 26) | 0x07)


def test_mm_ripas_destroyed_ia(acs: AcsEnv) -> None:
    run = _destroyed(acs, fetch=True)
    assert (run["exit_reason"], run["exit_esr"]) == (RmiRecExitReason.SYNC, (EC_IABT << 26) | 0x07)


@pytest.mark.parametrize("fetch", [False, True], ids=["da", "ia"])
def test_mm_hipas_unassigned_ns_da_ia(acs: AcsEnv, fetch: bool) -> None:
    code, run = access(acs, UNPROTECTED + L3, fetch)
    if fetch:  # never executable: the realm takes the abort
        assert realm_sees_sea(run, EC_IABT_SAME_EL)
    else:  # an emulatable abort for the host
        assert run["exit_reason"] == RmiRecExitReason.SYNC and run["exit_esr"] >> 24 & 1
        _, run = acs.enter(code.rec, RmiRecEnterFlags.INJECT_SEA)
        assert realm_sees_sea(run, EC_DABT_SAME_EL)


def test_mm_gpf_exception(acs: AcsEnv) -> None:
    """The host touching a delegated granule takes a granule protection fault."""
    pa = acs.delegated()
    with pytest.raises(GranuleProtectionFault):
        acs.ns.read(pa, 8)
    with pytest.raises(GranuleProtectionFault):
        acs.ns.write(pa, b"x")
    realm = acs.host_realm()
    with pytest.raises(GranuleProtectionFault):
        acs.ns.read(realm.rd, 8)


def test_mm_protected_ipa_boundary(acs: AcsEnv) -> None:
    """The last page of the PAR is protected: RIPAS RAM there exits to the host."""
    top = UNPROTECTED - L3

    def prepare(realm):  # type: ignore[no-untyped-def]
        acs.ensure_rtts(realm, top, 3)
        acs.init_ripas(realm, top, top + L3)

    _, run = access(acs, top, False, prepare)
    assert (run["exit_reason"], run["exit_esr"]) == (RmiRecExitReason.SYNC, (EC_DABT << 26) | 0x07)
    assert run["exit_hpfar"] == (top >> 12) << 4


def test_mm_unprotected_ipa_boundary(acs: AcsEnv) -> None:
    """The first and last pages above the PAR are unprotected: emulatable aborts."""
    for ipa in (UNPROTECTED, (1 << 32) - L3):
        code, run = access(acs, ipa, False)
        assert run["exit_reason"] == RmiRecExitReason.SYNC
        assert run["exit_esr"] >> 24 & 1 and run["exit_hpfar"] == (ipa >> 12) << 4
        assert code


def test_mm_realm_access_outside_ipa(acs: AcsEnv) -> None:
    _, run = access(acs, 1 << 32, False)
    assert realm_sees_sea(run, EC_DABT_SAME_EL)


def test_mm_rtt_translation_table(acs: AcsEnv) -> None:
    """Tables at every level below the start, and what READ_ENTRY reports of each."""
    realm = acs.default_realm()
    rtts = acs.ensure_rtts(realm, TARGET, 3)
    assert len(rtts) == 2
    assert acs.read_entry(realm, 0, 1)[1:3] == (RttEntryState.TABLE, rtts[0])
    assert acs.read_entry(realm, TARGET & ~(L2 - 1), 2)[1:3] == (RttEntryState.TABLE, rtts[1])
    data = acs.data_create(realm, TARGET)
    assert acs.read_entry(realm, TARGET, 3) == (3, RttEntryState.ASSIGNED, data, 1)


@pytest.mark.parametrize(("s2sz", "level", "roots"), [(32, 1, 1), (32, 2, 4), (40, 0, 1), (40, 1, 2), (39, 1, 1)])
def test_mm_rtt_level_start(acs: AcsEnv, s2sz: int, level: int, roots: int) -> None:
    """A realm runs at every start level the RMM accepts, the ACS's among them."""
    params = {"s2sz": s2sz, "rtt_level_start": level, "rtt_num_start": roots}
    code = acs.code_realm([*mov64(1, DATA_IPA), ldr_x(2, 1), *mov64(0, PSCI_SYSTEM_OFF), SMC0], realm_params=params)
    _, run = acs.enter(code.rec)
    assert run["exit_reason"] == RmiRecExitReason.PSCI


@pytest.mark.skip(reason="no cache or memory-attribute model: Unicorn has no caches, so stage-2 forced "
                  "write-back (FEAT_S2FWB) cannot be observed")
def test_mm_feat_s2fwb_check_1() -> None:
    raise AssertionError("not modelled")


@pytest.mark.skip(reason="no cache or memory-attribute model (FEAT_S2FWB)")
def test_mm_feat_s2fwb_check_2() -> None:
    raise AssertionError("not modelled")


@pytest.mark.skip(reason="no cache or memory-attribute model (FEAT_S2FWB)")
def test_mm_feat_s2fwb_check_3() -> None:
    raise AssertionError("not modelled")


@pytest.mark.skip(reason="no hardware access-flag/dirty-state management (FEAT_HAFDBS) in the vCPU model")
def test_mm_ha_hd_access() -> None:
    raise AssertionError("not modelled")


def _fold_block(acs: AcsEnv, fill) -> int:  # type: ignore[no-untyped-def]
    realm = acs.host_realm()
    rtt = acs.ensure_rtts(realm, L2, 3)[-1]
    fill(realm)
    out = acs.ok(RmiFid.RTT_FOLD, realm.rd, L2, 3)
    assert out[1] == rtt and acs.state(rtt) == GranuleState.DELEGATED
    return acs.read_entry(realm, L2, 3)  # type: ignore[return-value]


def test_mm_rtt_fold_assigned(acs: AcsEnv) -> None:
    base = acs.ns_granules_aligned(512, L2)

    def fill(realm):  # type: ignore[no-untyped-def]
        for i in range(512):
            acs.ok(RmiFid.GRANULE_DELEGATE, base + i * GRANULE_SIZE)
            acs.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, base + i * GRANULE_SIZE, L2 + i * GRANULE_SIZE)

    assert _fold_block(acs, fill) == (2, RttEntryState.ASSIGNED, base, 0)


def test_mm_rtt_fold_unassigned(acs: AcsEnv) -> None:
    assert _fold_block(acs, lambda realm: acs.init_ripas(realm, L2, 2 * L2)) == (2, RttEntryState.UNASSIGNED, 0, 1)


def test_mm_rtt_fold_unassigned_ns(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    ipa = (1 << 39) + L2
    acs.ensure_rtts(realm, ipa, 3)
    acs.ok(RmiFid.RTT_FOLD, realm.rd, ipa, 3)
    assert acs.read_entry(realm, ipa, 3)[:2] == (2, RttEntryState.UNASSIGNED)


def test_mm_rtt_fold_assigned_ns(acs: AcsEnv) -> None:
    realm = acs.host_realm()
    ipa = (1 << 39) + L2
    acs.ensure_rtts(realm, ipa, 3)
    base = acs.ns_granules_aligned(512, L2)
    for i in range(512):
        acs.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa + i * L3, 3, (base + i * L3) | (0b11 << 6))
    acs.ok(RmiFid.RTT_FOLD, realm.rd, ipa, 3)
    assert acs.read_entry(realm, ipa, 3)[:3] == (2, RttEntryState.ASSIGNED, base | (0b11 << 6))
