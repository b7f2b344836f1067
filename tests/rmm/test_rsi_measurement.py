"""RSI_VERSION, RSI_FEATURES, RSI_MEASUREMENT_READ and RSI_MEASUREMENT_EXTEND (digest §1.2-§1.4, §4.4)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from unirealm.arch.rsi import RsiFid, RsiStatus

from .rsi_support import ScriptedRealm, build_realm, le_regs, regs_le, run_calls

MASK64 = (1 << 64) - 1
SMCCC_NOT_SUPPORTED = MASK64


@pytest.fixture
def realm(tmp_path: Path) -> ScriptedRealm:
    return build_realm(tmp_path)


@pytest.fixture
def realm512(tmp_path: Path) -> ScriptedRealm:
    return build_realm(tmp_path, hash_algo=1)


# --- RSI_VERSION / RSI_FEATURES ----------------------------------------------------------
def test_version_1_0_is_supported(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [[RsiFid.VERSION, 0x1_0000]])
    assert out[0] == RsiStatus.SUCCESS
    assert out[1] == 0x1_0000  # lower = the request
    assert out[2] == 0x1_0000  # higher = highest supported


@pytest.mark.parametrize("req", [0x2_0000, 0x0_0001, 0x1_0001, 0x8000_0000])
def test_version_unsupported_is_error_input(realm: ScriptedRealm, req: int) -> None:
    (out,) = run_calls(realm, [[RsiFid.VERSION, req]])
    assert out[0] == RsiStatus.ERROR_INPUT
    assert out[2] == 0x1_0000


@pytest.mark.parametrize("index", [0, 1, 7, MASK64])
def test_features_are_all_zero_in_1_0(realm: ScriptedRealm, index: int) -> None:
    (out,) = run_calls(realm, [[RsiFid.FEATURES, index, 0xAAAA]])
    assert out[0] == RsiStatus.SUCCESS
    assert out[1] == 0
    assert out[2] == 0xAAAA  # registers the command does not define keep their values


def test_unknown_rsi_fid_is_smccc_not_supported(realm: ScriptedRealm) -> None:
    out = run_calls(realm, [[0xC400_019A, 1, 2], [0xC400_01AF]])
    assert out[0][0] == SMCCC_NOT_SUPPORTED
    assert out[0][1:3] == [1, 2]
    assert out[1][0] == SMCCC_NOT_SUPPORTED


def test_sve_hint_bit_is_ignored(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [[RsiFid.VERSION | (1 << 16), 0x1_0000]])
    assert out[0] == RsiStatus.SUCCESS
    assert out[1:3] == [0x1_0000, 0x1_0000]


# --- RSI_MEASUREMENT_READ ----------------------------------------------------------------
def test_read_rim_returns_the_realm_rim_little_endian(realm: ScriptedRealm) -> None:
    (out,) = run_calls(realm, [[RsiFid.MEASUREMENT_READ, 0]])
    assert out[0] == RsiStatus.SUCCESS
    value = regs_le(out[1:9])
    assert value[:32] == realm.realm.rim[:32]
    assert value[:32] != bytes(32)
    assert value[32:] == bytes(32)  # SHA-256: the upper half of the slot stays zero


@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_read_fresh_rem_is_zero(realm: ScriptedRealm, index: int) -> None:
    (out,) = run_calls(realm, [[RsiFid.MEASUREMENT_READ, index, *[0x55] * 8]])
    assert out[0] == RsiStatus.SUCCESS
    assert out[1:9] == [0] * 8


@pytest.mark.parametrize("index", [5, 6, 0x100, MASK64])
def test_read_index_above_4_is_error_input(realm: ScriptedRealm, index: int) -> None:
    (out,) = run_calls(realm, [[RsiFid.MEASUREMENT_READ, index]])
    assert out[0] == RsiStatus.ERROR_INPUT


# --- RSI_MEASUREMENT_EXTEND --------------------------------------------------------------
def extend_call(index: int, value: bytes, size: int | None = None) -> list[int]:
    return [RsiFid.MEASUREMENT_EXTEND, index, len(value) if size is None else size, *le_regs(value)]


@pytest.mark.parametrize(
    ("index", "size"),
    [(0, 32), (5, 32), (MASK64, 32), (1, 65), (2, 0x1000), (4, MASK64)],
)
def test_extend_bad_input_is_error_input_and_changes_nothing(realm: ScriptedRealm, index: int, size: int) -> None:
    before = list(realm.realm.measurements)
    out = run_calls(realm, [extend_call(index, b"\x11" * 64, size), [RsiFid.MEASUREMENT_READ, 1]])
    assert out[0][0] == RsiStatus.ERROR_INPUT
    assert realm.realm.measurements == before
    assert out[1][1:9] == [0] * 8


@pytest.mark.parametrize(("fixture", "hashfn"), [("realm", hashlib.sha256), ("realm512", hashlib.sha512)])
def test_extend_chains_and_read_returns_it(request: pytest.FixtureRequest, fixture: str, hashfn) -> None:  # type: ignore[no-untyped-def]
    realm: ScriptedRealm = request.getfixturevalue(fixture)
    hlen = hashfn().digest_size
    a = bytes(range(1, 65))
    b = b"\xfe" * 17
    out = run_calls(
        realm,
        [
            extend_call(1, a),  # 64 bytes
            extend_call(1, b),  # 17 bytes: no padding of the value
            extend_call(4, b"", 0),  # size 0 is accepted (TF-RMM)
            extend_call(3, a, 5),  # only the first `size` bytes count
            [RsiFid.MEASUREMENT_READ, 1],
            [RsiFid.MEASUREMENT_READ, 2],
            [RsiFid.MEASUREMENT_READ, 3],
            [RsiFid.MEASUREMENT_READ, 4],
        ],
    )
    assert [o[0] for o in out] == [RsiStatus.SUCCESS] * 8
    zero = bytes(hlen)
    rem0 = hashfn(hashfn(zero + a).digest() + b).digest()
    rem2 = hashfn(zero + a[:5]).digest()
    rem3 = hashfn(zero).digest()
    assert regs_le(out[4][1:9]) == rem0.ljust(64, b"\0")
    assert regs_le(out[5][1:9]) == bytes(64)
    assert regs_le(out[6][1:9]) == rem2.ljust(64, b"\0")
    assert regs_le(out[7][1:9]) == rem3.ljust(64, b"\0")


def test_extend_does_not_touch_the_rim(realm: ScriptedRealm) -> None:
    rim = realm.realm.rim
    out = run_calls(realm, [extend_call(1, b"abc"), [RsiFid.MEASUREMENT_READ, 0]])
    assert out[0][0] == RsiStatus.SUCCESS
    assert regs_le(out[1][1:9]) == rim
