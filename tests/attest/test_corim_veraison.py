"""The CoMIDs attest/corim.py writes, against the CoMIDs Veraison's Arm CCA scheme provisions
for its own test token (veraison/services scheme/arm-cca/test/corim/src), the CoMID CDDL
(draft-ietf-rats-corim: tag-identity, digests as named-information [alg, value]) and
Veraison's digest validity rule (the value is the named algorithm's length)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from unirealm.arch import token as t
from unirealm.attest.corim import platform_comid, realm_comid
from unirealm.attest.keys import load_public_key
from unirealm.attest.refvals import reference_values_from_json
from unirealm.attest.verify import decode_token, verify_token

SCHEME = "veraison-services/scheme/arm-cca/test"
VERAISON_TAG = "43BBE37F-2E61-4B33-AED3-53CFF1428B16"  # the id both of its reference-value CoMIDs carry
TA_TAG = "366D0A0A-5988-45ED-8488-2F2A544F6242"
TFM_TOKEN = "tf-m-tools/08c16e94-head/cca_example_token.cbor"


def _good(vectors: Path) -> tuple[dict[int, Any], dict[int, Any]]:
    token = decode_token((vectors / SCHEME / "evidence/cca-good.cbor").read_bytes())
    assert token.realm is not None
    return token.platform.claims, token.realm.claims


def _comid(vectors: Path, name: str) -> dict[str, Any]:
    return json.loads((vectors / SCHEME / "corim/src" / name).read_text())  # type: ignore[no-any-return]


def _pem(vectors: Path) -> bytes:
    """The PEM of the key Veraison's trust-anchor CoMID carries (ec.p256.jwk, the token's IAK)."""
    key = load_public_key((vectors / SCHEME / "evidence/src/ec.p256.jwk").read_bytes())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_realm_comid_is_veraisons(vectors: Path) -> None:
    """From the token's own claims: byte for byte the realm reference values Veraison provisions
    for it (64-byte measurements under sha-256 labelled by their length: 8, sha-512)."""
    _, r = _good(vectors)
    comid = realm_comid(r[t.REALM_INITIAL_MEASUREMENT], rpv=r[t.REALM_PERSONALIZATION_VALUE],
                        rems=r[t.REALM_EXTENSIBLE_MEASUREMENTS], tag_id=VERAISON_TAG)
    assert comid == _comid(vectors, "comid-cca-realm-refval.json")


def test_a_named_algorithm_must_fit_the_value(vectors: Path) -> None:
    """A digest whose value is not its algorithm's length is not a valid CoRIM digest: the
    token's sha-256 cannot label its 64-byte RIM (Veraison's refval labels it by length)."""
    _, r = _good(vectors)
    rim = r[t.REALM_INITIAL_MEASUREMENT]
    with pytest.raises(ValueError, match="a 64-byte value is not a sha-256 digest"):
        realm_comid(rim, hash_algo="sha-256")
    with pytest.raises(ValueError, match="a 64-byte value is not a sha-384 digest"):
        realm_comid(bytes(48), rems=[bytes(48), bytes(64)], hash_algo="sha-384")
    with pytest.raises(ValueError, match="no hash algorithm gives a 20-byte digest"):
        realm_comid(bytes(20))
    assert realm_comid(rim, hash_algo="sha-512") == realm_comid(rim)
    for algo, size, alg_id in (("sha-256", 32, 1), ("sha-384", 48, 7), ("sha-512", 64, 8)):
        value = bytes(range(size))
        comid = realm_comid(value, hash_algo=algo, rems=[value])
        ms = comid["triples"]["reference-values"][0]["measurements"]
        want = [alg_id, base64.urlsafe_b64encode(value).decode().rstrip("=")]
        assert [m["value"]["digests"] for m in ms] == [[want], [want]]
        assert len(want[1]) == -(-size * 4 // 3)  # unpadded base64url
    # an algorithm name the registry does not hold leaves the length to decide
    assert realm_comid(bytes(48), hash_algo="sm3")["triples"]["reference-values"][0]["measurements"][0][
        "value"]["digests"] == [[7, "A" * 64]]


def test_tag_identity_is_a_stable_uuid_of_the_values() -> None:
    """tag-id a UUID (CoMID tag-id-type-choice: tstr / uuid), tag-version 0 (the CDDL default);
    the same values give the same id, another RIM or RPV another."""
    rim, rpv = bytes(range(32)), b"tenant".ljust(64, b"\0")
    ident = realm_comid(rim, rpv=rpv)["tag-identity"]
    assert set(ident) == {"id", "version"} and ident["version"] == 0
    parsed = uuid.UUID(ident["id"])
    assert parsed.version == 5 and ident["id"] == str(parsed).upper()
    assert realm_comid(rim, rpv=rpv)["tag-identity"] == ident
    assert realm_comid(bytes(32), rpv=rpv)["tag-identity"]["id"] != ident["id"]
    assert realm_comid(rim, rpv=bytes(64))["tag-identity"]["id"] != ident["id"]
    assert realm_comid(rim)["tag-identity"]["id"] not in (ident["id"], realm_comid(bytes(32))["tag-identity"]["id"])
    assert realm_comid(rim, tag_id=VERAISON_TAG)["tag-identity"] == {"id": VERAISON_TAG, "version": 0}


def test_platform_comid_is_veraisons(vectors: Path) -> None:
    """The token's software components and config, and its IAK: Veraison's reference values
    for each component (its signer-id as cryptokeys, the measurement type as name) and its
    attester-verification-keys triple, byte for byte."""
    p, _ = _good(vectors)
    refval = _comid(vectors, "comid-cca-platform-refval.json")
    ta = _comid(vectors, "comid-cca-platform-ta.json")
    (want_refs,) = refval["triples"]["reference-values"]
    signer = base64.b64decode(want_refs["measurements"][0]["value"]["cryptokeys"][0]["value"])
    comps = [{"measurement-type": c[t.SWC_MEASUREMENT_TYPE], "measurement-value": c[t.SWC_MEASUREMENT_VALUE],
              "signer-id": signer} for c in p[t.PLATFORM_SW_COMPONENTS]]
    comid = platform_comid(_pem(vectors), p[t.PLATFORM_IMPLEMENTATION_ID], p[t.PLATFORM_INSTANCE_ID], comps,
                           tag_id=VERAISON_TAG)
    assert comid["tag-identity"] == refval["tag-identity"]
    (refs,) = comid["triples"]["reference-values"]
    assert refs["environment"] == want_refs["environment"]
    assert refs["measurements"] == [m for m in want_refs["measurements"]
                                    if m["key"]["value"] == "cca.software-component"]
    assert comid["triples"]["attester-verification-keys"] == ta["triples"]["attester-verification-keys"]
    # the same components keyed by the token's labels (hex strings for bytes) give the same
    labelled = [{t.SWC_MEASUREMENT_TYPE: c["measurement-type"], t.SWC_MEASUREMENT_VALUE: c["measurement-value"].hex(),
                 t.SWC_SIGNER_ID: signer.hex()} for c in comps]
    assert platform_comid(_pem(vectors), p[t.PLATFORM_IMPLEMENTATION_ID], p[t.PLATFORM_INSTANCE_ID], labelled,
                          tag_id=VERAISON_TAG) == comid


def test_component_version_and_description(vectors: Path) -> None:
    """A component's version is a CoMID version-map ({"value": ...}) the verifier holds the
    token to; a measurement-description naming a hash must fit the value's length."""
    p, _ = _good(vectors)  # its components carry versions
    token = decode_token((vectors / SCHEME / "evidence/cca-good.cbor").read_bytes())
    iak = load_public_key((vectors / SCHEME / "evidence/src/ec.p256.jwk").read_bytes())
    comps = [dict(c) for c in p[t.PLATFORM_SW_COMPONENTS]]
    args = (_pem(vectors), p[t.PLATFORM_IMPLEMENTATION_ID], p[t.PLATFORM_INSTANCE_ID])
    comid = platform_comid(*args, comps)
    first = comid["triples"]["reference-values"][0]["measurements"][0]["value"]
    assert first["version"] == {"value": "3.4.2"}
    assert verify_token(token, iak, reference=reference_values_from_json(comid)).ok
    comps[0][t.SWC_VERSION] = "9.9.9"
    result = verify_token(token, iak, reference=reference_values_from_json(platform_comid(*args, comps)))
    assert [str(x) for x in result.problems] == [
        "cca-platform-sw-components: component 0 (BL) matches no reference value"
    ]
    # the TF-M token's "sha-256" descriptions fit its 32-byte values; a 64-byte value under it does not
    tfm = decode_token((vectors / TFM_TOKEN).read_bytes()).platform.claims
    comps = [dict(c) for c in tfm[t.PLATFORM_SW_COMPONENTS]]
    args = (_pem(vectors), tfm[t.PLATFORM_IMPLEMENTATION_ID], tfm[t.PLATFORM_INSTANCE_ID])
    assert comps[0][t.SWC_MEASUREMENT_DESCRIPTION] == "sha-256"
    assert platform_comid(*args, comps)["triples"]["reference-values"][0]["measurements"][0]["value"][
        "digests"][0][0] == 1
    comps[0][t.SWC_MEASUREMENT_VALUE] = bytes(64)
    with pytest.raises(ValueError, match="a 64-byte value is not a sha-256 digest"):
        platform_comid(*args, comps)
    comps[0][t.SWC_MEASUREMENT_DESCRIPTION] = "BL image"  # not a hash name: the length decides
    assert platform_comid(*args, comps)["triples"]["reference-values"][0]["measurements"][0]["value"][
        "digests"][0][0] == 8


@pytest.mark.parametrize(("field", "value", "message"), [
    ("signer-id", "not hex", "sw_components[1].signer-id: expected bytes or a hex string"),
    ("signer-id", 5, "sw_components[1].signer-id: expected bytes or a hex string"),
    ("measurement-value", "zz", "sw_components[1].measurement-value: expected bytes or a hex string"),
    ("measurement-value", None, "sw_components[1]: measurement-value missing"),
])
def test_component_refusals_name_the_field(field: str, value: object, message: str) -> None:
    pem = _fresh_pem()
    good = {"measurement-type": "BL", "measurement-value": bytes(32)}
    bad = {**good, field: value}
    if value is None:
        del bad[field]
    with pytest.raises(ValueError) as info:
        platform_comid(pem, bytes(32), b"\x01" + bytes(32), [good, bad])
    assert str(info.value) == message


def _fresh_pem() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("impl", "instance", "message"), [
    (bytes(31), b"\x01" + bytes(32), "implementation_id must be 32 bytes"),
    (bytes(33), b"\x01" + bytes(32), "implementation_id must be 32 bytes"),
    (bytes(32), b"\x01" + bytes(31), "instance_id must be a 33-byte UEID of type 0x01"),
    (bytes(32), b"\x02" + bytes(32), "instance_id must be a 33-byte UEID of type 0x01"),
])
def test_platform_identity_refusals(impl: bytes, instance: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        platform_comid(_fresh_pem(), impl, instance, [])
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"^cpak_public_pem is not a PEM public key \("):
        platform_comid(b"not a key", bytes(32), b"\x01" + bytes(32), [])
