"""The challenge checks compare every byte: the RAK binding, the realm challenge and a bare
platform token's nonce each fail on a difference in any one byte, the last included, and on
a challenge one byte short or long (no vectors needed: claims built here)."""

from __future__ import annotations

import hashlib

import pytest
from attest_vectors import signed
from cryptography.hazmat.primitives.asymmetric import ec

from unirealm.arch import token as t
from unirealm.attest.keys import sec1_point
from unirealm.attest.verify import check_binding, decode_token, verify_token

RAK = ec.generate_private_key(ec.SECP384R1())
CPAK = ec.generate_private_key(ec.SECP256R1())


def _realm(algo: str) -> dict[int, object]:
    return {t.REALM_PUBLIC_KEY_HASH_ALGO_ID: algo, t.REALM_PUBLIC_KEY: sec1_point(RAK.public_key())}


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


@pytest.mark.parametrize("algo", ["sha-256", "sha-512"])
def test_binding_compares_every_byte(algo: str) -> None:
    realm = _realm(algo)
    binding = hashlib.new(algo.replace("-", ""), realm[t.REALM_PUBLIC_KEY]).digest()  # type: ignore[arg-type]
    assert check_binding({t.PLATFORM_CHALLENGE: binding}, realm) is None
    for i in (0, len(binding) // 2, len(binding) - 1):
        problem = check_binding({t.PLATFORM_CHALLENGE: _flip(binding, i)}, realm)
        assert problem is not None and problem.claim == "cca-platform-challenge"
        assert f"byte {i} is" in problem.reason
    for wrong in (binding[:-1], binding + b"\0", binding[: len(binding) // 2]):
        problem = check_binding({t.PLATFORM_CHALLENGE: wrong}, realm)
        assert problem is not None and problem.claim == "cca-platform-challenge"


def test_bare_platform_nonce_compares_every_byte() -> None:
    nonce = bytes(range(1, 33))
    token = decode_token(signed({t.PLATFORM_CHALLENGE: nonce, t.PLATFORM_PROFILE: t.PROFILE_PLATFORM_1_0}, CPAK))
    assert token.realm is None
    ok = verify_token(token, CPAK.public_key(), challenge=nonce)
    assert "cca-platform-challenge" not in [p.claim for p in ok.problems]
    for wrong in (_flip(nonce, 31), _flip(nonce, 0), nonce[:-1], nonce + b"\0"):
        result = verify_token(token, CPAK.public_key(), challenge=wrong)
        assert "cca-platform-challenge" in [p.claim for p in result.problems]


def test_realm_challenge_compares_every_byte() -> None:
    from attest_vectors import build_token

    from unirealm.attest.verify import rak_binding

    realm = _realm("sha-256") | {t.REALM_CHALLENGE: bytes(range(64))}
    token = build_token({t.PLATFORM_CHALLENGE: rak_binding(realm)}, realm, CPAK, RAK)
    claims = lambda c: [p.claim for p in verify_token(token, CPAK.public_key(), challenge=c).problems]  # noqa: E731
    assert "cca-realm-challenge" not in claims(bytes(range(64)))
    for wrong in (_flip(bytes(range(64)), 63), _flip(bytes(range(64)), 0), bytes(range(63))):
        assert "cca-realm-challenge" in claims(wrong)
