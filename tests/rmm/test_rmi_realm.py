"""RMI_REALM_CREATE / RMI_REALM_ACTIVATE / RMI_REALM_DESTROY (digest §2.2, §2.3, §2.5)."""

from __future__ import annotations

from typing import Any

import pytest

from unirealm.arch.memory import GRANULE_SIZE
from unirealm.arch.rmi import GranuleState, RealmState, RmiFid, RmiRipas, RmiStatus, RttEntryState

from .conftest import L1, L2, PSCI_SYSTEM_OFF, Env, assert_status

NS_DESC = (0b1111 << 2) | (0b11 << 6)  # MemAttr normal WB, S2AP RW


def feature(env: Env, lsb: int, width: int) -> int:
    return (env.ok(RmiFid.FEATURES, 0)[1] >> lsb) & ((1 << width) - 1)


# --- REALM_CREATE success ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("s2sz", "level", "roots"), [(32, 2, 4), (36, 1, 1), (40, 1, 2), (44, 0, 1), (48, 0, 1)]
)
def test_realm_create_success(env: Env, s2sz: int, level: int, roots: int) -> None:
    rd, params, values = env.prepare_realm(s2sz)
    assert (values["rtt_level_start"], values["rtt_num_start"]) == (level, roots)
    out = env.smc(RmiFid.REALM_CREATE, rd, params)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.state(rd) == GranuleState.RD
    for i in range(roots):
        assert env.state(values["rtt_base"] + i * GRANULE_SIZE) == GranuleState.RTT
    # The granule after the roots was not claimed.
    assert env.state(values["rtt_base"] + roots * GRANULE_SIZE) != GranuleState.RTT
    realm = env.rmm.realms[rd]
    assert realm.state == RealmState.NEW
    # Root entries: UNASSIGNED / EMPTY, in the PAR and outside it.
    par = 1 << (s2sz - 1)
    size = 1 << (12 + 9 * (3 - level))
    for ipa in (0, par - size, par, (1 << s2sz) - size):
        assert env.read_entry_tuple(rd, ipa, level) == (level, RttEntryState.UNASSIGNED, 0, RmiRipas.EMPTY)
    # The params granule stays the host's.
    assert env.state(params) == GranuleState.UNDELEGATED


def test_realm_create_root_entries_split_at_par(env: Env) -> None:
    """Inside the PAR the roots hold protected UNASSIGNED entries (DATA can go there), outside
    UNASSIGNED_NS ones (only MAP_UNPROTECTED can)."""
    realm = env.create_realm(40)
    par = realm.par_size
    # Level-1 block outside the PAR: the root entry there is UNASSIGNED_NS.
    pa = env.m.memory.base  # 1 GiB aligned
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, par, 1, pa | NS_DESC)
    assert env.read_entry(realm, par, 1) == (1, RttEntryState.ASSIGNED, pa | NS_DESC, RmiRipas.EMPTY)
    # Inside the PAR the same command is refused, and INIT_RIPAS works on the root entry.
    assert_status(
        env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, par - L1, 1, pa | NS_DESC), RmiStatus.ERROR_INPUT
    )
    assert env.init_ripas(realm, par - L1, par) == par
    assert env.read_entry(realm, par - L1, 1) == (1, RttEntryState.UNASSIGNED, 0, RmiRipas.RAM)


def test_realm_create_sha512_and_max_debug_features(env: Env) -> None:
    bps = feature(env, 14, 6)
    wps = feature(env, 20, 6)
    realm = env.create_realm(40, hash_algo=1, num_bps=bps, num_wps=wps)
    assert env.realm(realm).hash_algo == 1
    assert env.state(realm.rd) == GranuleState.RD


def test_realm_create_rpv_is_kept(env: Env) -> None:
    rpv = bytes(range(64))
    realm = env.create_realm(40, rpv=rpv)
    assert env.realm(realm).rpv == rpv


# --- REALM_CREATE errors ----------------------------------------------------------------
def expect_create_fails(
    env: Env, rd: int, params: int, values: dict[str, Any] | None = None, existing: bool = False
) -> None:
    rd_state = env.state(rd)
    roots = []
    if values is not None:
        roots = [values["rtt_base"] + i * GRANULE_SIZE for i in range(min(values["rtt_num_start"], 16))]
    root_states = [env.state(r) for r in roots]
    assert_status(env.smc(RmiFid.REALM_CREATE, rd, params), RmiStatus.ERROR_INPUT)
    assert env.state(rd) == rd_state
    assert [env.state(r) for r in roots] == root_states
    assert existing or rd not in env.rmm.realms


@pytest.mark.parametrize("s2sz", [0, 16, 31, 49, 52, 64, 255])
def test_realm_create_s2sz_out_of_range(env: Env, s2sz: int) -> None:
    base = env.delegated(2)
    rd, params, values = env.prepare_realm(40, rtt_base=base)
    params = env.params_page({**values, "s2sz": s2sz})
    expect_create_fails(env, rd, params, values)


def test_realm_create_s2sz_bounds_accepted(env: Env) -> None:
    assert feature(env, 0, 8) == 48
    env.create_realm(32)
    env.create_realm(48)


@pytest.mark.parametrize("field", ["num_bps", "num_wps"])
def test_realm_create_debug_counts(env: Env, field: str) -> None:
    lsb = 14 if field == "num_bps" else 20
    limit = feature(env, lsb, 6)
    assert limit >= 1
    for bad in (0, limit + 1, 63, 255):
        rd, params, values = env.prepare_realm(40, **{field: bad})
        expect_create_fails(env, rd, params, values)
    env.create_realm(40, **{field: limit})
    env.create_realm(40, **{field: 1})


@pytest.mark.parametrize("algo", [2, 3, 0x80, 0xFF])
def test_realm_create_bad_hash_algorithm(env: Env, algo: int) -> None:
    rd, params, values = env.prepare_realm(40, hash_algo=algo)
    expect_create_fails(env, rd, params, values)


# Every (s2sz, start level, root tables) TF-RMM accepts for s2sz 32..48: any level at which
# the space fits with 1..16 concatenated roots (none at level 0) and needs every level below.
ACCEPTED_START_LEVELS = [
    *((s2sz, 1, 1) for s2sz in (32, 33, 34)), (32, 2, 4), (33, 2, 8), (34, 2, 16),
    *((s2sz, 1, 1 << (s2sz - 39) if s2sz > 39 else 1) for s2sz in range(35, 44)),
    *((s2sz, 0, 1) for s2sz in range(40, 49)),
]


def test_accepted_start_levels_are_the_24_of_tf_rmm() -> None:
    assert len(ACCEPTED_START_LEVELS) == len(set(ACCEPTED_START_LEVELS)) == 24


@pytest.mark.parametrize(("s2sz", "level", "num"), ACCEPTED_START_LEVELS)
def test_realm_create_every_consistent_start_level(env: Env, s2sz: int, level: int, num: int) -> None:
    rd, params, _ = env.prepare_realm(s2sz, rtt_level_start=level, rtt_num_start=num)
    env.ok(RmiFid.REALM_CREATE, rd, params)
    walk_level, state, _, _ = env.read_entry_tuple(rd, 0, level)
    assert (walk_level, state) == (level, 0)  # a root entry: UNASSIGNED at the start level


@pytest.mark.parametrize(
    ("s2sz", "level", "num"),
    [
        (40, 1, 1),  # level 1 needs 2 roots for 40 bits
        (40, 0, 2),  # level 0 takes no concatenation
        (40, 1, 4),
        (40, 2, 16),  # level 2 would need 1024 roots
        (40, -1, 1),
        (40, 3, 1),
        (40, 4, 1),
        (48, 1, 16),  # 512 roots needed
        (48, 0, 2),
        (32, 2, 2),
        (32, 0, 1),  # level 1 alone resolves more than 32 bits
        (39, 0, 1),  # level 1 alone resolves 39 bits
        (32, 3, 16),
        (36, 1, 2),
        (36, 2, 16),
        (44, 0, 2),
        (44, 1, 16),
    ],
)
def test_realm_create_inconsistent_start_level(env: Env, s2sz: int, level: int, num: int) -> None:
    rd, params, values = env.prepare_realm(s2sz, rtt_level_start=level, rtt_num_start=num)
    expect_create_fails(env, rd, params, values)


def test_realm_create_duplicate_vmid(env: Env) -> None:
    env.create_realm(40, vmid=7)
    rd, params, values = env.prepare_realm(40, vmid=7)
    expect_create_fails(env, rd, params, values)
    env.create_realm(40, vmid=8)


def test_realm_create_vmid_reusable_after_destroy(env: Env) -> None:
    realm = env.create_realm(40, vmid=9)
    env.ok(RmiFid.REALM_DESTROY, realm.rd)
    env.create_realm(40, vmid=9)


@pytest.mark.parametrize("flags", [1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 63, 0b111])
def test_realm_create_unsupported_flags(env: Env, flags: int) -> None:
    feat = env.ok(RmiFid.FEATURES, 0)[1]
    assert not feat & ((1 << 8) | (1 << 9) | (1 << 26))  # no LPA2, SVE or PMU offered
    rd, params, values = env.prepare_realm(40, flags=flags)
    expect_create_fails(env, rd, params, values)


def test_realm_create_params_must_be_ns(env: Env) -> None:
    rd, params, values = env.prepare_realm(40)
    env.ok(RmiFid.GRANULE_DELEGATE, params)
    expect_create_fails(env, rd, params, values)


@pytest.mark.parametrize("offset", [8, 0x800])
def test_realm_create_params_unaligned(env: Env, offset: int) -> None:
    rd, params, values = env.prepare_realm(40)
    expect_create_fails(env, rd, params + offset, values)


def test_realm_create_params_outside_dram(env: Env) -> None:
    rd, _params, values = env.prepare_realm(40)
    expect_create_fails(env, rd, env.m.memory.top, values)
    expect_create_fails(env, rd, 0, values)


def test_realm_create_rd_not_delegated(env: Env) -> None:
    _rd, params, values = env.prepare_realm(40)
    rd = env.ns_granule()
    expect_create_fails(env, rd, params, values)
    expect_create_fails(env, env.delegated() + 8, params, values)
    expect_create_fails(env, env.m.memory.top, params, values)


def test_realm_create_rd_already_a_realm(env: Env) -> None:
    realm = env.create_realm(40)
    _rd, params, values = env.prepare_realm(40)
    expect_create_fails(env, realm.rd, params, values, existing=True)
    assert env.state(realm.rd) == GranuleState.RD


def test_realm_create_root_not_delegated(env: Env) -> None:
    base = env.ns_granules(2)
    env.ok(RmiFid.GRANULE_DELEGATE, base)  # second root left undelegated
    rd, params, values = env.prepare_realm(40, rtt_base=base)
    expect_create_fails(env, rd, params, values)
    assert env.state(base) == GranuleState.DELEGATED


def test_realm_create_root_unaligned(env: Env) -> None:
    base = env.delegated(3)
    rd, params, _values = env.prepare_realm(40, rtt_base=base + 0x10)
    expect_create_fails(env, rd, params)
    assert env.state(base) == GranuleState.DELEGATED


def test_realm_create_root_in_use(env: Env) -> None:
    other = env.create_realm(40)
    rd, params, values = env.prepare_realm(40, rtt_base=other.roots[0])
    expect_create_fails(env, rd, params, values)


def test_realm_create_roots_beyond_dram(env: Env) -> None:
    last = env.m.memory.top - GRANULE_SIZE
    env.ok(RmiFid.GRANULE_DELEGATE, last)
    rd, params, values = env.prepare_realm(40, rtt_base=last)  # needs 2 roots: the second is past DRAM
    expect_create_fails(env, rd, params, values)


@pytest.mark.parametrize("which", [0, 1])
def test_realm_create_rd_overlaps_rtt_range(env: Env, which: int) -> None:
    base = env.delegated(2)
    _rd, params, values = env.prepare_realm(40, rtt_base=base)
    expect_create_fails(env, base + which * GRANULE_SIZE, params, values)
    assert env.state(base) == GranuleState.DELEGATED
    assert env.state(base + GRANULE_SIZE) == GranuleState.DELEGATED


def test_realm_create_rd_equal_to_params(env: Env) -> None:
    _rd, params, values = env.prepare_realm(40)
    expect_create_fails(env, params, params, values)


# --- REALM_ACTIVATE ---------------------------------------------------------------------
def test_realm_activate(env: Env) -> None:
    realm = env.create_realm()
    out = env.smc(RmiFid.REALM_ACTIVATE, realm.rd)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.realm(realm).state == RealmState.ACTIVE
    assert_status(env.smc(RmiFid.REALM_ACTIVATE, realm.rd), RmiStatus.ERROR_REALM)
    assert env.realm(realm).state == RealmState.ACTIVE


def test_realm_activate_bad_rd(env: Env) -> None:
    realm = env.create_realm()
    for rd in (env.ns_granule(), env.delegated(), realm.rd + 8, realm.roots[0], 0, (1 << 64) - 1):
        assert_status(env.smc(RmiFid.REALM_ACTIVATE, rd), RmiStatus.ERROR_INPUT)
    assert env.realm(realm).state == RealmState.NEW


def test_realm_activate_system_off_realm(env: Env) -> None:
    realm, rec = env.active_realm_with_rec()
    rec.engine.push([PSCI_SYSTEM_OFF])
    env.enter(rec)
    assert env.realm(realm).state == RealmState.SYSTEM_OFF
    assert_status(env.smc(RmiFid.REALM_ACTIVATE, realm.rd), RmiStatus.ERROR_REALM)
    assert env.realm(realm).state == RealmState.SYSTEM_OFF


# --- REALM_DESTROY ----------------------------------------------------------------------
@pytest.mark.parametrize("s2sz", [32, 40, 48])
def test_realm_destroy(env: Env, s2sz: int) -> None:
    realm = env.create_realm(s2sz)
    out = env.smc(RmiFid.REALM_DESTROY, realm.rd)
    assert_status(out, RmiStatus.SUCCESS)
    for g in (realm.rd, *realm.roots):
        assert env.state(g) == GranuleState.DELEGATED
        assert env.realm_mem.read(g, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    assert realm.rd not in env.rmm.realms
    # Gone: the RD is just a delegated granule again.
    assert_status(env.smc(RmiFid.REALM_ACTIVATE, realm.rd), RmiStatus.ERROR_INPUT)
    assert_status(env.smc(RmiFid.REALM_DESTROY, realm.rd), RmiStatus.ERROR_INPUT)
    for g in (realm.rd, *realm.roots):
        env.ok(RmiFid.GRANULE_UNDELEGATE, g)


def test_realm_destroy_active_and_system_off(env: Env) -> None:
    realm = env.create_realm()
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    env.ok(RmiFid.REALM_DESTROY, realm.rd)
    realm, rec = env.active_realm_with_rec()
    env.enter(rec)  # the script is empty: the REC calls SYSTEM_OFF
    assert env.realm(realm).state == RealmState.SYSTEM_OFF
    assert_status(env.smc(RmiFid.REALM_DESTROY, realm.rd), RmiStatus.ERROR_REALM)  # still has a REC
    env.ok(RmiFid.REC_DESTROY, rec.rec)
    env.ok(RmiFid.REALM_DESTROY, realm.rd)


def test_realm_destroy_with_rec_fails(env: Env) -> None:
    realm = env.create_realm()
    rec = env.create_rec(realm, runnable=False)
    assert_status(env.smc(RmiFid.REALM_DESTROY, realm.rd), RmiStatus.ERROR_REALM)
    assert env.state(realm.rd) == GranuleState.RD
    env.ok(RmiFid.REC_DESTROY, rec.rec)
    env.ok(RmiFid.REALM_DESTROY, realm.rd)


def test_realm_destroy_with_child_rtt_fails(env: Env) -> None:
    realm = env.create_realm()
    (rtt,) = env.ensure_rtts(realm, 0, 2)
    assert_status(env.smc(RmiFid.REALM_DESTROY, realm.rd), RmiStatus.ERROR_REALM)
    assert env.state(realm.rd) == GranuleState.RD
    assert env.state(rtt) == GranuleState.RTT
    out = env.ok(RmiFid.RTT_DESTROY, realm.rd, 0, 2)
    assert out[1] == rtt
    env.ok(RmiFid.REALM_DESTROY, realm.rd)


def test_realm_destroy_with_ns_block_in_root_fails(env: Env) -> None:
    realm = env.create_realm()
    ipa = realm.par_size
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 1, env.m.memory.base | NS_DESC)
    assert_status(env.smc(RmiFid.REALM_DESTROY, realm.rd), RmiStatus.ERROR_REALM)
    env.ok(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 1)
    env.ok(RmiFid.REALM_DESTROY, realm.rd)


def test_realm_destroy_with_only_ripas_changes_succeeds(env: Env) -> None:
    """UNASSIGNED entries (whatever their RIPAS) are not live."""
    realm = env.create_realm()
    env.init_ripas(realm, 0, L1)
    env.ok(RmiFid.REALM_DESTROY, realm.rd)


def test_realm_destroy_bad_rd(env: Env) -> None:
    realm = env.create_realm()
    for rd in (env.ns_granule(), env.delegated(), realm.rd + 1, realm.roots[1], env.m.memory.top):
        assert_status(env.smc(RmiFid.REALM_DESTROY, rd), RmiStatus.ERROR_INPUT)
    assert env.state(realm.rd) == GranuleState.RD


def test_two_realms_are_independent(env: Env) -> None:
    a = env.create_realm(40)
    b = env.create_realm(32)
    env.ensure_rtts(a, L2, 3)
    env.data_create(a, L2, b"a")
    assert env.read_entry(b, L2, 2)[1] == RttEntryState.UNASSIGNED
    env.ok(RmiFid.REALM_ACTIVATE, b.rd)
    assert env.realm(a).state == RealmState.NEW
    env.ok(RmiFid.REALM_DESTROY, b.rd)
    assert env.read_entry(a, L2, 3)[1] == RttEntryState.ASSIGNED
