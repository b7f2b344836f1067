"""RMI_REC_CREATE / RMI_REC_DESTROY / RMI_REC_AUX_COUNT / RMI_PSCI_COMPLETE / RMI_REC_ENTER
preconditions (digest §2.2)."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import (
    GranuleState,
    RealmState,
    RmiFid,
    RmiRecExitReason,
    RmiStatus,
)
from unirealm.arch.rsi import RsiFid, RsiStatus

from .conftest import (
    PSCI_AFFINITY_INFO_64,
    PSCI_CPU_ON_64,
    PSCI_SYSTEM_OFF,
    REC_AUX_COUNT,
    RSI_IPA_STATE_SET,
    Env,
    RealmHandle,
    assert_status,
    mpidr_for,
)

MASK64 = (1 << 64) - 1
PSCI_SUCCESS = 0
PSCI_DENIED = -3 & MASK64
PSCI_ALREADY_ON = -4 & MASK64
PSCI_INVALID_PARAMETERS = -2 & MASK64


# --- REC_AUX_COUNT ----------------------------------------------------------------------
def test_rec_aux_count(env: Env) -> None:
    realm = env.create_realm()
    out = env.ok(RmiFid.REC_AUX_COUNT, realm.rd)
    assert out[1] == REC_AUX_COUNT == 16


def test_rec_aux_count_bad_rd(env: Env) -> None:
    realm = env.create_realm()
    for rd in (env.ns_granule(), env.delegated(), realm.rd + 8, realm.roots[0], 0):
        assert_status(env.smc(RmiFid.REC_AUX_COUNT, rd), RmiStatus.ERROR_INPUT)


# --- REC_CREATE success -----------------------------------------------------------------
@pytest.mark.parametrize("runnable", [True, False])
def test_rec_create(env: Env, runnable: bool) -> None:
    realm = env.create_realm()
    rec, params, values = env.prepare_rec(realm, runnable, pc=0x8_0000, gprs=[1, 2, 3, 4, 5, 6, 7, 8])
    out = env.smc(RmiFid.REC_CREATE, realm.rd, rec, params)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.state(rec) == GranuleState.REC
    for a in values["aux"]:
        assert env.state(a) == GranuleState.REC_AUX
    assert env.state(params) == GranuleState.UNDELEGATED
    obj = env.rmm.recs[rec]
    assert (obj.rd, obj.index, obj.runnable, obj.mpidr) == (realm.rd, 0, runnable, 0)
    engine = env.engines[-1]
    assert engine.resets == [(0x8_0000, [1, 2, 3, 4, 5, 6, 7, 8])]
    assert engine.pc == 0x8_0000


def test_rec_create_indices_follow_mpidr(env: Env) -> None:
    """REC index = Aff0[3:0] | Aff1 << 4 | ...: the 17th REC has MPIDR Aff1 = 1, Aff0 = 0."""
    realm = env.create_realm()
    for i in range(17):
        handle = env.create_rec(realm, runnable=i == 0)
        assert env.rmm.recs[handle.rec].index == i
    assert realm.recs[16].mpidr == 0x100
    assert mpidr_for(16) == 0x100
    assert mpidr_for(15) == 0xF


def test_rec_create_in_two_realms_counts_separately(env: Env) -> None:
    a = env.create_realm()
    b = env.create_realm()
    env.create_rec(a)
    env.create_rec(b)  # index 0 again: each realm counts its own RECs
    env.create_rec(a)


# --- REC_CREATE errors ------------------------------------------------------------------
def expect_rec_create_fails(
    env: Env, realm: RealmHandle, rec: int, params: int, expected: RmiStatus, aux: list[int]
) -> None:
    states = [env.state(g) for g in (rec, *aux)]
    count = env.realm(realm).rec_count
    assert_status(env.smc(RmiFid.REC_CREATE, realm.rd, rec, params), expected)
    assert [env.state(g) for g in (rec, *aux)] == states
    assert env.realm(realm).rec_count == count
    assert rec not in env.rmm.recs


@pytest.mark.parametrize("mpidr", [1, 2, 0xF, 0x10, 0x100, 1 << 16, 1 << 24, 1 << 32, MASK64])
def test_rec_create_wrong_mpidr_for_first_rec(env: Env, mpidr: int) -> None:
    realm = env.create_realm()
    rec, params, values = env.prepare_rec(realm, mpidr=mpidr)
    expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, values["aux"])
    env.create_rec(realm)  # index 0 still expected


def test_rec_create_wrong_mpidr_for_second_rec(env: Env) -> None:
    realm = env.create_realm()
    env.create_rec(realm)
    for mpidr in (0, 2, 0x101):
        rec, params, values = env.prepare_rec(realm, mpidr=mpidr)
        expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, values["aux"])
    env.create_rec(realm)


@pytest.mark.parametrize("num", [0, 1, REC_AUX_COUNT - 1, REC_AUX_COUNT + 1, 1 << 32])
def test_rec_create_wrong_num_rec_aux(env: Env, num: int) -> None:
    realm = env.create_realm()
    rec, params, values = env.prepare_rec(realm, num_rec_aux=num)
    expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, values["aux"])


@pytest.mark.parametrize("slot", [0, 7, REC_AUX_COUNT - 1])
def test_rec_create_aux_not_delegated(env: Env, slot: int) -> None:
    realm = env.create_realm()
    aux = [env.delegated() for _ in range(REC_AUX_COUNT)]
    aux[slot] = env.ns_granule()
    rec, params, _ = env.prepare_rec(realm, aux=aux)
    expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, aux)


def test_rec_create_aux_unaligned_or_in_use(env: Env) -> None:
    realm = env.create_realm()
    base = [env.delegated() for _ in range(REC_AUX_COUNT)]
    for bad in (base[3] + 8, realm.rd, realm.roots[0], base[0]):  # base[0] twice: a duplicate
        aux = list(base)
        aux[3] = bad
        rec, params, _ = env.prepare_rec(realm, aux=aux)
        expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, base)


def test_rec_create_aux_equal_to_rec(env: Env) -> None:
    realm = env.create_realm()
    aux = [env.delegated() for _ in range(REC_AUX_COUNT)]
    rec, params, _ = env.prepare_rec(realm, aux=aux)
    params = env.rec_params_page(env.rec_values(0, aux=[rec, *aux[1:]]))
    expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, aux)


def test_rec_create_realm_not_new(env: Env) -> None:
    realm = env.create_realm()
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec, params, values = env.prepare_rec(realm)
    expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_REALM, values["aux"])


def test_rec_create_rec_not_delegated(env: Env) -> None:
    realm = env.create_realm()
    _, params, values = env.prepare_rec(realm)
    for rec in (env.ns_granule(), env.delegated() + 0x10, realm.rd, realm.roots[0], env.m.memory.top):
        expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, values["aux"])


def test_rec_create_bad_rd(env: Env) -> None:
    realm = env.create_realm()
    rec, params, _values = env.prepare_rec(realm)
    for rd in (env.delegated(), env.ns_granule(), realm.rd + 8):
        assert_status(env.smc(RmiFid.REC_CREATE, rd, rec, params), RmiStatus.ERROR_INPUT)
    assert env.state(rec) == GranuleState.DELEGATED


def test_rec_create_params_not_ns(env: Env) -> None:
    realm = env.create_realm()
    rec, params, values = env.prepare_rec(realm)
    env.ok(RmiFid.GRANULE_DELEGATE, params)
    expect_rec_create_fails(env, realm, rec, params, RmiStatus.ERROR_INPUT, values["aux"])
    expect_rec_create_fails(env, realm, rec, env.ns_granule() + 8, RmiStatus.ERROR_INPUT, values["aux"])


# --- REC_DESTROY ------------------------------------------------------------------------
def test_rec_destroy(env: Env) -> None:
    realm = env.create_realm()
    rec = env.create_rec(realm)
    out = env.smc(RmiFid.REC_DESTROY, rec.rec)
    assert_status(out, RmiStatus.SUCCESS)
    for g in (rec.rec, *rec.aux):
        assert env.state(g) == GranuleState.DELEGATED
        assert env.realm_mem.read(g, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    assert rec.engine.closed
    assert rec.rec not in env.rmm.recs
    assert env.realm(realm).recs == {}
    assert_status(env.smc(RmiFid.REC_DESTROY, rec.rec), RmiStatus.ERROR_INPUT)
    for g in (rec.rec, *rec.aux):
        env.ok(RmiFid.GRANULE_UNDELEGATE, g)


def test_rec_destroy_in_active_realm(env: Env) -> None:
    realm, rec = env.active_realm_with_rec()
    rec.engine.idle_wfi = True
    out, _ = env.enter(rec)
    assert_status(out, RmiStatus.SUCCESS)
    env.ok(RmiFid.REC_DESTROY, rec.rec)
    env.ok(RmiFid.REALM_DESTROY, realm.rd)


def test_rec_destroy_bad_handle(env: Env) -> None:
    realm = env.create_realm()
    rec = env.create_rec(realm)
    for bad in (rec.aux[0], rec.rec + 8, realm.rd, realm.roots[0], env.delegated(), env.ns_granule(), 0):
        assert_status(env.smc(RmiFid.REC_DESTROY, bad), RmiStatus.ERROR_INPUT)
    assert env.state(rec.rec) == GranuleState.REC
    assert all(env.state(a) == GranuleState.REC_AUX for a in rec.aux)


# --- REC_ENTER preconditions --------------------------------------------------------------
def test_rec_enter_realm_new_is_error_realm_0(env: Env) -> None:
    realm = env.create_realm()
    rec = env.create_rec(realm)
    out, _ = env.enter(rec)
    assert_status(out, RmiStatus.ERROR_REALM, 0)
    assert rec.engine.log == []  # nothing ran


def test_rec_enter_realm_system_off_is_error_realm_1(env: Env) -> None:
    realm, rec = env.active_realm_with_rec()
    rec.engine.push([PSCI_SYSTEM_OFF])
    out, run = env.enter(rec)
    assert_status(out, RmiStatus.SUCCESS)
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    assert run["exit_gprs"][0] == PSCI_SYSTEM_OFF
    assert env.realm(realm).state == RealmState.SYSTEM_OFF
    out, _ = env.enter(rec)
    assert_status(out, RmiStatus.ERROR_REALM, 1)
    assert len(rec.engine.log) == 1


def test_rec_enter_not_runnable(env: Env) -> None:
    _, rec = env.active_realm_with_rec(runnable=False)
    out, _ = env.enter(rec)
    assert_status(out, RmiStatus.ERROR_REC)
    assert rec.engine.log == []


def test_rec_enter_run_page_must_be_ns(env: Env) -> None:
    _, rec = env.active_realm_with_rec()
    for run in (env.delegated(), rec.run + 8, rec.aux[0], rec.rec, env.m.memory.top, 0):
        assert_status(env.smc(RmiFid.REC_ENTER, rec.rec, run), RmiStatus.ERROR_INPUT)
    assert rec.engine.log == []


def test_rec_enter_bad_rec(env: Env) -> None:
    realm, rec = env.active_realm_with_rec()
    for bad in (rec.aux[0], realm.rd, env.delegated(), rec.rec + 8):
        assert_status(env.smc(RmiFid.REC_ENTER, bad, rec.run), RmiStatus.ERROR_INPUT)


def test_rec_enter_invalid_gic_state(env: Env) -> None:
    from unirealm.arch.rmi import RMI_REC_RUN

    _, rec = env.active_realm_with_rec()
    # TSEI is not the host's to set; HW = 1 in a pending list register (an invalid one is not checked).
    for values in ({"enter_gicv3_hcr": 1 << 13}, {"enter_gicv3_lrs": [1 << 62 | 1 << 61 | 32] + [0] * 15}):
        page = RMI_REC_RUN.pack(**values)
        env.ns.write(rec.run, page[:0x800])
        assert_status(env.smc(RmiFid.REC_ENTER, rec.rec, rec.run), RmiStatus.ERROR_REC)
    assert rec.engine.log == []


def test_rec_enter_runs_rsi_and_reports_exits(env: Env) -> None:
    realm, rec = env.active_realm_with_rec()
    rec.engine.push(
        [RsiFid.VERSION, 0x10000],
        [RSI_IPA_STATE_SET, 0x10000, 0x30000, 1, 0],
    )
    out, run = env.enter(rec)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1:5] == [0, 0, 0, 0]  # no results: a zeroed result set
    version, ipa_set = rec.engine.log
    assert version.out is not None and version.out[:3] == [RsiStatus.SUCCESS, 0x10000, 0x10000]
    assert run["exit_reason"] == RmiRecExitReason.RIPAS_CHANGE
    assert (run["exit_ripas_base"], run["exit_ripas_top"], run["exit_ripas_value"]) == (0x10000, 0x30000, 1)
    assert ipa_set.out is None  # completes at the next entry
    rec.engine.idle_wfi = True
    out, run = env.enter(rec)
    assert_status(out, RmiStatus.SUCCESS)
    assert run["exit_reason"] == RmiRecExitReason.IRQ  # untrapped WFI
    # Nothing of the range was done, so X1 = base; the host did not reject: ACCEPT.
    assert ipa_set.out is not None and ipa_set.out[:3] == [RsiStatus.SUCCESS, 0x10000, 0]
    assert env.realm(realm).state == RealmState.ACTIVE


# --- PSCI_COMPLETE ------------------------------------------------------------------------
def two_rec_realm(env: Env, second_runnable: bool = False) -> tuple[RealmHandle, int, int]:
    realm = env.create_realm()
    r0 = env.create_rec(realm, runnable=True)
    r1 = env.create_rec(realm, runnable=second_runnable)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    return realm, r0.rec, r1.rec


def test_psci_complete_cpu_on(env: Env) -> None:
    realm, _, _ = two_rec_realm(env)
    r0, r1 = realm.recs
    r0.engine.push([PSCI_CPU_ON_64, mpidr_for(1), 0x4000, 0x55])
    out, run = env.enter(r0)
    assert_status(out, RmiStatus.SUCCESS)
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    assert run["exit_gprs"][:4] == [PSCI_CPU_ON_64, mpidr_for(1), 0x4000, 0x55]
    # The caller cannot run until the host completes the request.
    assert_status(env.enter(r0)[0], RmiStatus.ERROR_REC)
    assert_status(env.enter(r1)[0], RmiStatus.ERROR_REC)  # the target is not runnable yet
    out = env.smc(RmiFid.PSCI_COMPLETE, r0.rec, r1.rec, PSCI_SUCCESS)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.rmm.recs[r1.rec].runnable
    assert r1.engine.resets[-1] == (0x4000, [0x55])
    # A second completion has nothing to complete.
    assert_status(env.smc(RmiFid.PSCI_COMPLETE, r0.rec, r1.rec, PSCI_SUCCESS), RmiStatus.ERROR_INPUT)
    r0.engine.idle_wfi = True
    r1.engine.idle_wfi = True
    assert_status(env.enter(r0)[0], RmiStatus.SUCCESS)
    assert r0.engine.log[0].out is not None and r0.engine.log[0].out[0] == PSCI_SUCCESS
    assert_status(env.enter(r1)[0], RmiStatus.SUCCESS)


def test_psci_complete_cpu_on_denied(env: Env) -> None:
    realm, _, _ = two_rec_realm(env)
    r0, r1 = realm.recs
    r0.engine.push([PSCI_CPU_ON_64, mpidr_for(1), 0x4000, 0])
    env.enter(r0)
    env.ok(RmiFid.PSCI_COMPLETE, r0.rec, r1.rec, PSCI_DENIED)
    assert not env.rmm.recs[r1.rec].runnable
    r0.engine.idle_wfi = True
    env.enter(r0)
    assert r0.engine.log[0].out is not None and r0.engine.log[0].out[0] == PSCI_DENIED


def test_psci_complete_cpu_on_already_on(env: Env) -> None:
    realm, _, _ = two_rec_realm(env, second_runnable=True)
    r0, r1 = realm.recs
    r0.engine.push([PSCI_CPU_ON_64, mpidr_for(1), 0x4000, 0])
    env.enter(r0)
    env.ok(RmiFid.PSCI_COMPLETE, r0.rec, r1.rec, PSCI_SUCCESS)
    r0.engine.idle_wfi = True
    env.enter(r0)
    assert r0.engine.log[0].out is not None and r0.engine.log[0].out[0] == PSCI_ALREADY_ON


@pytest.mark.parametrize(("runnable", "expected"), [(False, 1), (True, 0)])
def test_psci_complete_affinity_info(env: Env, runnable: bool, expected: int) -> None:
    realm, _, _ = two_rec_realm(env, second_runnable=runnable)
    r0, r1 = realm.recs
    r0.engine.push([PSCI_AFFINITY_INFO_64, mpidr_for(1), 0])
    _out, run = env.enter(r0)
    assert run["exit_reason"] == RmiRecExitReason.PSCI
    env.ok(RmiFid.PSCI_COMPLETE, r0.rec, r1.rec, PSCI_SUCCESS)
    r0.engine.idle_wfi = True
    env.enter(r0)
    assert r0.engine.log[0].out is not None and r0.engine.log[0].out[0] == expected  # ON 0 / OFF 1


def test_psci_complete_errors(env: Env) -> None:
    realm, _, _ = two_rec_realm(env)
    r0, r1 = realm.recs
    other = env.create_realm()
    stranger = env.create_rec(other)
    # Nothing pending yet.
    assert_status(env.smc(RmiFid.PSCI_COMPLETE, r0.rec, r1.rec, PSCI_SUCCESS), RmiStatus.ERROR_INPUT)
    r0.engine.push([PSCI_CPU_ON_64, mpidr_for(1), 0x4000, 0])
    env.enter(r0)
    cases = [
        (r0.rec, r0.rec, PSCI_SUCCESS),  # target is not the one the realm asked for
        (r0.rec, stranger.rec, PSCI_SUCCESS),  # another realm's REC
        (r1.rec, r0.rec, PSCI_SUCCESS),  # r1 made no request
        (r0.rec, r1.rec, PSCI_INVALID_PARAMETERS),  # only SUCCESS or DENIED
        (r0.rec, r1.rec, 1),
        (r0.aux[0], r1.rec, PSCI_SUCCESS),
        (r0.rec, r1.aux[0], PSCI_SUCCESS),
        (realm.rd, r1.rec, PSCI_SUCCESS),
        (r0.rec + 8, r1.rec, PSCI_SUCCESS),
    ]
    for calling, target, status in cases:
        assert_status(env.smc(RmiFid.PSCI_COMPLETE, calling, target, status), RmiStatus.ERROR_INPUT)
    assert not env.rmm.recs[r1.rec].runnable
    assert env.rmm.recs[r0.rec].psci_request is not None
    env.ok(RmiFid.PSCI_COMPLETE, r0.rec, r1.rec, PSCI_SUCCESS)


def test_psci_cpu_on_for_unknown_target_stays_in_realm(env: Env) -> None:
    """A target MPIDR no REC has is answered by the RMM; nothing for the host to complete."""
    realm, _, _ = two_rec_realm(env)
    r0 = realm.recs[0]
    r0.engine.push([PSCI_CPU_ON_64, mpidr_for(5), 0x4000, 0])
    r0.engine.idle_wfi = True
    _out, run = env.enter(r0)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    assert r0.engine.log[0].out is not None and r0.engine.log[0].out[0] == PSCI_INVALID_PARAMETERS
    assert_status(
        env.smc(RmiFid.PSCI_COMPLETE, r0.rec, realm.recs[1].rec, PSCI_SUCCESS), RmiStatus.ERROR_INPUT
    )
