"""RMI_DATA_CREATE / RMI_DATA_CREATE_UNKNOWN / RMI_DATA_DESTROY (digest §2.2, §2.3)."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import GranuleState, RealmState, RmiFid, RmiRipas, RmiStatus, RttEntryState

from .conftest import L1, L2, L3, PSCI_SYSTEM_OFF, Env, RealmHandle, assert_status

ASSIGNED, UNASSIGNED = RttEntryState.ASSIGNED, RttEntryState.UNASSIGNED
IPA = 4 * L2  # a protected IPA inside the PAR of a 40-bit realm


def realm_with_l3(env: Env, ipa: int = IPA, **kw: object) -> RealmHandle:
    realm = env.create_realm(**kw)  # type: ignore[arg-type]
    env.ensure_rtts(realm, ipa, 3)
    return realm


def pattern(tag: bytes) -> bytes:
    return (tag * (GRANULE_SIZE // len(tag) + 1))[:GRANULE_SIZE]


# --- DATA_CREATE ------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [0, 1])
def test_data_create(env: Env, flags: int) -> None:
    realm = realm_with_l3(env)
    data = env.delegated()
    content = pattern(b"payload!")
    src = env.ns_page(content)
    out = env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, flags)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.state(data) == GranuleState.DATA
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, data, RmiRipas.RAM)
    assert env.realm_mem.read(data, GRANULE_SIZE) == content  # copied, measured or not
    assert env.state(src) == GranuleState.UNDELEGATED
    assert env.ns.read(src, GRANULE_SIZE) == content
    # The neighbours are untouched.
    assert env.read_entry(realm, IPA + L3, 3) == (3, UNASSIGNED, 0, RmiRipas.EMPTY)


def test_data_create_over_ram_ripas(env: Env) -> None:
    realm = realm_with_l3(env)
    env.init_ripas(realm, IPA, IPA + L3)
    data = env.data_create(realm, IPA, b"x")
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, data, RmiRipas.RAM)


def test_data_create_over_destroyed_ripas(env: Env) -> None:
    """An UNASSIGNED entry of any RIPAS accepts DATA_CREATE; the result is ASSIGNED / RAM."""
    realm = realm_with_l3(env)
    env.data_create(realm, IPA, b"x")
    env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, RmiRipas.DESTROYED)
    data = env.data_create(realm, IPA, b"again")
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, data, RmiRipas.RAM)


@pytest.mark.parametrize("flags", [2, 3, 0x100, 1 << 63])
def test_data_create_bad_flags(env: Env, flags: int) -> None:
    realm = realm_with_l3(env)
    data, src = env.delegated(), env.ns_page(b"x")
    assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, flags), RmiStatus.ERROR_INPUT)
    assert env.state(data) == GranuleState.DELEGATED
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, RmiRipas.EMPTY)


def test_data_create_src_not_ns(env: Env) -> None:
    realm = realm_with_l3(env)
    data = env.delegated()
    other_data = env.data_create(realm, IPA + L3, b"other")
    for src in (env.delegated(), data, other_data, realm.rd, env.ns_granule() + 8, env.m.memory.top, 0):
        assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, 1), RmiStatus.ERROR_INPUT)
        assert env.state(data) == GranuleState.DELEGATED
        assert env.realm_mem.read(data, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    assert env.read_entry(realm, IPA, 3)[1] == UNASSIGNED


def test_data_create_data_not_delegated(env: Env) -> None:
    realm = realm_with_l3(env)
    rec = env.create_rec(realm, runnable=False)
    used = env.data_create(realm, IPA + L3, b"used")
    src = env.ns_page(b"x")
    for data in (env.ns_granule(), used, realm.rd, realm.roots[0], rec.rec, rec.aux[0], env.delegated() + 8):
        before = env.state(data)
        assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, 1), RmiStatus.ERROR_INPUT)
        assert_status(env.smc(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA), RmiStatus.ERROR_INPUT)
        assert env.state(data) == before
    assert env.read_entry(realm, IPA, 3)[1] == UNASSIGNED


def test_data_create_bad_rd(env: Env) -> None:
    realm = realm_with_l3(env)
    data, src = env.delegated(), env.ns_page(b"x")
    for rd in (env.delegated(), env.ns_granule(), realm.roots[0], realm.rd + 8):
        assert_status(env.smc(RmiFid.DATA_CREATE, rd, data, IPA, src, 1), RmiStatus.ERROR_INPUT)
        assert_status(env.smc(RmiFid.DATA_CREATE_UNKNOWN, rd, data, IPA), RmiStatus.ERROR_INPUT)
    assert env.state(data) == GranuleState.DELEGATED


@pytest.mark.parametrize("fid", [RmiFid.DATA_CREATE, RmiFid.DATA_CREATE_UNKNOWN])
def test_data_create_bad_ipa(env: Env, fid: RmiFid) -> None:
    realm = realm_with_l3(env)
    data, src = env.delegated(), env.ns_page(b"x")
    par = realm.par_size
    for ipa in (IPA + 8, IPA + 0x800, par, par + IPA, 1 << 40, 1 << 63, (1 << 64) - GRANULE_SIZE):
        args = (realm.rd, data, ipa, src, 1) if fid == RmiFid.DATA_CREATE else (realm.rd, data, ipa)
        assert_status(env.smc(fid, *args), RmiStatus.ERROR_INPUT)
    assert env.state(data) == GranuleState.DELEGATED


def test_data_create_realm_active_is_error_realm(env: Env) -> None:
    realm = realm_with_l3(env)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    data, src = env.delegated(), env.ns_page(b"x")
    assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, 1), RmiStatus.ERROR_REALM)
    assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, 0), RmiStatus.ERROR_REALM)
    assert env.state(data) == GranuleState.DELEGATED
    assert env.read_entry(realm, IPA, 3)[1] == UNASSIGNED


@pytest.mark.parametrize("fid", [RmiFid.DATA_CREATE, RmiFid.DATA_CREATE_UNKNOWN])
def test_data_create_missing_level3_table(env: Env, fid: RmiFid) -> None:
    realm = env.create_realm(40)  # root at level 1
    data, src = env.delegated(), env.ns_page(b"x")
    args = (realm.rd, data, IPA, src, 1) if fid == RmiFid.DATA_CREATE else (realm.rd, data, IPA)
    assert_status(env.smc(fid, *args), RmiStatus.ERROR_RTT, 1)
    env.create_rtt(realm, IPA, 2)
    assert_status(env.smc(fid, *args), RmiStatus.ERROR_RTT, 2)
    env.create_rtt(realm, IPA, 3)
    env.ok(fid, *args)
    assert env.state(data) == GranuleState.DATA


def test_data_create_missing_table_48bit_realm(env: Env) -> None:
    realm = env.create_realm(48)  # root at level 0
    data, src = env.delegated(), env.ns_page(b"x")
    assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, 1), RmiStatus.ERROR_RTT, 0)
    env.create_rtt(realm, IPA, 1)
    assert_status(env.smc(RmiFid.DATA_CREATE, realm.rd, data, IPA, src, 1), RmiStatus.ERROR_RTT, 1)


@pytest.mark.parametrize("fid", [RmiFid.DATA_CREATE, RmiFid.DATA_CREATE_UNKNOWN])
def test_data_create_target_assigned_is_error_rtt_3(env: Env, fid: RmiFid) -> None:
    realm = realm_with_l3(env)
    first = env.data_create(realm, IPA, b"first")
    data, src = env.delegated(), env.ns_page(b"second")
    args = (realm.rd, data, IPA, src, 1) if fid == RmiFid.DATA_CREATE else (realm.rd, data, IPA)
    assert_status(env.smc(fid, *args), RmiStatus.ERROR_RTT, 3)
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, first, RmiRipas.RAM)
    assert env.state(data) == GranuleState.DELEGATED
    assert env.realm_mem.read(first, 5) == b"first"


# --- DATA_CREATE_UNKNOWN ----------------------------------------------------------------
@pytest.mark.parametrize("ripas", [RmiRipas.EMPTY, RmiRipas.RAM])
def test_data_create_unknown_keeps_ripas(env: Env, ripas: RmiRipas) -> None:
    realm = realm_with_l3(env)
    if ripas == RmiRipas.RAM:
        env.init_ripas(realm, IPA, IPA + L3)
    rim = env.realm(realm).rim
    data = env.delegated()
    out = env.smc(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.state(data) == GranuleState.DATA
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, data, ripas)
    assert env.realm_mem.read(data, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    assert env.realm(realm).rim == rim  # not measured


def test_data_create_unknown_over_destroyed(env: Env) -> None:
    """UNASSIGNED-DESTROYED is UNASSIGNED: the result is ASSIGNED-DESTROYED (READ_ENTRY desc 0)."""
    realm = realm_with_l3(env)
    env.data_create(realm, IPA, b"x")
    env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)
    data = env.delegated()
    env.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA)
    assert env.state(data) == GranuleState.DATA
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, 0, RmiRipas.DESTROYED)
    out = env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert out[1] == data
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, RmiRipas.DESTROYED)
    assert env.state(data) == GranuleState.DELEGATED


@pytest.mark.parametrize("state", ["active", "system_off"])
def test_data_create_unknown_allowed_after_activate(env: Env, state: str) -> None:
    realm = realm_with_l3(env)
    rec = env.create_rec(realm)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    if state == "system_off":
        rec.engine.push([PSCI_SYSTEM_OFF])
        env.enter(rec)
        assert env.realm(realm).state == RealmState.SYSTEM_OFF
    rim = env.realm(realm).rim
    data = env.delegated()
    env.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA)
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, data, RmiRipas.EMPTY)
    assert env.realm(realm).rim == rim


# --- DATA_DESTROY -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setup", "after"),
    [
        ("measured", RmiRipas.DESTROYED),
        ("unknown_ram", RmiRipas.DESTROYED),
        ("unknown_empty", RmiRipas.EMPTY),
    ],
)
def test_data_destroy(env: Env, setup: str, after: RmiRipas) -> None:
    realm = realm_with_l3(env)
    if setup == "measured":
        data = env.data_create(realm, IPA, pattern(b"secret"))
    else:
        if setup == "unknown_ram":
            env.init_ripas(realm, IPA, IPA + L3)
        data = env.delegated()
        env.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA)
        env.realm_mem.write(data, b"realm wrote this")
    out = env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1] == data
    assert out[2] == (IPA | (L2 - 1)) + 1  # nothing live after IPA in its table: the table's end
    assert env.state(data) == GranuleState.DELEGATED
    assert env.realm_mem.read(data, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, after)
    env.ok(RmiFid.GRANULE_UNDELEGATE, data)
    assert env.ns.read(data, GRANULE_SIZE) == bytes(GRANULE_SIZE)


def test_data_destroy_top_is_next_live_entry(env: Env) -> None:
    realm = realm_with_l3(env)
    a = env.data_create(realm, IPA, b"a")
    b = env.data_create(realm, IPA + 5 * L3, b"b")
    out = env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert (out[1], out[2]) == (a, IPA + 5 * L3)
    out = env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA + 5 * L3)
    assert (out[1], out[2]) == (b, IPA + L2)


def test_data_destroy_in_active_realm(env: Env) -> None:
    realm = realm_with_l3(env)
    data = env.data_create(realm, IPA, b"x")
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    assert env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)[1] == data


def test_data_destroy_unassigned_is_error_rtt_3(env: Env) -> None:
    realm = realm_with_l3(env)
    env.data_create(realm, IPA + 2 * L3, b"x")
    out = env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert_status(out, RmiStatus.ERROR_RTT, 3)
    assert out[2] == IPA + 2 * L3  # the host may skip to the next live entry
    env.init_ripas(realm, IPA, IPA + L3)
    assert_status(env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA), RmiStatus.ERROR_RTT, 3)


def test_data_destroy_missing_table_is_error_rtt_level(env: Env) -> None:
    realm = env.create_realm(40)
    assert_status(env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA), RmiStatus.ERROR_RTT, 1)
    env.create_rtt(realm, IPA, 2)
    assert_status(env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA), RmiStatus.ERROR_RTT, 2)


def test_data_destroy_bad_arguments(env: Env) -> None:
    realm = realm_with_l3(env)
    data = env.data_create(realm, IPA, b"x")
    for ipa in (IPA + 8, realm.par_size + IPA, realm.par_size, 1 << 40, (1 << 64) - GRANULE_SIZE):
        assert_status(env.smc(RmiFid.DATA_DESTROY, realm.rd, ipa), RmiStatus.ERROR_INPUT)
    for rd in (env.delegated(), data, realm.roots[0], env.ns_granule()):
        assert_status(env.smc(RmiFid.DATA_DESTROY, rd, IPA), RmiStatus.ERROR_INPUT)
    assert env.state(data) == GranuleState.DATA


def test_data_granules_block_rtt_destroy_until_destroyed(env: Env) -> None:
    realm = realm_with_l3(env)
    env.data_create(realm, IPA, b"x")
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 3)
    env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)
    env.ok(RmiFid.RTT_DESTROY, realm.rd, IPA, 3)
    assert env.read_entry(realm, IPA, 2) == (2, UNASSIGNED, 0, RmiRipas.DESTROYED)


def test_data_in_large_ipa_realm(env: Env) -> None:
    realm = env.create_realm(48)
    ipa = (1 << 47) - L3  # the last protected granule
    env.ensure_rtts(realm, ipa, 3)
    data = env.data_create(realm, ipa, b"top")
    assert env.read_entry(realm, ipa, 3) == (3, ASSIGNED, data, RmiRipas.RAM)
    assert_status(
        env.smc(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, env.delegated(), ipa + L3), RmiStatus.ERROR_INPUT
    )
    assert env.read_entry(realm, L1, 1)[0] == 0  # no level-1 table there: the walk stops at the root
