"""The Realm Initial Measurement through real RMI calls (digest §4, §6.1).

The expected values are computed here from the descriptor layouts of digest §4.2/§4.3 with
struct and hashlib only.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import pytest

from unirealm.arch.rmi import RMI_REC_PARAMS, RmiFid

from .conftest import L2, L3, RSI_MEASUREMENT_READ, Env, RealmHandle

RIM_SHA256_PARAMS_ONLY = "6739dfb22b75ee1268d08dfa8369f501bc0b066243553f069f560d1fa1172973"
RIM_SHA512_PARAMS_ONLY = (
    "799e434048fb57eb9d4f0e2a2b98158720377252deab2bdfcd69b5a8f82237f4"
    "34bd6bb1c75bf160a2d49382f733b3439a3ff769e4ea5dd9a6f72239d44bbbab"
)


# --- an independent model of the RIM --------------------------------------------------------
def digest(algo: int, data: bytes) -> bytes:
    return (hashlib.sha256 if algo == 0 else hashlib.sha512)(data).digest()


def slot(value: bytes) -> bytes:
    return value.ljust(64, b"\0")


class Rim:
    def __init__(
        self,
        algo: int,
        flags: int = 0,
        s2sz: int = 40,
        sve_vl: int = 0,
        bps: int = 1,
        wps: int = 1,
        pmu: int = 0,
    ) -> None:
        self.algo = algo
        page = bytearray(4096)
        struct.pack_into("<Q", page, 0x00, flags)
        for offset, value in (
            (0x08, s2sz),
            (0x10, sve_vl),
            (0x18, bps),
            (0x20, wps),
            (0x28, pmu),
            (0x30, algo),
        ):
            page[offset] = value
        self.value = digest(algo, bytes(page))

    def _extend(self, descriptor: bytes) -> None:
        assert len(descriptor) <= 0x100
        self.value = digest(self.algo, descriptor.ljust(0x100, b"\0"))

    def data(self, ipa: int, content: bytes | None) -> None:
        flags = 0 if content is None else 1
        content_hash = bytes(64) if content is None else slot(digest(self.algo, content.ljust(4096, b"\0")))
        self._extend(struct.pack("<B7xQ64sQQ64s", 0, 0x100, slot(self.value), ipa, flags, content_hash))

    def ripas(self, base: int, top: int, size: int) -> None:
        for addr in range(base, top, size):
            self._extend(struct.pack("<B7xQ64sQQ", 2, 0x100, slot(self.value), addr, addr + size))

    def rec(self, flags: int, pc: int, gprs: Sequence[int]) -> None:
        page = bytearray(4096)
        struct.pack_into("<Q", page, 0x000, flags)
        struct.pack_into("<Q", page, 0x200, pc)
        struct.pack_into("<8Q", page, 0x300, *(list(gprs) + [0] * (8 - len(gprs))))
        self._extend(
            struct.pack("<B7xQ64s64s", 1, 0x100, slot(self.value), slot(digest(self.algo, bytes(page))))
        )

    @property
    def slot(self) -> bytes:
        return slot(self.value)


def rim_of(env: Env, realm: RealmHandle) -> bytes:
    return env.realm(realm).rim


# --- digest §6.1 --------------------------------------------------------------------------
@pytest.mark.parametrize(("algo", "expected"), [(0, RIM_SHA256_PARAMS_ONLY), (1, RIM_SHA512_PARAMS_ONLY)])
def test_rim_of_params_only_realm_matches_vector(env: Env, algo: int, expected: str) -> None:
    realm = env.create_realm(48, hash_algo=algo, num_bps=1, num_wps=1, rtt_level_start=0, rtt_num_start=1)
    assert rim_of(env, realm) == bytes.fromhex(expected).ljust(64, b"\0")
    assert Rim(algo, s2sz=48).value.hex() == expected  # the model agrees with the vector


def test_rim_read_by_the_realm(env: Env) -> None:
    """RSI_MEASUREMENT_READ(0) returns the RIM slot, little-endian in X1..X8."""
    realm = env.create_realm(48, hash_algo=0)
    rec = env.create_rec(realm, runnable=True, pc=0x100)
    expected = Rim(0, s2sz=48)
    expected.rec(1, 0x100, [])
    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    rec.engine.push([RSI_MEASUREMENT_READ, 0])
    rec.engine.idle_wfi = True
    env.enter(rec)
    out = rec.engine.log[0].out
    assert out is not None and out[0] == 0
    assert b"".join(v.to_bytes(8, "little") for v in out[1:9]) == expected.slot


def test_unmeasured_params_do_not_change_the_rim(env: Env) -> None:
    a = env.create_realm(40, rpv=b"\x01" * 64)
    b = env.create_realm(40, rpv=b"\x02" * 64)
    assert rim_of(env, a) == rim_of(env, b) == Rim(0).slot  # RPV, VMID and RTT base are not measured
    c = env.create_realm(40, num_bps=2)
    assert rim_of(env, c) == Rim(0, bps=2).slot != rim_of(env, a)
    d = env.create_realm(32)
    assert rim_of(env, d) == Rim(0, s2sz=32).slot


# --- a full build sequence ------------------------------------------------------------------
@pytest.mark.parametrize("algo", [0, 1])
def test_rim_of_a_build_sequence(env: Env, algo: int) -> None:
    realm = env.create_realm(40, hash_algo=algo)
    model = Rim(algo)
    assert rim_of(env, realm) == model.slot

    env.create_rtt(realm, 0, 2)
    env.create_rtt(realm, 0, 3)
    assert rim_of(env, realm) == model.slot  # RTT structure alone is not measured

    # INIT_RIPAS: pages in the level-3 table, blocks at level 2.
    assert env.init_ripas(realm, 0, 16 * L3) == 16 * L3
    model.ripas(0, 16 * L3, L3)
    assert rim_of(env, realm) == model.slot
    assert env.init_ripas(realm, L2, 3 * L2) == 3 * L2
    model.ripas(L2, 3 * L2, L2)
    assert rim_of(env, realm) == model.slot

    # DATA_CREATE measured, then unmeasured.
    kernel = bytes(range(256)) * 16
    env.data_create(realm, 0, kernel, measured=True)
    model.data(0, kernel)
    assert rim_of(env, realm) == model.slot
    env.data_create(realm, L3, b"unmeasured", measured=False)
    model.data(L3, None)
    assert rim_of(env, realm) == model.slot
    # DATA_CREATE_UNKNOWN is not measured.
    env.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, env.delegated(), 2 * L3)
    assert rim_of(env, realm) == model.slot

    # A runnable REC is measured (flags, pc, gprs), a non-runnable one is not.
    gprs = [0x4800_0000, 0, 0, 0, 0, 0, 0, 0x77]
    env.create_rec(realm, runnable=True, pc=0x8_0000, gprs=gprs)
    model.rec(1, 0x8_0000, gprs)
    assert rim_of(env, realm) == model.slot
    env.create_rec(realm, runnable=False, pc=0x9_0000, gprs=[1, 2, 3])
    assert rim_of(env, realm) == model.slot

    env.ok(RmiFid.REALM_ACTIVATE, realm.rd)
    frozen = rim_of(env, realm)
    assert frozen == model.slot
    if algo == 0:
        assert frozen[32:] == bytes(32)

    # Nothing after ACTIVATE reaches the RIM.
    env.ok(RmiFid.DATA_CREATE_UNKNOWN, realm.rd, env.delegated(), 3 * L3)
    env.ok(RmiFid.DATA_DESTROY, realm.rd, 0)
    env.create_rtt(realm, L2, 3)
    assert env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, 3 * L2, 4 * L2)[0] != 0
    assert env.smc(RmiFid.DATA_CREATE, realm.rd, env.delegated(), 4 * L3, env.ns_page(b"x"), 1)[0] != 0
    rec = realm.recs[0]
    rec.engine.idle_wfi = True
    env.enter(rec)
    assert rim_of(env, realm) == frozen


def test_rtt_layout_changes_the_rim(env: Env) -> None:
    """The same RAM range gives one descriptor per 2 MiB block at level 2, one per 4 KiB page
    with a level-3 table (digest §4.3 step 2)."""
    blocks = env.create_realm(40)
    env.create_rtt(blocks, 0, 2)
    assert env.init_ripas(blocks, L2, 2 * L2) == 2 * L2

    pages = env.create_realm(40)
    env.create_rtt(pages, 0, 2)
    env.create_rtt(pages, L2, 3)
    assert env.init_ripas(pages, L2, 2 * L2) == 2 * L2

    by_block, by_page = Rim(0), Rim(0)
    by_block.ripas(L2, 2 * L2, L2)
    by_page.ripas(L2, 2 * L2, L3)
    assert rim_of(env, blocks) == by_block.slot
    assert rim_of(env, pages) == by_page.slot
    assert rim_of(env, blocks) != rim_of(env, pages)
    # The RIPAS outcome is the same either way.
    assert env.read_entry(blocks, L2 + 5 * L3, 3)[3] == env.read_entry(pages, L2 + 5 * L3, 3)[3] == 1


def test_rim_counts_each_converted_or_accepted_entry(env: Env) -> None:
    realm = env.create_realm(40)
    env.create_rtt(realm, 0, 2)
    model = Rim(0)
    env.init_ripas(realm, 0, 2 * L2)
    model.ripas(0, 2 * L2, L2)
    # Already RAM: accepted and measured again, the stop is at top.
    env.init_ripas(realm, L2, 3 * L2)
    model.ripas(L2, 3 * L2, L2)
    assert rim_of(env, realm) == model.slot
    # A failed INIT_RIPAS measures nothing.
    assert env.smc(RmiFid.RTT_INIT_RIPAS, realm.rd, L2 + L3, 3 * L2)[0] != 0
    assert rim_of(env, realm) == model.slot


def test_rec_measurement_ignores_unmeasured_rec_params(env: Env) -> None:
    """mpidr, num_rec_aux and aux are not part of the measured RmiRecParams page."""
    a = env.create_realm(40)
    b = env.create_realm(40)
    env.create_rec(a, runnable=False)
    env.create_rec(a, runnable=True, pc=0x1000, gprs=[5])  # index 1: MPIDR 1
    env.create_rec(b, runnable=True, pc=0x1000, gprs=[5])  # index 0: MPIDR 0
    assert rim_of(env, a) == rim_of(env, b)
    model = Rim(0)
    model.rec(1, 0x1000, [5])
    assert rim_of(env, a) == model.slot
    assert RMI_REC_PARAMS.size == 4096
