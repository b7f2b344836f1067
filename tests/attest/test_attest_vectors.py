"""Every shared token vector decoded and judged as vectors/README.md says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cbor2
import pytest
from attest_vectors import build_token, load_yaml, plain, signed, tfm_platform_claims, tfm_realm_claims
from cryptography.hazmat.primitives.asymmetric import ec

from unirealm.arch import token as t
from unirealm.attest.claims import platform_claims_from_json, realm_claims_from_json
from unirealm.attest.keys import load_private_key, load_public_key
from unirealm.attest.verify import TokenFormat, TokenFormatError, decode_token, rak_binding, verify_token

TFM = "tf-m-tools/08c16e94-head/cca_platform.pem"
IAK = "veraison-ccatoken/testIAK.jwk.json"
SERVICES_IAK = "veraison-services/scheme/arm-cca/test/evidence/src/ec.p256.jwk"
EVCLI_IAK = "veraison-evcli/ec256.json"

F399 = TokenFormat.COLLECTION_399
F907 = TokenFormat.CMW_COLLECTION_907
FPLAT = TokenFormat.PLATFORM_TOKEN
R1 = t.PROFILE_REALM_1_0
R2 = t.PROFILE_REALM_2_0
P1 = t.PROFILE_PLATFORM_1_0
PL = t.PROFILE_PLATFORM_LEGACY

# token, CPAK, format, platform profile, realm profile (None: legacy), binding hash
GOOD = [
    ("islet/sdk-mock-report.cbor", TFM, F399, P1, R1, "sha-256"),
    ("tf-m-tools/08c16e94-head/cca_example_platform_token.cbor", TFM, FPLAT, P1, None, None),
    ("tf-m-tools/08c16e94-head/cca_example_platform_token_legacy.cbor", TFM, FPLAT, PL, None, None),
    ("tf-m-tools/08c16e94-head/cca_platform_token.cbor", TFM, FPLAT, PL, None, None),
    ("tf-m-tools/08c16e94-head/cca_example_token.cbor", TFM, F907, P1, R2, "sha-256"),
    ("tf-m-tools/08c16e94-head/cca_example_token_legacy.cbor", TFM, F907, PL, None, "sha-256"),
    ("tf-m-tools/08c16e94-head/cca_token.cbor", TFM, F907, PL, None, "sha-256"),
    ("tf-m-tools/3450f2a-tag399/cca_example_token.cbor", TFM, F399, P1, R1, "sha-256"),
    ("tf-m-tools/3450f2a-tag399/cca_example_token_legacy.cbor", TFM, F399, PL, None, "sha-256"),
    ("tf-m-tools/3450f2a-tag399/cca_token.cbor", TFM, F399, PL, None, "sha-256"),
    ("tf-m-tools/e84d296-rmm1.0-realm-profile/cca_example_token.cbor", TFM, F907, P1, R1, "sha-256"),
    ("tf-m-tools/e84d296-rmm1.0-realm-profile/cca_example_token_legacy.cbor", TFM, F907, PL, None, "sha-256"),
    ("tf-m-tools/e84d296-rmm1.0-realm-profile/cca_token.cbor", TFM, F907, PL, None, "sha-256"),
    ("tf-rmm/host-platform-token.cbor", TFM, FPLAT, P1, None, None),
    ("veraison-ccatoken/testGoodCCAToken.cbor", IAK, F907, P1, R1, "sha-512"),
    ("veraison-ccatoken/testGoodLegacyCCAToken.cbor", IAK, F399, P1, R1, "sha-512"),
    (
        "veraison-ccatoken/testRMMLegacyEvidence.cbor",
        "veraison-ccatoken/testRMMCPAK.jwk.json",
        F907,
        PL,
        None,
        "sha-256",
    ),
    (
        "veraison-ccatoken/tf-rmm-cca_token.cbor",
        "veraison-ccatoken/tf-rmm-cca_platform.pub",
        F399,
        PL,
        None,
        "sha-256",
    ),
    ("veraison-evcli/token.cbor", EVCLI_IAK, F399, PL, None, "sha-512"),
    ("veraison-services/end-to-end/input/cca-evidence.cbor", SERVICES_IAK, F399, PL, R1, "sha-512"),
    ("veraison-services/scheme/arm-cca/test/evidence/cca-good.cbor", SERVICES_IAK, F399, PL, R1, "sha-256"),
]


def read(vectors: Path, name: str) -> bytes:
    return (vectors / name).read_bytes()


def cpak(vectors: Path, name: str) -> ec.EllipticCurvePublicKey:
    return load_public_key(read(vectors, name))


def test_every_token_vector_is_listed(vectors: Path) -> None:
    listed = {g[0] for g in GOOD} | {"veraison-ccatoken/testBadUnwrappedTokens.cbor"}
    found = {str(p.relative_to(vectors)) for p in vectors.rglob("*.cbor") if "corim" not in p.parts}
    assert found == listed


@pytest.mark.parametrize(
    ("name", "key", "fmt", "pprofile", "rprofile", "binding"), GOOD, ids=[g[0] for g in GOOD]
)
def test_good_token_decodes_and_verifies(
    vectors: Path,
    name: str,
    key: str,
    fmt: TokenFormat,
    pprofile: str,
    rprofile: str | None,
    binding: str | None,
) -> None:
    token = decode_token(read(vectors, name))
    assert token.format is fmt
    assert token.platform_profile == pprofile
    if fmt is FPLAT:
        assert token.realm is None
    else:
        assert token.realm is not None
        assert token.realm_profile == rprofile
        rak = token.realm.claims[t.REALM_PUBLIC_KEY]
        # COSE_Key RAK with a profile, raw SEC1 point without one
        assert (rak[0] == 0x04 and len(rak) == 97) == (rprofile is None)
        assert token.realm.claims[t.REALM_PUBLIC_KEY_HASH_ALGO_ID] == binding
        challenge = token.platform.claims[t.PLATFORM_CHALLENGE]
        assert (
            challenge
            == hashlib.new(binding.replace("-", ""), rak).digest()
            == rak_binding(token.realm.claims)
        )
    result = verify_token(token, cpak(vectors, key))
    assert result.ok, result.reasons()


@pytest.mark.parametrize("name", [g[0] for g in GOOD if g[5] == "sha-512"])
def test_sha512_bindings_have_64_byte_platform_challenge(vectors: Path, name: str) -> None:
    token = decode_token(read(vectors, name))
    assert len(token.platform.claims[t.PLATFORM_CHALLENGE]) == 64


# --- claims equal to their sources ------------------------------------------------------------
TFM_SOURCES = [
    (f"tf-m-tools/{d}/{cbor}", f"tf-m-tools/{d}/{yaml}")
    for d in ("08c16e94-head", "3450f2a-tag399", "e84d296-rmm1.0-realm-profile")
    for cbor, yaml in (
        ("cca_example_token.cbor", "cca_example_token.yaml"),
        ("cca_example_token_legacy.cbor", "cca_example_token_legacy.yaml"),
        ("cca_token.cbor", "valid-cca-token.yaml"),
    )
] + [
    (f"tf-m-tools/08c16e94-head/{n}.cbor", f"tf-m-tools/08c16e94-head/{n}.yaml")
    for n in ("cca_example_platform_token", "cca_example_platform_token_legacy", "cca_platform_token")
]


@pytest.mark.parametrize(("cbor_name", "yaml_name"), TFM_SOURCES, ids=[s[0] for s in TFM_SOURCES])
def test_tfm_claims_equal_their_yaml(vectors: Path, cbor_name: str, yaml_name: str) -> None:
    token = decode_token(read(vectors, cbor_name))
    source = load_yaml(vectors / yaml_name)
    if token.realm is None:
        assert plain(token.platform.claims) == tfm_platform_claims(source)
    else:
        assert plain(token.platform.claims) == tfm_platform_claims(source["cca_platform_token"])
        assert plain(token.realm.claims) == tfm_realm_claims(source["cca_realm_delegated_token"])


def test_tf_rmm_platform_token_is_the_tfm_example(vectors: Path) -> None:
    assert read(vectors, "tf-rmm/host-platform-token.cbor") == read(
        vectors, "tf-m-tools/08c16e94-head/cca_example_platform_token.cbor"
    )


def test_example_token_key_claims(vectors: Path) -> None:
    """The values vectors/README.md lists for the TF-M / TF-RMM example tokens."""
    token = decode_token(read(vectors, "tf-m-tools/08c16e94-head/cca_example_token.cbor"))
    p, r = token.platform.claims, token.realm.claims  # type: ignore[union-attr]
    assert p[t.PLATFORM_IMPLEMENTATION_ID].hex().startswith("7f454c4602010100")
    assert p[t.PLATFORM_INSTANCE_ID].hex().startswith("0107060504")
    assert p[t.PLATFORM_CONFIG] == bytes.fromhex("cfcfcfcf")
    assert p[t.PLATFORM_LIFECYCLE] == 0x3003
    assert p[t.PLATFORM_CHALLENGE].hex() == "0d22e08a98469058486318283489bdb36f09dbefeb1864df433fa6e54ea2d711"
    assert [c[t.SWC_MEASUREMENT_TYPE] for c in p[t.PLATFORM_SW_COMPONENTS]] == [
        "RSE_BL1_2",
        "RSE_BL2",
        "RSE_S",
        "AP_BL1",
        "AP_BL2",
        "SCP_BL1",
        "SCP_BL2",
        "AP_BL31",
        "RMM",
        "HW_CONFIG",
        "FW_CONFIG",
        "TB_FW_CONFIG",
        "SOC_FW_CONFIG",
    ]
    signers = {c[t.SWC_MEASUREMENT_TYPE]: c[t.SWC_SIGNER_ID].hex()[:16] for c in p[t.PLATFORM_SW_COMPONENTS]}
    assert {k for k, v in signers.items() if v != "5378796307535df3"} == {"SCP_BL2"}
    assert r[t.REALM_CHALLENGE].hex().startswith("6e86d6d9")
    assert (
        r[t.REALM_PERSONALIZATION_VALUE]
        == b"The quick brown fox jumps over 13 lazy dogs.The quick brown fox "
    )
    assert (
        r[t.REALM_INITIAL_MEASUREMENT].hex()
        == "311314ab73620350cf758834ae5c65d9e8c2dc7febe6e7d9654bbe864e300d49"
    )
    assert [m.hex()[:8] for m in r[t.REALM_EXTENSIBLE_MEASUREMENTS]] == [
        "24d5b0a2",
        "788fc090",
        "dac46a58",
        "32c6afc6",
    ]
    assert r[t.REALM_INSTANCE_ID] == bytes(range(1, 34))
    assert r[t.REALM_MEC_POLICY] == 1


def test_islet_mock_report(vectors: Path) -> None:
    data = read(vectors, "islet/sdk-mock-report.cbor")
    assert len(data) == 2124
    token = decode_token(data)
    r = token.realm.claims  # type: ignore[union-attr]
    assert token.platform.raw == read(vectors, "tf-rmm/host-platform-token.cbor")
    assert r[t.REALM_CHALLENGE].hex().startswith("7c0ed18a86b35f71")
    assert r[t.REALM_PERSONALIZATION_VALUE] == bytes(64)
    assert (
        r[t.REALM_INITIAL_MEASUREMENT].hex()
        == "17859ae3cb06985b628d1bf89995336440f84c51759e649bb749a121324394dc"
    )
    assert r[t.REALM_EXTENSIBLE_MEASUREMENTS] == [bytes(32)] * 4
    # RAK = TF-RMM's sample key
    point = read(vectors, "tf-rmm/host-sample-rak-pub-p384-sec1.bin")
    assert r[t.REALM_PUBLIC_KEY] == t.cose_ec2_key(t.COSE_CRV_P384, point[1:49], point[49:])
    assert hashlib.sha256(point).hexdigest().startswith("b5973cb6")


def test_legacy_cca_token_values(vectors: Path) -> None:
    token = decode_token(read(vectors, "veraison-ccatoken/tf-rmm-cca_token.cbor"))
    r = token.realm.claims  # type: ignore[union-attr]
    assert len(read(vectors, "veraison-ccatoken/tf-rmm-cca_token.cbor")) == 1222
    assert r[t.REALM_CHALLENGE] == b"\xab" * 64
    assert r[t.REALM_INITIAL_MEASUREMENT] == bytes(32)
    assert token.platform.claims[t.PLATFORM_CHALLENGE].hex().startswith("b5973cb6")
    assert [c[t.SWC_VERSION] for c in token.platform.claims[t.PLATFORM_SW_COMPONENTS]] == [
        "3.4.2",
        "1.2",
        "1.2.3",
        "1",
    ]


def _json_claims(path: Path) -> tuple[dict, dict]:  # type: ignore[type-arg]
    src = json.loads(path.read_text())
    return (
        platform_claims_from_json(src["cca-platform-token"]),
        realm_claims_from_json(src["cca-realm-delegated-token"]),
    )


@pytest.mark.parametrize(
    ("cbor_name", "json_name"),
    [
        ("veraison-ccatoken/testGoodCCAToken.cbor", "veraison-ccatoken/testCombinedClaimsJSON.json"),
        ("veraison-ccatoken/testGoodLegacyCCAToken.cbor", "veraison-ccatoken/testCombinedClaimsJSON.json"),
        (
            "veraison-services/scheme/arm-cca/test/evidence/cca-good.cbor",
            "veraison-services/scheme/arm-cca/test/evidence/src/cca-good.json",
        ),
    ],
)
def test_veraison_claims_equal_their_json(vectors: Path, cbor_name: str, json_name: str) -> None:
    token = decode_token(read(vectors, cbor_name))
    platform, realm = _json_claims(vectors / json_name)
    got = plain(token.realm.claims)  # type: ignore[union-attr]
    if t.REALM_PROFILE not in realm:
        # the JSON predates the realm profile; the tool that signed it added 1.0.0
        assert got.pop(t.REALM_PROFILE) == R1
    assert plain(token.platform.claims) == platform
    assert got == realm


def test_end_to_end_evidence_replaces_the_platform_challenge(vectors: Path) -> None:
    """evcli writes hash(RAK) over the JSON's platform challenge; everything else matches."""
    token = decode_token(read(vectors, "veraison-services/end-to-end/input/cca-evidence.cbor"))
    platform, realm = _json_claims(vectors / "veraison-services/end-to-end/input/src/cca-evidence.json")
    assert token.platform.claims[t.PLATFORM_CHALLENGE].hex().startswith("d050f5f6")
    assert token.platform.claims[t.PLATFORM_CHALLENGE] != platform.pop(t.PLATFORM_CHALLENGE)
    got = plain(token.platform.claims)
    got.pop(t.PLATFORM_CHALLENGE)
    assert got == platform
    got_realm = plain(token.realm.claims)  # type: ignore[union-attr]
    if t.REALM_PROFILE not in realm:
        assert got_realm.pop(t.REALM_PROFILE) == R1
    assert got_realm == realm


def test_mixed_profile_veraison_tokens(vectors: Path) -> None:
    """Legacy platform profile with a realm 1.0.0 token (COSE_Key RAK)."""
    for name in (
        "veraison-services/scheme/arm-cca/test/evidence/cca-good.cbor",
        "veraison-services/end-to-end/input/cca-evidence.cbor",
    ):
        token = decode_token(read(vectors, name))
        assert (token.platform_profile, token.realm_profile) == (PL, R1)
        assert verify_token(token, cpak(vectors, SERVICES_IAK)).ok


def test_veraison_64_byte_rim_with_sha256_is_lenient_by_default(vectors: Path) -> None:
    token = decode_token(read(vectors, "veraison-ccatoken/testGoodCCAToken.cbor"))
    lenient = verify_token(token, cpak(vectors, IAK))
    assert lenient.ok
    assert any(w.claim == "cca-realm-initial-measurement" for w in lenient.warnings)
    strict = verify_token(token, cpak(vectors, IAK), strict=True)
    assert not strict.ok
    assert {p.claim for p in strict.problems} >= {"cca-realm-initial-measurement"}


# --- negative vectors -------------------------------------------------------------------------
def test_unwrapped_cose_is_rejected(vectors: Path) -> None:
    with pytest.raises(TokenFormatError, match="not wrapped in a bstr"):
        decode_token(read(vectors, "veraison-ccatoken/testBadUnwrappedTokens.cbor"))
    with pytest.raises(TokenFormatError, match="not wrapped in a bstr"):
        t.decode_collection(read(vectors, "veraison-ccatoken/testBadUnwrappedTokens.cbor"))


def test_wrong_platform_key_fails(vectors: Path) -> None:
    token = decode_token(read(vectors, "veraison-ccatoken/testGoodCCAToken.cbor"))
    result = verify_token(token, cpak(vectors, "veraison-ccatoken/testAltIAK.jwk.json"))
    assert [p.claim for p in result.problems] == ["cca-platform-token"]
    assert "does not verify" in result.problems[0].reason


def test_platform_key_of_the_wrong_curve_fails(vectors: Path) -> None:
    token = decode_token(read(vectors, "veraison-ccatoken/testGoodCCAToken.cbor"))
    result = verify_token(token, cpak(vectors, TFM))  # a P-384 key for an ES256 token
    assert [p.claim for p in result.problems] == ["cca-platform-token"]
    assert "ES256" in result.problems[0].reason


def _flip_signature_bit(token_bytes: bytes, part: int) -> bytes:
    """Re-encode a collection with one bit flipped in the signature of part 44234 or 44241."""
    tag, platform, realm = t.decode_collection(token_bytes)
    raw = platform if part == t.KEY_PLATFORM_TOKEN else realm
    assert raw is not None
    s = t.decode_sign1(raw)
    bad = t.CoseSign1(
        s.protected, s.unprotected, s.payload, bytes([s.signature[0] ^ 1]) + s.signature[1:]
    ).encode()
    if part == t.KEY_PLATFORM_TOKEN:
        return t.encode_collection(bad, realm, tag)  # type: ignore[arg-type]
    return t.encode_collection(platform, bad, tag)


@pytest.mark.parametrize(
    "name",
    [
        "tf-m-tools/08c16e94-head/cca_example_token.cbor",
        "tf-m-tools/3450f2a-tag399/cca_token.cbor",
        "veraison-ccatoken/testGoodCCAToken.cbor",
    ],
)
def test_tampered_signatures_fail(vectors: Path, name: str) -> None:
    key = next(g[1] for g in GOOD if g[0] == name)
    data = read(vectors, name)
    plat = verify_token(_flip_signature_bit(data, t.KEY_PLATFORM_TOKEN), cpak(vectors, key))
    assert [p.claim for p in plat.problems] == ["cca-platform-token"]
    realm = verify_token(_flip_signature_bit(data, t.KEY_REALM_DELEGATED_TOKEN), cpak(vectors, key))
    assert [p.claim for p in realm.problems] == ["cca-realm-delegated-token"]
    assert "realm signature" in realm.problems[0].reason


def test_tampered_payload_fails(vectors: Path) -> None:
    name = "tf-m-tools/08c16e94-head/cca_example_token.cbor"
    tag, platform, realm = t.decode_collection(read(vectors, name))
    s = t.decode_sign1(realm)
    claims = cbor2.loads(s.payload)
    claims[t.REALM_INITIAL_MEASUREMENT] = bytes(32)
    forged = t.CoseSign1(s.protected, s.unprotected, cbor2.dumps(claims), s.signature).encode()
    result = verify_token(t.encode_collection(platform, forged, tag), cpak(vectors, TFM))
    assert [p.claim for p in result.problems] == ["cca-realm-delegated-token"]


@pytest.mark.parametrize("commit", ["08c16e94-head", "3450f2a-tag399", "e84d296-rmm1.0-realm-profile"])
def test_realm_token_signed_with_the_wrong_rak_fails(vectors: Path, commit: str) -> None:
    """valid-cca-token.yaml with the realm token signed by cca_realm2.pem, not cca_realm.pem."""
    src = load_yaml(vectors / f"tf-m-tools/{commit}/valid-cca-token.yaml")
    platform = tfm_platform_claims(src["cca_platform_token"])
    realm = tfm_realm_claims(src["cca_realm_delegated_token"])
    cpak_priv = load_private_key(read(vectors, TFM))
    rak = load_private_key(read(vectors, "tf-m-tools/08c16e94-head/cca_realm.pem"))
    rak2 = load_private_key(read(vectors, "tf-m-tools/08c16e94-head/cca_realm2.pem"))
    good = build_token(platform, realm, cpak_priv, rak, t.TAG_CCA_TOKEN_COLLECTION)
    assert verify_token(good, cpak_priv.public_key()).ok
    bad = build_token(platform, realm, cpak_priv, rak2, t.TAG_CCA_TOKEN_COLLECTION)
    result = verify_token(bad, cpak_priv.public_key())
    assert [p.claim for p in result.problems] == ["cca-realm-delegated-token"]
    assert "does not verify with cca-realm-public-key" in result.problems[0].reason


def test_platform_challenge_not_bound_to_the_rak_fails(vectors: Path) -> None:
    """cca-invalid-plat-challenge.yaml: upstream reports byte 16 is 0x00 instead of 0xe4."""
    src = load_yaml(vectors / "tf-m-tools/08c16e94-head/cca-invalid-plat-challenge.yaml")
    cpak_priv = load_private_key(read(vectors, TFM))
    rak = load_private_key(read(vectors, "tf-m-tools/08c16e94-head/cca_realm.pem"))
    token = build_token(
        tfm_platform_claims(src["cca_platform_token"]),
        tfm_realm_claims(src["cca_realm_delegated_token"]),
        cpak_priv,
        rak,
    )
    result = verify_token(token, cpak_priv.public_key())
    assert [p.claim for p in result.problems] == ["cca-platform-challenge"]
    assert "byte 16 is 0x00, expected 0xe4" in result.problems[0].reason


def test_rak_claim_that_is_not_a_point_fails(vectors: Path) -> None:
    src = load_yaml(vectors / "tf-m-tools/08c16e94-head/valid-cca-token.yaml")
    realm = tfm_realm_claims(src["cca_realm_delegated_token"])
    realm[t.REALM_PUBLIC_KEY] = b"\x04" + bytes(96)
    platform = tfm_platform_claims(src["cca_platform_token"])
    platform[t.PLATFORM_CHALLENGE] = hashlib.sha256(realm[t.REALM_PUBLIC_KEY]).digest()
    cpak_priv = load_private_key(read(vectors, TFM))
    rak = load_private_key(read(vectors, "tf-m-tools/08c16e94-head/cca_realm.pem"))
    result = verify_token(build_token(platform, realm, cpak_priv, rak), cpak_priv.public_key())
    assert [p.claim for p in result.problems] == ["cca-realm-public-key"]


def test_bare_platform_token_with_nonce(vectors: Path) -> None:
    token = decode_token(read(vectors, "tf-m-tools/08c16e94-head/cca_platform_token.cbor"))
    nonce = token.platform.claims[t.PLATFORM_CHALLENGE]
    assert verify_token(token, cpak(vectors, TFM), challenge=nonce).ok
    wrong = verify_token(token, cpak(vectors, TFM), challenge=bytes(32))
    assert [p.claim for p in wrong.problems] == ["cca-platform-challenge"]


def test_expected_realm_challenge(vectors: Path) -> None:
    token = decode_token(read(vectors, "veraison-ccatoken/tf-rmm-cca_token.cbor"))
    key = cpak(vectors, TFM)
    assert verify_token(token, key, challenge=b"\xab" * 64).ok
    result = verify_token(token, key, challenge=b"\xab" * 63 + b"\xac")
    assert [p.claim for p in result.problems] == ["cca-realm-challenge"]


def test_signed_platform_token_reencodes_identically(vectors: Path) -> None:
    """The COSE_Sign1 codec round-trips the upstream bytes exactly."""
    raw = read(vectors, "tf-rmm/host-platform-token.cbor")
    assert t.decode_sign1(raw).encode() == raw


def test_cpak_forms_agree(vectors: Path) -> None:
    """PEM private, PEM public and JWK forms of the same CPAK load as the same key."""
    forms = [
        "tf-m-tools/08c16e94-head/cca_platform.pem",
        "veraison-ccatoken/tf-rmm-cca_platform.pem",
        "veraison-ccatoken/tf-rmm-cca_platform.pub",
        "veraison-ccatoken/testRMMCPAK.jwk.json",
    ]
    keys = {cpak(vectors, f).public_numbers() for f in forms}
    assert len(keys) == 1


def test_signed_helper_uses_es384_for_p384(vectors: Path) -> None:
    rak = load_private_key(read(vectors, "tf-m-tools/08c16e94-head/cca_realm.pem"))
    s = t.decode_sign1(signed({10: b"x"}, rak))
    assert s.alg == t.COSE_ALG_ES384 and len(s.signature) == 96
