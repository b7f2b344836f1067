"""RMI_RTT_INIT_RIPAS / RMI_RTT_SET_RIPAS (digest §2.2, §1.4 RSI_IPA_STATE_SET completion)."""

from __future__ import annotations

import pytest

from unirealm.arch.rmi import RealmState, RmiFid, RmiRecExitReason, RmiRipas, RmiStatus, RttEntryState

from .conftest import (
    L1,
    L2,
    L3,
    PSCI_SYSTEM_OFF,
    RSI_IPA_STATE_SET,
    Env,
    RealmHandle,
    RecHandle,
    assert_status,
)

UNASSIGNED, ASSIGNED, TABLE = RttEntryState.UNASSIGNED, RttEntryState.ASSIGNED, RttEntryState.TABLE
EMPTY, RAM, DESTROYED = RmiRipas.EMPTY, RmiRipas.RAM, RmiRipas.DESTROYED
IPA = 8 * L2
RIPAS_RESPONSE_REJECT = 1 << 4
ACCEPT, REJECT = 0, 1


# --- RTT_INIT_RIPAS ---------------------------------------------------------------------
def test_init_ripas_level1_blocks(env: Env) -> None:
    realm = env.create_realm(40)  # root at level 1
    out = env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, L1, 4 * L1)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1] == 4 * L1
    for ipa in (L1, 2 * L1, 3 * L1):
        assert env.read_entry(realm, ipa, 1) == (1, UNASSIGNED, 0, RAM)
    assert env.read_entry(realm, 0, 1) == (1, UNASSIGNED, 0, EMPTY)
    assert env.read_entry(realm, 4 * L1, 1) == (1, UNASSIGNED, 0, EMPTY)


def test_init_ripas_level2_and_level3(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    assert env.init_ripas(realm, IPA, IPA + 3 * L2) == IPA + 3 * L2
    assert [env.read_entry(realm, IPA + i * L2, 2)[3] for i in range(-1, 4)] == [EMPTY, RAM, RAM, RAM, EMPTY]
    base = IPA + 5 * L2
    env.create_rtt(realm, base, 3)
    assert env.init_ripas(realm, base + L3, base + 6 * L3) == base + 6 * L3
    assert [env.read_entry(realm, base + i * L3, 3)[3] for i in range(7)] == [EMPTY] + [RAM] * 5 + [EMPTY]


def test_init_ripas_stops_at_the_end_of_the_table(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    base = IPA + L2 - 2 * L3
    assert env.init_ripas(realm, base, IPA + 2 * L2) == IPA + L2
    # The rest is in the level-2 table: the host continues from X1.
    assert env.init_ripas(realm, IPA + L2, IPA + 2 * L2) == IPA + 2 * L2
    # Level-1 table end: the last level-2 entry of the first GiB.
    assert env.init_ripas(realm, L1 - L2, 2 * L1) == L1


def test_init_ripas_stops_before_a_block_crossing_top(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    assert env.init_ripas(realm, IPA, IPA + L2 + L3) == IPA + L2
    assert env.read_entry(realm, IPA + L2, 2) == (2, UNASSIGNED, 0, EMPTY)
    # Nothing fits at all: ERROR_RTT at the level of the entry.
    assert_status(env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, IPA + L2, IPA + L2 + L3), RmiStatus.ERROR_RTT, 2)


def test_init_ripas_stops_at_non_convertible_entries(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    env.data_create(realm, IPA + 3 * L3, b"d")
    assert env.init_ripas(realm, IPA, IPA + 8 * L3) == IPA + 3 * L3
    # Starting at the assigned entry: no progress.
    assert_status(
        env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, IPA + 3 * L3, IPA + 8 * L3), RmiStatus.ERROR_RTT, 3
    )
    assert env.read_entry(realm, IPA + 3 * L3, 3)[1] == ASSIGNED
    # A DESTROYED entry stops it too.
    env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA + 3 * L3)
    assert_status(
        env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, IPA + 3 * L3, IPA + 8 * L3), RmiStatus.ERROR_RTT, 3
    )
    assert env.read_entry(realm, IPA + 3 * L3, 3) == (3, UNASSIGNED, 0, DESTROYED)
    # At level 2 a table entry stops the walk of the level-2 table.
    assert env.init_ripas(realm, IPA - 2 * L2, IPA + L2) == IPA


def test_init_ripas_accepts_ram_unchanged(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    env.init_ripas(realm, IPA, IPA + L2)
    rim = env.realm(realm).rim
    assert env.init_ripas(realm, IPA - L2, IPA + 2 * L2) == IPA + 2 * L2
    assert env.read_entry(realm, IPA, 2) == (2, UNASSIGNED, 0, RAM)
    assert env.realm(realm).rim != rim  # still measured


def test_init_ripas_unaligned_base_at_block_level(env: Env) -> None:
    realm = env.create_realm(40)
    assert_status(env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, L2, 2 * L1), RmiStatus.ERROR_RTT, 1)
    env.create_rtt(realm, 0, 2)
    assert_status(env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, IPA + L3, IPA + L2), RmiStatus.ERROR_RTT, 2)
    env.create_rtt(realm, IPA, 3)
    assert env.init_ripas(realm, IPA + L3, IPA + L2) == IPA + L2
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, EMPTY)


def test_init_ripas_root_level0_entry_in_48bit_realm(env: Env) -> None:
    realm = env.create_realm(48)
    assert_status(env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, 0, L1), RmiStatus.ERROR_RTT, 0)
    env.create_rtt(realm, 0, 1)
    assert env.init_ripas(realm, 0, L1) == L1


@pytest.mark.parametrize("state", ["active", "system_off"])
def test_init_ripas_after_activate_is_error_realm(env: Env, state: str) -> None:
    realm = env.create_realm(40)
    rec = env.create_rec(realm)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    if state == "system_off":
        rec.engine.push([PSCI_SYSTEM_OFF])
        env.enter(rec)
        assert env.realm(realm).state == RealmState.SYSTEM_OFF
    rim = env.realm(realm).rim
    assert_status(env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, 0, L1), RmiStatus.ERROR_REALM)
    assert env.read_entry(realm, 0, 1) == (1, UNASSIGNED, 0, EMPTY)
    assert env.realm(realm).rim == rim


def test_init_ripas_bad_input(env: Env) -> None:
    realm = env.create_realm(40)
    par = realm.par_size
    for base, top in (
        (L3 + 8, L1),
        (0, L1 + 8),
        (L1, L1),
        (2 * L1, L1),
        (par - L1, par + L3),  # top - 4 KiB outside the PAR
        (par, par + L1),
        (0, 1 << 63),
        ((1 << 64) - L3, 0),
    ):
        assert_status(env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, base, top), RmiStatus.ERROR_INPUT)
    for rd in (env.delegated(), realm.roots[0], realm.rd + L3, env.ns_granule()):
        assert_status(env.smc(RmiFid.RTT_INIT_RIPAS, rd, 0, L1), RmiStatus.ERROR_INPUT)
    # The last protected block is fine.
    assert env.init_ripas(realm, par - L1, par) == par


# --- RTT_SET_RIPAS ----------------------------------------------------------------------
def pending_request(
    env: Env, base: int, top: int, ripas: int, flags: int = 0, realm: RealmHandle | None = None
) -> tuple[RealmHandle, RecHandle]:
    """An active realm whose REC asked for RSI_IPA_STATE_SET(base, top, ripas, flags)."""
    if realm is None:
        realm = env.create_realm(40)
        env.create_rec(realm)
        env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec = realm.recs[0]
    rec.engine.push([RSI_IPA_STATE_SET, base, top, ripas, flags])
    out, run = env.enter(rec)
    assert_status(out, RmiStatus.SUCCESS)
    assert run["exit_reason"] == RmiRecExitReason.RIPAS_CHANGE
    assert (run["exit_ripas_base"], run["exit_ripas_top"], run["exit_ripas_value"]) == (base, top, ripas)
    rec.engine.idle_wfi = True
    return realm, rec


def guest_result(env: Env, rec: RecHandle, flags: int = 0) -> list[int]:
    """Resume the REC; the RSI_IPA_STATE_SET it made returns (X0, X1 new base, X2 response)."""
    out, _ = env.enter(rec, flags)
    assert_status(out, RmiStatus.SUCCESS)
    record = [r for r in rec.engine.log if r.regs[0] == RSI_IPA_STATE_SET][-1]
    assert record.out is not None
    return record.out[:3]


def test_set_ripas_ram_whole_request(env: Env) -> None:
    realm, rec = pending_request(env, IPA, IPA + 2 * L2, RAM)
    env.create_rtt(realm, 0, 2)
    rim = env.realm(realm).rim
    out = env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 2 * L2)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1] == IPA + 2 * L2
    assert env.read_entry(realm, IPA, 2) == (2, UNASSIGNED, 0, RAM)
    assert env.read_entry(realm, IPA + L2, 2) == (2, UNASSIGNED, 0, RAM)
    assert env.read_entry(realm, IPA + 2 * L2, 2) == (2, UNASSIGNED, 0, EMPTY)
    assert env.realm(realm).rim == rim  # never measured
    assert guest_result(env, rec) == [0, IPA + 2 * L2, ACCEPT]
    # Completed: nothing is pending any more.
    out = env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + L2)
    assert (out[0] & 0xFF) in (RmiStatus.ERROR_REC, RmiStatus.ERROR_INPUT)


def test_set_ripas_in_pieces(env: Env) -> None:
    realm, rec = pending_request(env, IPA, IPA + 4 * L3, RAM)
    env.ensure_rtts(realm, IPA, 3)
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + L3)[1] == IPA + L3
    # The next call must start where the last one stopped.
    assert_status(env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 4 * L3), RmiStatus.ERROR_INPUT)
    assert_status(
        env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA + 2 * L3, IPA + 4 * L3), RmiStatus.ERROR_INPUT
    )
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA + L3, IPA + 4 * L3)[1] == IPA + 4 * L3
    assert [env.read_entry(realm, IPA + i * L3, 3)[3] for i in range(5)] == [RAM] * 4 + [EMPTY]
    assert guest_result(env, rec, RIPAS_RESPONSE_REJECT) == [0, IPA + 4 * L3, ACCEPT]  # complete: accepted


def test_set_ripas_partial_progress_reported_and_rejected(env: Env) -> None:
    realm, rec = pending_request(env, IPA, IPA + 4 * L3, RAM)
    env.ensure_rtts(realm, IPA, 3)
    env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 2 * L3)
    assert guest_result(env, rec, RIPAS_RESPONSE_REJECT) == [0, IPA + 2 * L3, REJECT]


def test_set_ripas_partial_without_reject_is_accept(env: Env) -> None:
    realm, rec = pending_request(env, IPA, IPA + 4 * L3, RAM)
    env.ensure_rtts(realm, IPA, 3)
    env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + L3)
    assert guest_result(env, rec) == [0, IPA + L3, ACCEPT]


def test_set_ripas_empty_cannot_be_rejected(env: Env) -> None:
    _realm, rec = pending_request(env, IPA, IPA + 4 * L3, EMPTY)
    assert guest_result(env, rec, RIPAS_RESPONSE_REJECT) == [0, IPA, ACCEPT]


def test_set_ripas_ram_to_empty_on_assigned_data_invalidates(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rec(realm)
    env.ensure_rtts(realm, IPA, 3)
    data = env.data_create(realm, IPA + L3, b"d")
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    realm, rec = pending_request(env, IPA, IPA + 3 * L3, EMPTY, realm=realm)
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 3 * L3)[1] == IPA + 3 * L3
    assert env.read_entry(realm, IPA + L3, 3) == (3, ASSIGNED, data, EMPTY)
    assert (IPA + L3, L3) in rec.engine.invalidations
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, EMPTY)


def test_set_ripas_destroyed_needs_change_destroyed(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rec(realm)
    env.ensure_rtts(realm, IPA, 3)
    env.data_create(realm, IPA, b"d")
    env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA)  # IPA is now UNASSIGNED-DESTROYED
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    realm, rec = pending_request(env, IPA, IPA + 2 * L3, RAM, flags=0, realm=realm)
    assert_status(env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 2 * L3), RmiStatus.ERROR_RTT, 3)
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, DESTROYED)
    assert guest_result(env, rec, RIPAS_RESPONSE_REJECT) == [0, IPA, REJECT]
    realm, rec = pending_request(env, IPA, IPA + 2 * L3, RAM, flags=1, realm=realm)
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 2 * L3)[1] == IPA + 2 * L3
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, RAM)
    assert guest_result(env, rec) == [0, IPA + 2 * L3, ACCEPT]


def test_set_ripas_unaligned_base_at_block_level(env: Env) -> None:
    realm, rec = pending_request(env, IPA + L3, IPA + 3 * L3, RAM)
    env.create_rtt(realm, 0, 2)
    assert_status(
        env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA + L3, IPA + 3 * L3), RmiStatus.ERROR_RTT, 2
    )
    env.create_rtt(realm, IPA, 3)
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA + L3, IPA + 3 * L3)[1] == IPA + 3 * L3


def test_set_ripas_stops_at_table_end(env: Env) -> None:
    realm, rec = pending_request(env, IPA + L2 - L3, IPA + L2 + L3, RAM)
    env.ensure_rtts(realm, IPA, 3)
    env.create_rtt(realm, IPA + L2, 3)
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA + L2 - L3, IPA + L2 + L3)[1] == IPA + L2
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA + L2, IPA + L2 + L3)[1] == IPA + L2 + L3


def test_set_ripas_errors(env: Env) -> None:
    realm, rec = pending_request(env, IPA, IPA + 4 * L3, RAM)
    env.ensure_rtts(realm, IPA, 3)
    other = env.create_realm(40)
    other_rec = env.create_rec(other)
    # Base / top against the request, alignment, order.
    for base, top in (
        (IPA + L3, IPA + 2 * L3),
        (IPA, IPA + 5 * L3),
        (IPA, IPA + L3 + 8),
        (IPA + 8, IPA + L3),
        (IPA, IPA),
        (IPA + L3, IPA),
    ):
        assert_status(env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, base, top), RmiStatus.ERROR_INPUT)
    # The REC must belong to the realm.
    assert_status(env.smc(RmiFid.RTT_SET_RIPAS, other.rd, rec.rec, IPA, IPA + L3), RmiStatus.ERROR_REC)
    # Handles that are not a REC / not an RD.
    for bad in (rec.aux[0], realm.rd, env.delegated(), rec.rec + 8):
        assert_status(env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, bad, IPA, IPA + L3), RmiStatus.ERROR_INPUT)
    for bad in (rec.rec, env.delegated(), realm.roots[0]):
        assert_status(env.smc(RmiFid.RTT_SET_RIPAS, bad, rec.rec, IPA, IPA + L3), RmiStatus.ERROR_INPUT)
    # A REC with no request pending.
    out = env.smc(RmiFid.RTT_SET_RIPAS, other.rd, other_rec.rec, IPA, IPA + L3)
    assert (out[0] & 0xFF) in (RmiStatus.ERROR_REC, RmiStatus.ERROR_INPUT)
    assert [env.read_entry(realm, IPA + i * L3, 3)[3] for i in range(4)] == [EMPTY] * 4
    # Still pending and usable.
    assert env.ok(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + 4 * L3)[1] == IPA + 4 * L3


def test_rsi_ipa_state_set_bad_input_does_not_exit(env: Env) -> None:
    realm = env.create_realm(40)
    rec = env.create_rec(realm)
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    par = realm.par_size
    bad = [(IPA + 8, IPA + L3, 1), (IPA, IPA, 1), (IPA, par + L3, 1), (IPA, IPA + L3, 2), (par, par + L3, 0)]
    rec.engine.push(*[[RSI_IPA_STATE_SET, b, t, r, 0] for b, t, r in bad])
    rec.engine.idle_wfi = True
    out, run = env.enter(rec)
    assert run["exit_reason"] == RmiRecExitReason.IRQ
    assert [r.out[0] if r.out else None for r in rec.engine.log] == [1] * len(bad)  # RSI_ERROR_INPUT
    out = env.smc(RmiFid.RTT_SET_RIPAS, realm.rd, rec.rec, IPA, IPA + L3)
    assert (out[0] & 0xFF) in (RmiStatus.ERROR_REC, RmiStatus.ERROR_INPUT)  # nothing to complete
