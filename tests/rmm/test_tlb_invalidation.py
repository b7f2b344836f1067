"""Stage-2 TLB maintenance by the RMM (TF-RMM's TLBI after every s2tte change that removes or
weakens a valid mapping; digest §2.2): each REC of the realm, and no REC of another realm,
is told the IPA range whose translations it must drop — DATA_DESTROY one granule,
RTT_DESTROY and RTT_FOLD the parent entry's range, RTT_UNMAP_UNPROTECTED the entry's,
RTT_SET_RIPAS leaving RAM an assigned entry's (and nothing for an unassigned one)."""

from __future__ import annotations

from unirealm.arch.rmi import RmiFid, RmiRipas

from .conftest import L1, L2, L3, Env, RealmHandle
from .test_rmi_ripas import guest_result, pending_request
from .test_rmi_rtt import NS_DESC

IPA = 8 * L2


def two_realms(env: Env, recs: int = 2) -> tuple[RealmHandle, RealmHandle]:
    """A realm with `recs` RECs and a level-3 table at IPA (and one granule of data there),
    and a bystander realm with one REC; neither activated."""
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    for _ in range(recs):
        env.create_rec(realm)
    other = env.create_realm(40)
    env.create_rec(other)
    return realm, other


def clear(*realms: RealmHandle) -> None:
    for realm in realms:
        for rec in realm.recs:
            rec.engine.invalidations.clear()


def invalidations(realm: RealmHandle) -> list[list[tuple[int, int]]]:
    return [list(rec.engine.invalidations) for rec in realm.recs]


def test_data_destroy_invalidates_the_granule_on_every_rec(env: Env) -> None:
    realm, other = two_realms(env)
    env.data_create(realm, IPA + 5 * L3, b"x")
    clear(realm, other)
    env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA + 5 * L3)
    assert invalidations(realm) == [[(IPA + 5 * L3, L3)]] * 2
    assert invalidations(other) == [[]]


def test_failed_data_destroy_invalidates_nothing(env: Env) -> None:
    realm, other = two_realms(env)
    clear(realm, other)
    assert env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA + 6 * L3)[0] != 0  # nothing assigned there
    assert invalidations(realm) == [[], []]


def test_rtt_destroy_invalidates_the_parent_entry_range(env: Env) -> None:
    realm, other = two_realms(env)
    clear(realm, other)
    out = env.ok(RmiFid.RTT_DESTROY, realm.rd, IPA, 3)
    assert invalidations(realm) == [[(IPA, L2)]] * 2
    assert invalidations(other) == [[]]
    # The level-2 table goes too: its parent entry covers a whole level-1 range.
    l2_base = IPA & ~(L1 - 1)
    clear(realm)
    env.ok(RmiFid.RTT_DESTROY, realm.rd, l2_base, 2)
    assert invalidations(realm) == [[(l2_base, L1)]] * 2
    assert out[1] != 0


def test_rtt_fold_invalidates_the_parent_entry_range(env: Env) -> None:
    realm, other = two_realms(env, recs=1)
    env.init_ripas(realm, IPA, IPA + L2)  # all 512 entries unassigned RAM: foldable
    clear(realm, other)
    env.ok(RmiFid.RTT_FOLD, realm.rd, IPA, 3)
    assert invalidations(realm) == [[(IPA, L2)]]
    assert invalidations(other) == [[]]


def test_unmap_unprotected_invalidates_the_entry(env: Env) -> None:
    realm, other = two_realms(env)
    ns = realm.par_size + IPA
    env.ensure_rtts(realm, ns, 3)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ns + 3 * L3, 3, env.ns_granule() | NS_DESC)
    block = realm.par_size + 3 * L2
    env.ensure_rtts(realm, block, 2)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, block, 2, env.ns_granules_aligned(1, L2) | NS_DESC)
    clear(realm, other)
    env.ok(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ns + 3 * L3, 3)
    env.ok(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, block, 2)
    assert invalidations(realm) == [[(ns + 3 * L3, L3), (block, L2)]] * 2
    assert invalidations(other) == [[]]


def test_set_ripas_invalidates_only_assigned_ram_leaving_ram(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rec(realm)
    env.ensure_rtts(realm, IPA, 3)
    env.init_ripas(realm, IPA, IPA + 2 * L3)  # IPA, IPA + L3: unassigned RAM
    env.data_create(realm, IPA + 2 * L3, b"d")  # assigned RAM
    env.data_create(realm, IPA + 3 * L3, b"e")
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    realm, rec = pending_request(env, IPA, IPA + 5 * L3, RmiRipas.EMPTY, realm=realm)
    rec.engine.invalidations.clear()
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 5 * L3)[1] == IPA + 5 * L3
    assert rec.engine.invalidations == [(IPA + 2 * L3, L3), (IPA + 3 * L3, L3)]
    guest_result(env, rec)
    # Back to RAM: nothing was mapped as RAM before, nothing to invalidate.
    realm, rec = pending_request(env, IPA, IPA + 5 * L3, RmiRipas.RAM, realm=realm)
    rec.engine.invalidations.clear()
    env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 5 * L3)
    assert rec.engine.invalidations == []
