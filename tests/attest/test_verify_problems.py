"""What verify_token and decode_token say, word for word, for each way a token is wrong
(claims built here, no vectors needed): the claim each problem names and its reason, the
token's format, and which half of a collection a format error is in."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from attest_vectors import build_token, signed
from cryptography.hazmat.primitives.asymmetric import ec

from unirealm.arch import token as t
from unirealm.attest.claims import Problem
from unirealm.attest.keys import sec1_point
from unirealm.attest.verify import (
    TokenFormat,
    TokenFormatError,
    check_binding,
    decode_token,
    rak_binding,
    verify_token,
)

RAK = ec.generate_private_key(ec.SECP384R1())
CPAK = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def realm_claims(algo: str = "sha-256") -> dict[int, object]:
    """A complete legacy realm claim set (no profile: a raw SEC1 RAK)."""
    return {t.REALM_PUBLIC_KEY_HASH_ALGO_ID: algo, t.REALM_PUBLIC_KEY: sec1_point(RAK.public_key()),
            t.REALM_CHALLENGE: bytes(64), t.REALM_PERSONALIZATION_VALUE: bytes(64),
            t.REALM_INITIAL_MEASUREMENT: bytes(32), t.REALM_EXTENSIBLE_MEASUREMENTS: [bytes(32)] * 4,
            t.REALM_HASH_ALGO_ID: "sha-256"}


def platform_claims(challenge: bytes | None) -> dict[int, object]:
    return {t.PLATFORM_PROFILE: t.PROFILE_PLATFORM_1_0, t.PLATFORM_IMPLEMENTATION_ID: bytes(32),
            t.PLATFORM_INSTANCE_ID: b"\x01" + bytes(32), t.PLATFORM_CONFIG: b"", t.PLATFORM_LIFECYCLE: 0x3000,
            t.PLATFORM_SW_COMPONENTS: [{t.SWC_MEASUREMENT_VALUE: bytes(32), t.SWC_SIGNER_ID: bytes(32)}],
            t.PLATFORM_HASH_ALGO_ID: "sha-256", t.PLATFORM_CHALLENGE: challenge}


def token(tag: int = t.TAG_CMW_COLLECTION, realm: dict[int, object] | None = None,
          rak: ec.EllipticCurvePrivateKey = RAK) -> bytes:
    realm = realm_claims() if realm is None else realm
    return build_token(platform_claims(rak_binding(realm)), realm, CPAK, rak, tag)


def problems(data: bytes, key: ec.EllipticCurvePublicKey | None = None, **kw: object) -> list[Problem]:
    return verify_token(data, key or CPAK.public_key(), **kw).problems  # type: ignore[arg-type]


# --- the binding ------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", [None, 7, "md5", "sha-3"])
def test_binding_with_an_unknown_hash_names_the_algorithm_claim(algo: object) -> None:
    realm = realm_claims() | {t.REALM_PUBLIC_KEY_HASH_ALGO_ID: algo}
    assert check_binding({t.PLATFORM_CHALLENGE: bytes(32)}, realm) == Problem(
        "cca-realm-public-key-hash-algo-id", f"cannot compute the binding with {algo!r}")


@pytest.mark.parametrize(("rak", "challenge"), [(None, bytes(32)), ("text", bytes(32)), (b"rak", None), (b"rak", "x")])
def test_binding_from_malformed_claims(rak: object, challenge: object) -> None:
    realm = {t.REALM_PUBLIC_KEY_HASH_ALGO_ID: "sha-256", t.REALM_PUBLIC_KEY: rak}
    assert check_binding({t.PLATFORM_CHALLENGE: challenge}, realm) == Problem(
        "cca-platform-challenge", "binding cannot be computed from malformed claims")


@pytest.mark.parametrize(("algo", "digest"), [("sha-256", hashlib.sha256), ("sha-384", hashlib.sha384),
                                              ("sha-512", hashlib.sha512)])
def test_rak_binding_is_the_named_hash(algo: str, digest: object) -> None:
    realm = realm_claims(algo)
    assert rak_binding(realm) == digest(realm[t.REALM_PUBLIC_KEY]).digest()  # type: ignore[operator]
    assert rak_binding(realm | {t.REALM_PUBLIC_KEY: None}) is None
    assert rak_binding(realm | {t.REALM_PUBLIC_KEY_HASH_ALGO_ID: "md5"}) is None
    assert rak_binding(realm | {t.REALM_PUBLIC_KEY_HASH_ALGO_ID: 1}) is None


def test_a_realm_token_not_bound_to_its_platform_token_fails() -> None:
    realm = realm_claims()
    data = build_token(platform_claims(bytes(32)), realm, CPAK, RAK)
    assert [p.claim for p in problems(data)] == ["cca-platform-challenge"]


# --- signatures -------------------------------------------------------------------------------
def test_a_good_token_verifies() -> None:
    assert problems(token()) == []
    assert problems(token(), challenge=bytes(64)) == []


def test_the_platform_signature_is_checked_with_the_cpak() -> None:
    (problem,) = problems(token(), OTHER.public_key())
    assert problem.claim == "cca-platform-token"
    assert problem.reason.startswith("platform signature: ") and problem.reason.endswith(" with the CPAK")


def test_the_realm_signature_is_checked_with_the_rak() -> None:
    other_rak = ec.generate_private_key(ec.SECP384R1())
    (problem,) = problems(token(rak=other_rak))
    assert problem.claim == "cca-realm-delegated-token"
    assert problem.reason.startswith("realm signature: ") and problem.reason.endswith(" with cca-realm-public-key")


def test_an_unusable_rak_is_named() -> None:
    realm = realm_claims() | {t.REALM_PUBLIC_KEY: b"\x04" + bytes(10)}
    found = problems(token(realm=realm))
    assert "cca-realm-public-key" in [p.claim for p in found]
    assert any(p.claim == "cca-realm-public-key" and p.reason.startswith("unusable RAK: ") for p in found)


# --- the expected challenge ---------------------------------------------------------------------
def test_realm_challenge_problems_are_worded() -> None:
    assert problems(token(), challenge=bytes(65)) == [
        Problem("cca-realm-challenge", "expected challenge is longer than 64 bytes")]
    assert problems(token(), challenge=b"\1") == [Problem("cca-realm-challenge", "does not match the expected challenge")]
    assert problems(token(), challenge=bytes(32)) == []  # zero-padded to 64 bytes, as Linux pads it
    assert problems(token(), challenge=b"") == []


def test_a_short_challenge_is_padded_at_its_end() -> None:
    realm = realm_claims() | {t.REALM_CHALLENGE: b"\xab" + bytes(63)}
    assert problems(token(realm=realm), challenge=b"\xab") == []
    assert [p.claim for p in problems(token(realm=realm), challenge=b"\0" * 63 + b"\xab")] == ["cca-realm-challenge"]


def test_bare_platform_nonce_problem_is_worded() -> None:
    data = signed(platform_claims(bytes(32)), CPAK)
    assert problems(data, challenge=bytes(32)) == []
    assert Problem("cca-platform-challenge", "does not match the expected challenge") in problems(
        data, challenge=b"\1" * 32)


# --- formats and format errors -----------------------------------------------------------------
def test_the_format_is_named() -> None:
    assert decode_token(token(t.TAG_CMW_COLLECTION)).format == TokenFormat.CMW_COLLECTION_907
    assert decode_token(token(t.TAG_CCA_TOKEN_COLLECTION)).format == TokenFormat.COLLECTION_399
    bare = signed({t.PLATFORM_CHALLENGE: bytes(32)}, CPAK)
    decoded = decode_token(bare)
    assert decoded.format == TokenFormat.PLATFORM_TOKEN and decoded.platform.raw == bare


def test_the_halves_keep_their_bytes() -> None:
    data = token()
    decoded = decode_token(data)
    assert decoded.realm is not None
    assert cbor2.loads(decoded.platform.raw).tag == 18 and cbor2.loads(decoded.realm.raw).tag == 18
    assert decoded.platform.raw in data and decoded.realm.raw in data


def _sign1_parts(protected: object, payload: object, tagged: bool = True) -> bytes:
    body = [protected, {}, payload, bytes(64)]
    return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)


GOOD = signed({t.PLATFORM_CHALLENGE: bytes(32)}, CPAK)
PROTECTED = cbor2.dumps({1: -7})


@pytest.mark.parametrize(("realm", "reason"), [
    (_sign1_parts(PROTECTED, cbor2.dumps({1: 2}), tagged=False), "COSE_Sign1 is not tagged with tag 18"),
    (_sign1_parts(b"\xff\xff", cbor2.dumps({1: 2})), "protected header is not well-formed CBOR"),
    (_sign1_parts(cbor2.dumps([1]), cbor2.dumps({1: 2})), "protected header is not a CBOR map"),
    (_sign1_parts(PROTECTED, cbor2.dumps([1, 2])), "payload is not a claims map"),
    (_sign1_parts(PROTECTED, b"\xa2\x01\x02\x01\x03"), "Duplicate map key"),  # {1: 2, 1: 3}
])
def test_format_errors_name_the_half_they_are_in(realm: bytes, reason: str) -> None:
    with pytest.raises(TokenFormatError, match=f"^realm delegated token[: ].*{reason}"):
        decode_token(t.encode_collection(GOOD, realm))
    with pytest.raises(TokenFormatError, match=f"^platform token[: ].*{reason}"):
        decode_token(t.encode_collection(realm, GOOD))


def test_a_sign1_that_is_not_one_names_its_half() -> None:
    for bad in (cbor2.dumps(5), cbor2.dumps(cbor2.CBORTag(18, 5))):
        with pytest.raises(TokenFormatError, match=r"^realm delegated token"):
            decode_token(t.encode_collection(GOOD, bad))


def test_the_result_carries_the_token_and_worded_reasons() -> None:
    data = token()
    result = verify_token(data, CPAK.public_key(), challenge=b"\1")
    assert result.token.platform.raw == decode_token(data).platform.raw
    assert result.reasons() == ["cca-realm-challenge: does not match the expected challenge"]


def test_reference_values_apply_to_a_bare_platform_token() -> None:
    from unirealm.attest.refvals import ReferenceValues

    data = signed(platform_claims(bytes(32)), CPAK)
    assert problems(data, reference=ReferenceValues(rims=[bytes(32)], implementation_id=bytes(32))) == []
    (problem,) = problems(data, reference=ReferenceValues(implementation_id=b"\1" * 32))
    assert problem.claim == "cca-platform-implementation-id"
