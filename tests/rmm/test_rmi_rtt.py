"""RMI_RTT_CREATE / RTT_DESTROY / RTT_FOLD / RTT_MAP_UNPROTECTED / RTT_UNMAP_UNPROTECTED /
RTT_READ_ENTRY (digest §2.2, §2.3)."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.arch.rmi import GranuleState, RmiFid, RmiRipas, RmiStatus, RttEntryState

from .conftest import L1, L2, L3, Env, RealmHandle, assert_status

UNASSIGNED, ASSIGNED, TABLE = RttEntryState.UNASSIGNED, RttEntryState.ASSIGNED, RttEntryState.TABLE
EMPTY, RAM, DESTROYED = RmiRipas.EMPTY, RmiRipas.RAM, RmiRipas.DESTROYED
MEMATTR_WB = 0b1111 << 2
MEMATTR_DEV = 0b0001 << 2
S2AP_RW = 0b11 << 6
S2AP_RO = 0b01 << 6
NS_DESC = MEMATTR_WB | S2AP_RW
IPA = 6 * L2  # protected, inside the PAR of a 40-bit realm
MASK64 = (1 << 64) - 1


def ns_ipa(realm: RealmHandle, offset: int = 0) -> int:
    return realm.par_size + offset


# --- RTT_CREATE -------------------------------------------------------------------------
def test_rtt_create_level2_and_level3(env: Env) -> None:
    realm = env.create_realm(40)  # root at level 1
    assert env.read_entry(realm, IPA, 3) == (1, UNASSIGNED, 0, EMPTY)
    rtt2 = env.delegated()
    out = env.smc(RmiFid.RTT_CREATE, realm.rd, rtt2, IPA & ~(L1 - 1), 2)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.state(rtt2) == GranuleState.RTT
    assert env.read_entry(realm, 0, 1) == (1, TABLE, rtt2, EMPTY)
    assert env.read_entry(realm, IPA, 2) == (2, UNASSIGNED, 0, EMPTY)
    assert env.read_entry(realm, IPA, 3) == (2, UNASSIGNED, 0, EMPTY)
    rtt3 = env.delegated()
    env.ok(RmiFid.RTT_CREATE, realm.rd, rtt3, IPA, 3)
    assert env.read_entry(realm, IPA, 2) == (2, TABLE, rtt3, EMPTY)
    for off in (0, L3, L2 - L3):
        assert env.read_entry(realm, IPA + off, 3) == (3, UNASSIGNED, 0, EMPTY)
    # The neighbouring level-2 entry is still a block.
    assert env.read_entry(realm, IPA + L2, 3) == (2, UNASSIGNED, 0, EMPTY)


def test_rtt_create_level1_in_48bit_realm(env: Env) -> None:
    realm = env.create_realm(48)  # root at level 0
    rtt = env.delegated()
    env.ok(RmiFid.RTT_CREATE, realm.rd, rtt, 0, 1)
    assert env.read_entry(realm, 0, 0) == (0, TABLE, rtt, EMPTY)
    assert env.read_entry(realm, 5 * L1, 1) == (1, UNASSIGNED, 0, EMPTY)
    assert_status(env.smc(RmiFid.RTT_CREATE, realm.rd, env.delegated(), 0, 0), RmiStatus.ERROR_INPUT)


@pytest.mark.parametrize(("ripas", "how"), [(RAM, "init_ripas"), (DESTROYED, "rtt_destroy")])
def test_rtt_create_inherits_parent_ripas(env: Env, ripas: RmiRipas, how: str) -> None:
    realm = env.create_realm(40)
    if how == "init_ripas":
        env.init_ripas(realm, 0, L1)  # a level-1 block goes RAM
    else:
        env.create_rtt(realm, 0, 2)
        env.ok(RmiFid.RTT_DESTROY, realm.rd, 0, 2)  # the level-1 entry goes DESTROYED
    assert env.read_entry(realm, 0, 1) == (1, UNASSIGNED, 0, ripas)
    env.create_rtt(realm, 0, 2)
    for ipa in (0, IPA, L1 - L2):
        assert env.read_entry(realm, ipa, 2) == (2, UNASSIGNED, 0, ripas)
    env.create_rtt(realm, IPA, 3)
    assert env.read_entry(realm, IPA + 7 * L3, 3) == (3, UNASSIGNED, 0, ripas)


def test_rtt_create_inherits_unassigned_ns(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.ensure_rtts(realm, ipa, 3)
    assert env.read_entry(realm, ipa, 3) == (3, UNASSIGNED, 0, EMPTY)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, env.m.memory.base | NS_DESC)
    # Protected commands are refused on the unprotected half.
    assert_status(
        env.smc(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, env.delegated(), ipa + L3), RmiStatus.ERROR_INPUT
    )


def test_rtt_create_unfolds_an_assigned_ns_block(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.create_rtt(realm, ipa, 2)
    block = env.ns_granules_aligned(1, L2)
    desc = block | MEMATTR_DEV | S2AP_RO
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 2, desc)
    rtt3 = env.delegated()
    env.ok(RmiFid.RTT_CREATE, realm.rd, rtt3, ipa, 3)
    assert env.read_entry(realm, ipa, 2) == (2, TABLE, rtt3, EMPTY)
    for i in (0, 1, 511):
        assert env.read_entry(realm, ipa + i * L3, 3) == (3, ASSIGNED, desc + i * L3, EMPTY)


def test_rtt_create_on_existing_table_is_error_rtt_parent_level(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    for level in (2, 3):
        rtt = env.delegated()
        base = IPA & ~((L1 if level == 2 else L2) - 1)
        assert_status(env.smc(RmiFid.RTT_CREATE, realm.rd, rtt, base, level), RmiStatus.ERROR_RTT, level - 1)
        assert env.state(rtt) == GranuleState.DELEGATED


def test_rtt_create_missing_parent_is_error_rtt_walk_level(env: Env) -> None:
    realm = env.create_realm(40)
    rtt = env.delegated()
    assert_status(env.smc(RmiFid.RTT_CREATE, realm.rd, rtt, IPA, 3), RmiStatus.ERROR_RTT, 1)
    realm48 = env.create_realm(48)
    assert_status(env.smc(RmiFid.RTT_CREATE, realm48.rd, rtt, IPA, 3), RmiStatus.ERROR_RTT, 0)
    assert_status(env.smc(RmiFid.RTT_CREATE, realm48.rd, rtt, 0, 2), RmiStatus.ERROR_RTT, 0)
    assert env.state(rtt) == GranuleState.DELEGATED


@pytest.mark.parametrize("level", [0, 1, 4, 5, MASK64, 1 << 32])
def test_rtt_create_level_out_of_range(env: Env, level: int) -> None:
    realm = env.create_realm(40)  # structure levels 2..3
    rtt = env.delegated()
    assert_status(env.smc(RmiFid.RTT_CREATE, realm.rd, rtt, 0, level), RmiStatus.ERROR_INPUT)
    assert env.state(rtt) == GranuleState.DELEGATED


def test_rtt_create_bad_ipa(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    rtt = env.delegated()
    for ipa, level in ((L3, 3), (L2 + L3, 3), (L2, 2), (1 << 40, 2), (1 << 41, 3), (MASK64 & ~(L2 - 1), 3)):
        assert_status(env.smc(RmiFid.RTT_CREATE, realm.rd, rtt, ipa, level), RmiStatus.ERROR_INPUT)
    assert env.state(rtt) == GranuleState.DELEGATED


def test_rtt_create_bad_granules(env: Env) -> None:
    realm = env.create_realm(40)
    rec = env.create_rec(realm, runnable=False)
    for rtt in (env.ns_granule(), realm.rd, realm.roots[0], rec.rec, rec.aux[0], env.delegated() + 8):
        before = env.state(rtt)
        assert_status(env.smc(RmiFid.RTT_CREATE, realm.rd, rtt, 0, 2), RmiStatus.ERROR_INPUT)
        assert env.state(rtt) == before
    rtt = env.delegated()
    for rd in (env.delegated(), realm.roots[0], realm.rd + 8):
        assert_status(env.smc(RmiFid.RTT_CREATE, rd, rtt, 0, 2), RmiStatus.ERROR_INPUT)
    assert env.read_entry(realm, 0, 1) == (1, UNASSIGNED, 0, EMPTY)


# --- RTT_DESTROY ------------------------------------------------------------------------
def test_rtt_destroy_protected_parent_becomes_destroyed(env: Env) -> None:
    realm = env.create_realm(40)
    rtt2 = env.create_rtt(realm, 0, 2)
    rtt3 = env.create_rtt(realm, IPA, 3)
    out = env.smc(RmiFid.RTT_DESTROY, realm.rd, IPA, 3)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1] == rtt3
    assert out[2] == L1  # nothing live after it in the level-2 table: that table's end
    assert env.state(rtt3) == GranuleState.DELEGATED
    assert env.realm_mem.read(rtt3, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    assert env.read_entry(realm, IPA, 3) == (2, UNASSIGNED, 0, DESTROYED)
    out = env.ok(RmiFid.RTT_DESTROY, realm.rd, 0, 2)
    assert out[1] == rtt2
    assert env.read_entry(realm, 0, 1) == (1, UNASSIGNED, 0, DESTROYED)


def test_rtt_destroy_top_skips_to_next_live_entry(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    env.create_rtt(realm, IPA, 3)
    env.create_rtt(realm, IPA + 3 * L2, 3)
    out = env.ok(RmiFid.RTT_DESTROY, realm.rd, IPA, 3)
    assert out[2] == IPA + 3 * L2


def test_rtt_destroy_unprotected_parent_becomes_unassigned_ns(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm)
    rtt = env.create_rtt(realm, ipa, 2)
    out = env.ok(RmiFid.RTT_DESTROY, realm.rd, ipa, 2)
    assert out[1] == rtt
    assert env.read_entry(realm, ipa, 1) == (1, UNASSIGNED, 0, EMPTY)
    # Still unprotected: a level-1 NS block can be mapped there.
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 1, env.m.memory.base | NS_DESC)


def test_rtt_destroy_ram_table_is_not_live(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    env.init_ripas(realm, IPA, IPA + L2)
    env.ok(RmiFid.RTT_DESTROY, realm.rd, IPA, 3)
    assert env.read_entry(realm, IPA, 2) == (2, UNASSIGNED, 0, DESTROYED)


def test_rtt_destroy_with_live_entries_is_error_rtt_level(env: Env) -> None:
    realm = env.create_realm(40)
    rtt2, rtt3 = env.ensure_rtts(realm, IPA, 3)
    env.data_create(realm, IPA + 9 * L3, b"live")
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 3)
    # A table entry is live too.
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, 0, 2), RmiStatus.ERROR_RTT, 2)
    assert env.state(rtt2) == env.state(rtt3) == GranuleState.RTT
    # An NS mapping is live.
    ipa = ns_ipa(realm)
    env.ensure_rtts(realm, ipa, 3)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, env.m.memory.base | NS_DESC)
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, ipa, 3), RmiStatus.ERROR_RTT, 3)


def test_rtt_destroy_without_table(env: Env) -> None:
    realm = env.create_realm(40)
    # No level-2 table: the walk to level 1 ends at a non-table entry.
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, 0, 2), RmiStatus.ERROR_RTT, 1)
    # Level-3 table requested but the walk stops at level 1.
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 1)
    env.create_rtt(realm, 0, 2)
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 2)


@pytest.mark.parametrize(
    ("ipa", "level"), [(0, 1), (0, 0), (0, 4), (0, MASK64), (L3, 3), (L2, 2), (1 << 40, 2)]
)
def test_rtt_destroy_bad_arguments(env: Env, ipa: int, level: int) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, 0, 3)
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, ipa, level), RmiStatus.ERROR_INPUT)
    assert env.read_entry(realm, 0, 3)[0] == 3


def test_rtt_destroy_bad_rd(env: Env) -> None:
    realm = env.create_realm(40)
    rtt = env.create_rtt(realm, 0, 2)
    for rd in (env.delegated(), rtt, realm.rd + 8):
        assert_status(env.smc(RmiFid.RTT_DESTROY, rd, 0, 2), RmiStatus.ERROR_INPUT)
    assert env.state(rtt) == GranuleState.RTT


# --- RTT_FOLD ---------------------------------------------------------------------------
@pytest.mark.parametrize("ripas", [EMPTY, RAM, DESTROYED])
def test_rtt_fold_homogeneous_unassigned(env: Env, ripas: RmiRipas) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    if ripas == DESTROYED:
        env.create_rtt(realm, IPA, 3)
        env.ok(RmiFid.RTT_DESTROY, realm.rd, IPA, 3)
    rtt3 = env.create_rtt(realm, IPA, 3)
    if ripas == RAM:
        env.init_ripas(realm, IPA, IPA + L2)
    out = env.smc(RmiFid.RTT_FOLD, realm.rd, IPA, 3)
    assert_status(out, RmiStatus.SUCCESS)
    assert out[1] == rtt3
    assert env.state(rtt3) == GranuleState.DELEGATED
    assert env.realm_mem.read(rtt3, GRANULE_SIZE) == bytes(GRANULE_SIZE)
    assert env.read_entry(realm, IPA, 3) == (2, UNASSIGNED, 0, ripas)


def test_rtt_fold_level2_table_into_root(env: Env) -> None:
    realm = env.create_realm(40)
    rtt2 = env.create_rtt(realm, 0, 2)
    assert env.ok(RmiFid.RTT_FOLD, realm.rd, 0, 2)[1] == rtt2
    assert env.read_entry(realm, 0, 2) == (1, UNASSIGNED, 0, EMPTY)


def test_rtt_fold_unassigned_ns(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.ensure_rtts(realm, ipa, 3)
    env.ok(RmiFid.RTT_FOLD, realm.rd, ipa, 3)
    assert env.read_entry(realm, ipa, 3) == (2, UNASSIGNED, 0, EMPTY)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 2, env.ns_granules_aligned(1, L2) | NS_DESC)


def test_rtt_fold_non_homogeneous_is_error_rtt_level(env: Env) -> None:
    realm = env.create_realm(40)
    _, rtt3 = env.ensure_rtts(realm, IPA, 3)
    env.init_ripas(realm, IPA, IPA + L3)  # one RAM entry among EMPTY ones
    assert_status(env.smc(RmiFid.RTT_FOLD, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 3)
    env.init_ripas(realm, IPA + L3, IPA + L2)  # now all RAM
    env.data_create(realm, IPA + 4 * L3, b"x")  # but one is assigned
    assert_status(env.smc(RmiFid.RTT_FOLD, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 3)
    assert env.state(rtt3) == GranuleState.RTT
    assert env.read_entry(realm, IPA, 2) == (2, TABLE, rtt3, EMPTY)


def test_rtt_fold_contiguous_assigned_block_and_unfold(env: Env) -> None:
    realm = env.create_realm(40)
    _, rtt3 = env.ensure_rtts(realm, IPA, 3)
    block = env.ns_granules_aligned(512, L2)
    src = env.ns_page(b"page")
    for i in range(512):
        pa = block + i * L3
        env.ok(RmiFid.GRANULE_DELEGATE, pa)
        env.ok(RmiFid.DATA_CREATE, realm.rd, pa, IPA + i * L3, src, 0)
    out = env.ok(RmiFid.RTT_FOLD, realm.rd, IPA, 3)
    assert out[1] == rtt3
    assert env.state(rtt3) == GranuleState.DELEGATED
    assert env.read_entry(realm, IPA, 3) == (2, ASSIGNED, block, RAM)
    assert env.state(block) == env.state(block + 511 * L3) == GranuleState.DATA
    # A live block keeps its parent from being destroyed; DATA_DESTROY needs level 3.
    assert_status(env.smc(RmiFid.RTT_DESTROY, realm.rd, 0, 2), RmiStatus.ERROR_RTT, 2)
    assert_status(env.smc(RmiFid.DATA_DESTROY, realm.rd, IPA), RmiStatus.ERROR_RTT, 2)
    # RTT_CREATE splits the block back into pages.
    again = env.create_rtt(realm, IPA, 3)
    assert env.read_entry(realm, IPA, 2) == (2, TABLE, again, EMPTY)
    for i in (0, 1, 300, 511):
        assert env.read_entry(realm, IPA + i * L3, 3) == (3, ASSIGNED, block + i * L3, RAM)
    assert env.ok(RmiFid.DATA_DESTROY, realm.rd, IPA + L3)[1] == block + L3


def test_rtt_fold_unaligned_assigned_pages_is_error(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    block = env.ns_granules_aligned(513, L2) + L3  # contiguous but not 2 MiB aligned
    src = env.ns_page(b"page")
    for i in range(512):
        env.ok(RmiFid.GRANULE_DELEGATE, block + i * L3)
        env.ok(RmiFid.DATA_CREATE, realm.rd, block + i * L3, IPA + i * L3, src, 0)
    assert_status(env.smc(RmiFid.RTT_FOLD, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 3)


def test_rtt_fold_contiguous_ns_block(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    _, rtt3 = env.ensure_rtts(realm, ipa, 3)
    block = env.ns_granules_aligned(512, L2)
    for i in range(512):
        env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa + i * L3, 3, (block + i * L3) | NS_DESC)
    assert env.ok(RmiFid.RTT_FOLD, realm.rd, ipa, 3)[1] == rtt3
    assert env.read_entry(realm, ipa, 3) == (2, ASSIGNED, block | NS_DESC, EMPTY)
    env.ok(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 2)


def test_rtt_fold_errors(env: Env) -> None:
    realm = env.create_realm(40)
    assert_status(env.smc(RmiFid.RTT_FOLD, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 1)  # walk stops at 1
    env.create_rtt(realm, 0, 2)
    assert_status(env.smc(RmiFid.RTT_FOLD, realm.rd, IPA, 3), RmiStatus.ERROR_RTT, 2)  # parent not a table
    for ipa, level in ((IPA, 1), (IPA, 4), (IPA + L3, 3), (1 << 40, 3), (0, MASK64)):
        assert_status(env.smc(RmiFid.RTT_FOLD, realm.rd, ipa, level), RmiStatus.ERROR_INPUT)
    assert_status(env.smc(RmiFid.RTT_FOLD, env.delegated(), 0, 2), RmiStatus.ERROR_INPUT)


# --- RTT_MAP_UNPROTECTED / RTT_UNMAP_UNPROTECTED ----------------------------------------
@pytest.mark.parametrize("level", [1, 2, 3])
def test_map_and_unmap_unprotected(env: Env, level: int) -> None:
    realm = env.create_realm(40)
    size = {1: L1, 2: L2, 3: L3}[level]
    ipa = ns_ipa(realm, 3 * L1 if level == 1 else IPA)
    env.ensure_rtts(realm, ipa, level)
    pa = env.m.memory.base if level == 1 else env.ns_granules_aligned(1, size)
    desc = pa | MEMATTR_DEV | S2AP_RO
    out = env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, level, desc)
    assert_status(out, RmiStatus.SUCCESS)
    assert env.read_entry(realm, ipa, level) == (level, ASSIGNED, desc, EMPTY)
    assert_status(env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, level, desc), RmiStatus.ERROR_RTT, level)
    out = env.smc(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, level)
    assert_status(out, RmiStatus.SUCCESS)
    table_span = size * 512
    assert out[1] == min((ipa // table_span + 1) * table_span, 1 << 40)
    assert env.read_entry(realm, ipa, level) == (level, UNASSIGNED, 0, EMPTY)
    assert_status(env.smc(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, level), RmiStatus.ERROR_RTT, level)


def test_unmap_unprotected_top_is_next_live_entry(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.ensure_rtts(realm, ipa, 3)
    pa = env.ns_granule()
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, pa | NS_DESC)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa + 7 * L3, 3, pa | NS_DESC)
    assert env.ok(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 3)[1] == ipa + 7 * L3


def test_map_unprotected_inside_par_is_error_input(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    pa = env.ns_granule()
    for ipa, level in ((IPA, 3), (0, 2), (realm.par_size - L3, 3), (0, 1)):
        assert_status(
            env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, level, pa | NS_DESC), RmiStatus.ERROR_INPUT
        )
        assert_status(env.smc(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, level), RmiStatus.ERROR_INPUT)
    assert env.read_entry(realm, IPA, 3) == (3, UNASSIGNED, 0, EMPTY)


@pytest.mark.parametrize(
    "extra",
    [
        0b01,  # valid bit: the RMM makes the descriptor itself
        0b11,
        1 << 8,  # SH
        1 << 10,  # AF
        1 << 11,
        1 << 48,  # OA beyond 48 bits
        1 << 51,
        1 << 52,  # contiguous
        1 << 54,  # XN
        1 << 55,  # NS
        1 << 63,
        (0b0100 << 2) - MEMATTR_WB,  # reserved MemAttr 0b0100
        1 << 9,  # SH[1]
    ],
)
def test_map_unprotected_bad_desc(env: Env, extra: int) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.ensure_rtts(realm, ipa, 3)
    desc = (env.ns_granule() | NS_DESC) + extra
    assert_status(env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, desc), RmiStatus.ERROR_INPUT)
    assert env.read_entry(realm, ipa, 3) == (3, UNASSIGNED, 0, EMPTY)


def test_map_unprotected_block_needs_aligned_output(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.create_rtt(realm, ipa, 2)
    pa = env.ns_granules_aligned(2, L2) + L3
    assert_status(env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 2, pa | NS_DESC), RmiStatus.ERROR_INPUT)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 2, (pa - L3) | NS_DESC)


def test_map_unprotected_other_errors(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    desc = env.ns_granule() | NS_DESC
    # No tables yet: the walk stops at the root level.
    assert_status(env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, desc), RmiStatus.ERROR_RTT, 1)
    assert_status(env.smc(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 3), RmiStatus.ERROR_RTT, 1)
    env.create_rtt(realm, ipa, 2)
    assert_status(env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, desc), RmiStatus.ERROR_RTT, 2)
    # Map commands take levels 1..3, addresses aligned to the level and below 2^s2sz.
    for i, level in (
        (ipa, 0),
        (ipa, 4),
        (ipa + L3, 2),
        (ipa + 8, 3),
        (1 << 40, 3),
        (1 << 63, 3),
        (ipa, MASK64),
    ):
        assert_status(env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, i, level, desc), RmiStatus.ERROR_INPUT)
        assert_status(env.smc(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, i, level), RmiStatus.ERROR_INPUT)
    for rd in (env.delegated(), realm.roots[1], realm.rd + 8):
        assert_status(
            env.smc(RmiFid.RTT_MAP_UNPROTECTED, rd, ipa, 2, env.m.memory.base | NS_DESC),
            RmiStatus.ERROR_INPUT,
        )
        assert_status(env.smc(RmiFid.RTT_UNMAP_UNPROTECTED, rd, ipa, 2), RmiStatus.ERROR_INPUT)
    # A table where a mapping was asked for: ERROR_RTT at the requested level.
    env.create_rtt(realm, ipa, 3)
    assert_status(
        env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 2, env.m.memory.base | NS_DESC),
        RmiStatus.ERROR_RTT,
        2,
    )
    assert_status(env.smc(RmiFid.RTT_UNMAP_UNPROTECTED, realm.rd, ipa, 2), RmiStatus.ERROR_RTT, 2)


def test_map_unprotected_in_32bit_realm(env: Env) -> None:
    """Root at level 2 with 4 concatenated tables: the unprotected half is in roots 2 and 3."""
    realm = env.create_realm(32)
    par = realm.par_size
    pa = env.ns_granules_aligned(1, L2)
    for ipa in (par, (1 << 32) - L2):
        env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 2, pa | NS_DESC)
        assert env.read_entry(realm, ipa, 2) == (2, ASSIGNED, pa | NS_DESC, EMPTY)
    assert_status(
        env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, par - L2, 2, pa | NS_DESC), RmiStatus.ERROR_INPUT
    )
    # Level 1 is above this realm's root: a map at level 1 is out of range.
    assert_status(env.smc(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, 0, 1, pa | NS_DESC), RmiStatus.ERROR_INPUT)


# --- RTT_READ_ENTRY ---------------------------------------------------------------------
def test_read_entry_reports_walk_level_and_tables(env: Env) -> None:
    realm = env.create_realm(40)
    assert env.read_entry(realm, 0, 1) == (1, UNASSIGNED, 0, EMPTY)
    assert env.read_entry(realm, IPA, 2) == (1, UNASSIGNED, 0, EMPTY)
    assert env.read_entry(realm, IPA, 3) == (1, UNASSIGNED, 0, EMPTY)
    rtt2, rtt3 = env.ensure_rtts(realm, IPA, 3)
    assert env.read_entry(realm, 0, 1) == (1, TABLE, rtt2, EMPTY)
    assert env.read_entry(realm, IPA, 2) == (2, TABLE, rtt3, EMPTY)
    data = env.delegated()
    env.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, data, IPA)
    assert env.read_entry(realm, IPA, 3) == (3, ASSIGNED, data, EMPTY)  # ASSIGNED-EMPTY shows the PA


def test_read_entry_bad_arguments(env: Env) -> None:
    realm = env.create_realm(40)  # levels 1..3
    for ipa, level in ((0, 0), (0, 4), (0, MASK64), (L3, 2), (L2 + 8, 3), (1 << 40, 1), (1 << 63, 3)):
        assert_status(env.smc(RmiFid.RTT_READ_ENTRY, realm.rd, ipa, level), RmiStatus.ERROR_INPUT)
    for rd in (env.delegated(), realm.roots[0], env.ns_granule(), 0):
        assert_status(env.smc(RmiFid.RTT_READ_ENTRY, rd, 0, 1), RmiStatus.ERROR_INPUT)
    realm48 = env.create_realm(48)
    assert env.read_entry(realm48, 0, 0) == (0, UNASSIGNED, 0, EMPTY)
    assert env.read_entry(realm48, (1 << 48) - (1 << 39), 0) == (0, UNASSIGNED, 0, EMPTY)


def test_stage2_walk_memo_lives_one_rmi_call_and_no_rtt_write(env: Env) -> None:
    """The RMM reuses its last stage-2 walk (an MMIO exit asks about one IPA twice in one
    REC_ENTER), but never across an RTT write or past the RMI call that made it: a change
    the RMM makes shows at once, and one made outside it (the root world writing an RTT
    granule) shows from the next RMI call on."""
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.ensure_rtts(realm, ipa, 3)
    stage2 = env.rmm.realms[realm.rd].stage2
    first = stage2.walk(ipa)
    assert stage2.walk(ipa) is first and stage2.walk(ipa + 8) is first
    assert stage2.walk(ipa, 2) is not first  # another target level is another walk
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, env.ns_granule() | NS_DESC)
    mapped = stage2.walk(ipa)
    assert mapped.raw != first.raw and mapped.entry_pa == first.entry_pa
    env.m.memory.accessor(World.ROOT).write_u64(mapped.entry_pa, first.raw)
    assert stage2.walk(ipa) is mapped  # still inside the same "call": nothing told the RMM
    env.smc(RmiFid.VERSION, 0x10000)
    assert stage2.walk(ipa).raw == first.raw
    stage2.write(mapped.rtt, mapped.index, mapped.entry, 3)
    assert stage2.walk(ipa).raw == mapped.raw
