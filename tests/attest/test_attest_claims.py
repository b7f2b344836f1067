"""Claim tables: Veraison's json-claims vectors, and claims -> token -> claims round trips."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from attest_vectors import build_token, plain
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unirealm.arch import token as t
from unirealm.attest.claims import (
    ClaimsJsonError,
    Problem,
    platform_claims_from_json,
    realm_claims_from_json,
    validate_platform_claims,
    validate_realm_claims,
)
from unirealm.attest.keys import cose_key, sec1_point
from unirealm.attest.verify import decode_token, rak_binding, verify_token

# file -> the claim its name says is wrong
REALM_INVALID = {
    "test-invalid-extended-meas.json": "cca-realm-extensible-measurements",
    "test-invalid-initial-meas.json": "cca-realm-initial-measurement",
    "test-invalid-nonce.json": "cca-realm-challenge",
    "test-invalid-personalization-val.json": "cca-realm-personalization-value",
    "test-invalid-public-key.json": "cca-realm-public-key",
    "test-missing-extended-meas.json": "cca-realm-extensible-measurements",
    "test-missing-hash-alg-id.json": "cca-realm-hash-algo-id",
    "test-missing-initial-meas.json": "cca-realm-initial-measurement",
    "test-missing-nonce.json": "cca-realm-challenge",
    "test-missing-personalization-val.json": "cca-realm-personalization-value",
    "test-missing-public-key-alg-id.json": "cca-realm-public-key-hash-algo-id",
    "test-missing-public-key.json": "cca-realm-public-key",
}
PLATFORM_INVALID = {
    "test-config-missing.json": "cca-platform-config",
    "test-hash-algid-invalid.json": "cca-platform-hash-algo-id",
    "test-hash-algid-missing.json": "cca-platform-hash-algo-id",
    "test-implementation-id-invalid-long.json": "cca-platform-implementation-id",
    "test-implementation-id-invalid-missing.json": "cca-platform-implementation-id",
    "test-instance-id-invalid.json": "cca-platform-instance-id",
    "test-instance-id-missing.json": "cca-platform-instance-id",
    "test-invalid-profile.json": "cca-platform-profile",
    "test-invalid-psa-claims.json": "psa-",
    "test-lifecycle-invalid.json": "cca-platform-lifecycle",
    "test-no-sw-components.json": "cca-platform-sw-components",
    "test-nonce-invalid.json": "cca-platform-challenge",
    "test-sw-components-invalid-combo.json": "cca-platform-sw-components",
    "test-sw-components-invalid-missing.json": "cca-platform-sw-components",
    "test-vsi-invalid-empty.json": "cca-platform-service-indicator",
}


def _problems(path: Path, realm: bool) -> list[Problem]:
    obj = json.loads(path.read_text())
    try:
        claims = realm_claims_from_json(obj) if realm else platform_claims_from_json(obj)
    except ClaimsJsonError as exc:
        return [exc.problem]
    return (validate_realm_claims(claims) if realm else validate_platform_claims(claims))[0]


def test_every_json_claims_vector_is_classified(vectors: Path) -> None:
    realm = {p.name for p in (vectors / "veraison-ccatoken/json-claims-realm").glob("*.json")}
    platform = {p.name for p in (vectors / "veraison-ccatoken/json-claims-platform").glob("*.json")}
    assert realm == set(REALM_INVALID) | {"test-cca-claims-all-valid.json"}
    assert platform == set(PLATFORM_INVALID) | {"test-token-valid-full.json"}


def test_valid_json_claims_pass(vectors: Path) -> None:
    assert (
        _problems(vectors / "veraison-ccatoken/json-claims-realm/test-cca-claims-all-valid.json", True) == []
    )
    assert (
        _problems(vectors / "veraison-ccatoken/json-claims-platform/test-token-valid-full.json", False) == []
    )


@pytest.mark.parametrize(("name", "claim"), sorted(REALM_INVALID.items()))
def test_invalid_realm_json_claims_name_the_claim(vectors: Path, name: str, claim: str) -> None:
    problems = _problems(vectors / "veraison-ccatoken/json-claims-realm" / name, True)
    assert problems, name
    assert [p.claim for p in problems] == [claim], problems


@pytest.mark.parametrize(("name", "claim"), sorted(PLATFORM_INVALID.items()))
def test_invalid_platform_json_claims_name_the_claim(vectors: Path, name: str, claim: str) -> None:
    problems = _problems(vectors / "veraison-ccatoken/json-claims-platform" / name, False)
    assert problems, name
    assert problems[0].claim.startswith(claim), problems


def test_missing_claim_reason() -> None:
    problems, _ = validate_realm_claims({t.REALM_CHALLENGE: bytes(64)})
    assert Problem("cca-realm-public-key", "mandatory claim missing") in problems


def test_realm_2_requires_instance_id_and_mec_policy() -> None:
    claims = {
        t.REALM_PROFILE: t.PROFILE_REALM_2_0,
        t.REALM_CHALLENGE: bytes(64),
        t.REALM_PERSONALIZATION_VALUE: bytes(64),
        t.REALM_INITIAL_MEASUREMENT: bytes(32),
        t.REALM_EXTENSIBLE_MEASUREMENTS: [bytes(32)] * 4,
        t.REALM_HASH_ALGO_ID: "sha-256",
        t.REALM_PUBLIC_KEY: t.cose_ec2_key(t.COSE_CRV_P384, bytes(48), bytes(48)),
        t.REALM_PUBLIC_KEY_HASH_ALGO_ID: "sha-256",
    }
    names = {p.claim for p in validate_realm_claims(claims)[0]}
    assert names == {"cca-realm-instance-id", "cca-realm-mec-policy"}
    claims[t.REALM_PROFILE] = t.PROFILE_REALM_1_0
    assert validate_realm_claims(claims)[0] == []
    claims[t.REALM_PUBLIC_KEY] = b"\x04" + bytes(96)  # a raw point needs the legacy (no profile) table
    assert [p.claim for p in validate_realm_claims(claims)[0]] == ["cca-realm-public-key"]


# --- round trip: claims -> token -> decode -> same claims ---------------------------------------
_KEYS: dict[str, ec.EllipticCurvePrivateKey] = {}


def _key(curve: str) -> ec.EllipticCurvePrivateKey:
    if curve not in _KEYS:
        _KEYS[curve] = ec.generate_private_key({"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[curve])
    return _KEYS[curve]


HASHES = {"sha-256": 32, "sha-512": 64}
sw_component = st.fixed_dictionaries(
    {
        t.SWC_MEASUREMENT_VALUE: st.binary(min_size=32, max_size=32),
        t.SWC_SIGNER_ID: st.binary(min_size=32, max_size=32),
    },
    optional={
        t.SWC_MEASUREMENT_TYPE: st.text(min_size=1, max_size=12),
        t.SWC_VERSION: st.text(min_size=1, max_size=8),
        t.SWC_MEASUREMENT_DESCRIPTION: st.sampled_from(["sha-256", "sha-384"]),
    },
)


@st.composite
def token_claims(draw: st.DrawFn) -> tuple[dict, dict, str, str, int]:  # type: ignore[type-arg]
    profile = draw(st.sampled_from([None, t.PROFILE_REALM_1_0, t.PROFILE_REALM_2_0]))
    algo = draw(st.sampled_from(sorted(HASHES)))
    rak_algo = draw(st.sampled_from(["sha-256", "sha-384", "sha-512"]))
    size = HASHES[algo]
    realm: dict[int, object] = {
        t.REALM_CHALLENGE: draw(st.binary(min_size=64, max_size=64)),
        t.REALM_PERSONALIZATION_VALUE: draw(st.binary(min_size=64, max_size=64)),
        t.REALM_INITIAL_MEASUREMENT: draw(st.binary(min_size=size, max_size=size)),
        t.REALM_EXTENSIBLE_MEASUREMENTS: draw(
            st.lists(st.binary(min_size=size, max_size=size), min_size=4, max_size=4)
        ),
        t.REALM_HASH_ALGO_ID: algo,
        t.REALM_PUBLIC_KEY_HASH_ALGO_ID: rak_algo,
    }
    if profile is not None:
        realm[t.REALM_PROFILE] = profile
    if profile == t.PROFILE_REALM_2_0 or draw(st.booleans()):
        realm[t.REALM_INSTANCE_ID] = b"\x01" + draw(st.binary(min_size=32, max_size=32))
    if profile == t.PROFILE_REALM_2_0 or draw(st.booleans()):
        realm[t.REALM_MEC_POLICY] = draw(st.sampled_from([0, 1]))
    platform: dict[int, object] = {
        t.PLATFORM_PROFILE: draw(st.sampled_from([t.PROFILE_PLATFORM_1_0, t.PROFILE_PLATFORM_LEGACY])),
        t.PLATFORM_IMPLEMENTATION_ID: draw(st.binary(min_size=32, max_size=32)),
        t.PLATFORM_INSTANCE_ID: b"\x01" + draw(st.binary(min_size=32, max_size=32)),
        t.PLATFORM_CONFIG: draw(st.binary(max_size=8)),
        t.PLATFORM_LIFECYCLE: draw(st.integers(0x3000, 0x30FF)),
        t.PLATFORM_SW_COMPONENTS: draw(st.lists(sw_component, min_size=1, max_size=4)),
        t.PLATFORM_HASH_ALGO_ID: "sha-256",
    }
    if draw(st.booleans()):
        platform[t.PLATFORM_VERIFICATION_SERVICE] = draw(st.text(min_size=1, max_size=20))
    cpak_curve = draw(st.sampled_from(["P-256", "P-384"]))
    tag = draw(st.sampled_from([t.TAG_CCA_TOKEN_COLLECTION, t.TAG_CMW_COLLECTION]))
    return platform, realm, cpak_curve, rak_algo, tag


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_claims())
def test_claims_round_trip_through_a_token(case: tuple[dict, dict, str, str, int]) -> None:  # type: ignore[type-arg]
    platform, realm, cpak_curve, _, tag = case
    cpak, rak = _key(cpak_curve), _key("P-384")
    rak_pub = rak.public_key()
    realm[t.REALM_PUBLIC_KEY] = cose_key(rak_pub) if t.REALM_PROFILE in realm else sec1_point(rak_pub)
    platform[t.PLATFORM_CHALLENGE] = rak_binding(realm)
    data = build_token(platform, realm, cpak, rak, tag)
    token = decode_token(data)
    assert plain(token.platform.claims) == platform
    assert plain(token.realm.claims) == realm  # type: ignore[union-attr]
    result = verify_token(token, cpak.public_key(), challenge=realm[t.REALM_CHALLENGE])  # type: ignore[arg-type]
    assert result.ok, result.reasons()
    assert result.warnings == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    from unirealm.attest.verify import TokenFormatError

    with contextlib.suppress(TokenFormatError):
        decode_token(data)


def test_truncations_of_a_real_token_are_format_errors(vectors: Path) -> None:
    from unirealm.attest.verify import TokenFormatError

    data = (vectors / "tf-m-tools/08c16e94-head/cca_example_token.cbor").read_bytes()
    for n in range(0, len(data), 37):
        with pytest.raises(TokenFormatError):
            decode_token(data[:n])
    with pytest.raises(TokenFormatError, match="trailing"):
        decode_token(data + b"\x00")
