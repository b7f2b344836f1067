"""The RMM's stage-2 translation (rmm/state.py stage2_translate), what every realm access
goes through: page, block and folded mappings give the PA of the byte's own granule, in the
world of the entry; unprotected entries carry their S2AP permissions and are never
executable; IPA 0 is an IPA like any other; nothing outside the IPA space, unassigned or not
RIPAS RAM is mapped."""

from __future__ import annotations

import pytest

from unirealm.arch.memory import GRANULE_SIZE, World
from unirealm.arch.rmi import RmiFid

from .conftest import L1, L2, L3, Env
from .test_rmi_rtt import IPA, MEMATTR_WB, NS_DESC, S2AP_RO, ns_ipa


def translate(env: Env, realm, ipa: int):  # type: ignore[no-untyped-def]
    return env.rmm.stage2_translate(env.realm(realm), ipa)


def test_data_at_ipa_zero_is_mapped(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, 0, 3)
    data = env.delegated()
    env.ok(RmiFid.DATA_CREATE, realm.rd, data, 0, env.ns_page(b"zero"), 0)
    m = translate(env, realm, 0)
    assert m is not None and m.pa == data and m.world == World.REALM
    assert translate(env, realm, 0xFFF).pa == data  # the page offset is the caller's
    assert translate(env, realm, GRANULE_SIZE) is None  # the next page has no data


@pytest.mark.parametrize("level", [1, 2, 3])
def test_unprotected_mapping_at_each_level(env: Env, level: int) -> None:
    realm = env.create_realm(40)
    size = {1: L1, 2: L2, 3: L3}[level]
    ipa = ns_ipa(realm, 3 * L1 if level == 1 else IPA)
    env.ensure_rtts(realm, ipa, level)
    pa = env.m.memory.base if level == 1 else env.ns_granules_aligned(1, size)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, level, pa | NS_DESC)
    for off in sorted({0, min(GRANULE_SIZE, size - GRANULE_SIZE), size - GRANULE_SIZE}):
        m = translate(env, realm, ipa + off + 0x10)
        assert m is not None and m.pa == pa + off, (level, off)
        assert m.world == World.NON_SECURE and m.readable and m.writable and not m.executable
    assert translate(env, realm, ipa + size) is None


def test_read_only_unprotected_mapping(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.ensure_rtts(realm, ipa, 3)
    pa = env.ns_granule()
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, pa | MEMATTR_WB | S2AP_RO)
    m = translate(env, realm, ipa)
    assert m is not None and m.readable and not m.writable


def test_folded_block_translates_each_page(env: Env) -> None:
    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    block = env.ns_granules_aligned(512, L2)
    src = env.ns_page(b"page")
    for i in range(512):
        env.ok(RmiFid.GRANULE_DELEGATE, block + i * L3)
        env.ok(RmiFid.DATA_CREATE, realm.rd, block + i * L3, IPA + i * L3, src, 0)
    env.ok(RmiFid.RTT_FOLD, realm.rd, IPA, 3)
    for i in (0, 1, 300, 511):
        m = translate(env, realm, IPA + i * L3 + 8)
        assert m is not None and m.pa == block + i * L3 and m.world == World.REALM


def test_outside_the_ipa_space_or_unmapped_is_none(env: Env) -> None:
    realm = env.create_realm(40)
    for ipa in (-GRANULE_SIZE, 1 << 40, (1 << 40) + IPA, IPA, ns_ipa(realm, IPA)):
        assert translate(env, realm, ipa) is None
    env.ensure_rtts(realm, IPA, 3)
    env.ok(RmiFid.RTT_INIT_RIPAS, realm.rd, IPA, IPA + GRANULE_SIZE)  # RIPAS RAM, but no data
    assert translate(env, realm, IPA) is None


def test_write_only_unprotected_mapping(env: Env) -> None:
    realm = env.create_realm(40)
    ipa = ns_ipa(realm, IPA)
    env.ensure_rtts(realm, ipa, 3)
    env.ok(RmiFid.RTT_MAP_UNPROTECTED, realm.rd, ipa, 3, env.ns_granule() | MEMATTR_WB | (0b10 << 6))
    m = translate(env, realm, ipa)
    assert m is not None and not m.readable and m.writable


def test_the_default_engine_is_a_trapping_realm_cpu_over_this_translation(env: Env) -> None:
    from unirealm.rmm.state import default_engine

    realm = env.create_realm(40)
    env.ensure_rtts(realm, IPA, 3)
    data = env.delegated()
    env.ok(RmiFid.DATA_CREATE, realm.rd, data, IPA, env.ns_page(b"x"), 0)
    cpu = default_engine(env.rmm, env.realm(realm), 0)
    assert cpu.context.world == World.REALM
    assert cpu.context.trap_id_registers is True and cpu.context.trap_sve is True
    assert cpu.cpu_model == env.rmm.config.cpu_model
    assert cpu.translate(IPA + 0x10, False, False) == translate(env, realm, IPA + 0x10)
    assert cpu.translate(IPA, False, False).pa == data
