"""RMI_GRANULE_DELEGATE / RMI_GRANULE_UNDELEGATE (digest §2.2, §2.3)."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE, Pas, World
from unirealm.arch.rmi import GranuleState, RmiFid, RmiStatus
from unirealm.machine.memory import GranuleProtectionFault

from .conftest import Env, assert_status


def test_delegate_success(env: Env) -> None:
    pa = env.ns_page(b"host data")
    out = env.smc(RmiFid.GRANULE_DELEGATE, pa)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1:5] == [0, 0, 0, 0]  # no results: X1..X4 come from a zeroed result set
    assert env.state(pa) == GranuleState.DELEGATED
    assert env.m.memory.pas(pa) == Pas.REALM
    assert env.realm_mem.read(pa, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    with pytest.raises(GranuleProtectionFault):
        env.ns.read(pa, 1)


def test_undelegate_success(env: Env) -> None:
    pa = env.delegated()
    out = env.smc(RmiFid.GRANULE_UNDELEGATE, pa)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.state(pa) == GranuleState.UNDELEGATED
    assert env.m.memory.pas(pa) == Pas.NON_SECURE
    assert env.ns.read(pa, GRANULE_SIZE) == bytes(GRANULE_SIZE)


def test_delegate_undelegate_cycle_repeats(env: Env) -> None:
    pa = env.ns_granule()
    for _ in range(3):
        env.ok(RmiFid.GRANULE_DELEGATE, pa)
        env.ok(RmiFid.GRANULE_UNDELEGATE, pa)
    assert env.state(pa) == GranuleState.UNDELEGATED


def test_delegate_twice_fails(env: Env) -> None:
    pa = env.delegated()
    assert_status(env.smc(RmiFid.GRANULE_DELEGATE, pa), RmiStatus.ERROR_INPUT)
    assert env.state(pa) == GranuleState.DELEGATED


def test_undelegate_undelegated_fails(env: Env) -> None:
    pa = env.ns_page(b"keep")
    assert_status(env.smc(RmiFid.GRANULE_UNDELEGATE, pa), RmiStatus.ERROR_INPUT)
    assert env.ns.read(pa, 4) == b"keep"


@pytest.mark.parametrize("fid", [RmiFid.GRANULE_DELEGATE, RmiFid.GRANULE_UNDELEGATE])
@pytest.mark.parametrize("offset", [1, 8, 0x800, GRANULE_SIZE - 1])
def test_unaligned_address_fails(env: Env, fid: RmiFid, offset: int) -> None:
    pa = env.ns_granule()
    if fid == RmiFid.GRANULE_UNDELEGATE:
        env.ok(RmiFid.GRANULE_DELEGATE, pa)
    before = env.state(pa)
    assert_status(env.smc(fid, pa + offset), RmiStatus.ERROR_INPUT)
    assert env.state(pa) == before


@pytest.mark.parametrize("fid", [RmiFid.GRANULE_DELEGATE, RmiFid.GRANULE_UNDELEGATE])
def test_address_outside_dram_fails(env: Env, fid: RmiFid) -> None:
    mem = env.m.memory
    for pa in (0, mem.base - GRANULE_SIZE, mem.top, mem.top + (1 << 30), (1 << 64) - GRANULE_SIZE):
        assert_status(env.smc(fid, pa), RmiStatus.ERROR_INPUT)


def test_delegate_last_granule_of_dram(env: Env) -> None:
    pa = env.m.memory.top - GRANULE_SIZE
    env.ok(RmiFid.GRANULE_DELEGATE, pa)
    assert env.state(pa) == GranuleState.DELEGATED
    env.ok(RmiFid.GRANULE_UNDELEGATE, pa)


def test_delegate_of_secure_granule_fails(env: Env) -> None:
    pa = env.ns_granule()
    env.m.memory.set_pas(World.ROOT, pa, Pas.SECURE)
    assert_status(env.smc(RmiFid.GRANULE_DELEGATE, pa), RmiStatus.ERROR_INPUT)
    assert env.state(pa) == GranuleState.UNDELEGATED
    assert env.m.memory.pas(pa) == Pas.SECURE


def test_undelegate_of_granules_in_use_fails(env: Env) -> None:
    """RD, REC, REC_AUX, DATA and RTT granules are not DELEGATED: UNDELEGATE refuses them."""
    realm = env.create_realm()
    rec = env.create_rec(realm)
    env.ensure_rtts(realm, 0, 3)
    data = env.data_create(realm, 0, b"x")
    rtt3 = env.read_entry(realm, 0, 2)[2]
    in_use = {
        realm.rd: GranuleState.RD,
        realm.roots[0]: GranuleState.RTT,
        rtt3: GranuleState.RTT,
        rec.rec: GranuleState.REC,
        rec.aux[0]: GranuleState.REC_AUX,
        data: GranuleState.DATA,
    }
    for pa, state in in_use.items():
        assert env.state(pa) == state
        assert_status(env.smc(RmiFid.GRANULE_UNDELEGATE, pa), RmiStatus.ERROR_INPUT)
        assert_status(env.smc(RmiFid.GRANULE_DELEGATE, pa), RmiStatus.ERROR_INPUT)
        assert env.state(pa) == state
        assert env.m.memory.pas(pa) == Pas.REALM


def test_granule_state_of_non_granule_addresses(env: Env) -> None:
    assert env.state(env.m.memory.base + 1) is None
    assert env.state(env.m.memory.top) is None
    assert env.state(env.m.memory.base) == GranuleState.UNDELEGATED
