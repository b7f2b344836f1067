"""DATA_DESTROY's X2 `top` when the walk stops above level 3 (digest §2.2: "top" is the IPA
after the non-live entries that follow the entry the walk ended at, so the host can skip
them; it is an output of the ERROR_RTT result too, as in TF-RMM smc_data_destroy)."""

from __future__ import annotations

from unirealm.arch.rmi import RmiFid, RmiStatus

from .conftest import L1, L2, Env, assert_status

IPA = 4 * L2


def test_missing_level2_table_reports_the_next_live_level1_entry(env: Env) -> None:
    realm = env.create_realm(40)  # level-1 roots
    env.create_rtt(realm, 3 * L1, 2)  # a table entry: live
    out = env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert_status(out, RmiStatus.ERROR_RTT, 1)
    assert (out[1], out[2]) == (0, 3 * L1)


def test_missing_level3_table_reports_the_next_live_level2_entry(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    env.create_rtt(realm, IPA + 7 * L2, 3)
    out = env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA)
    assert_status(out, RmiStatus.ERROR_RTT, 2)
    assert (out[1], out[2]) == (0, IPA + 7 * L2)
    # Nothing live after it in the level-2 table: top is the table's end.
    out = env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA + 8 * L2)
    assert_status(out, RmiStatus.ERROR_RTT, 2)
    assert out[2] == L1
