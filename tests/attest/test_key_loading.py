"""attest/keys.py loading keys as the verifier gets them: the vectors' JWKs (RFC 7518 §6.2)
with the whitespace a file may start with, keys that are not elliptic-curve ones (made by
cryptography), and JWK members that are missing or not base64url, each refused with a
message naming the member."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from unirealm.attest.keys import AttestKeyError, load_private_key, load_public_key

JWK = "veraison-ccatoken/testIAK.jwk.json"
CPAK_JWK = "veraison-ccatoken/testRMMCPAK.jwk.json"
CPAK_PEM = "tf-m-tools/08c16e94-head/cca_platform.pem"


def _refused(data: bytes) -> str:
    with pytest.raises(AttestKeyError) as exc:
        load_public_key(data)
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_jwk_after_leading_whitespace(vectors: Path) -> None:
    raw = (vectors / CPAK_JWK).read_bytes()
    want = load_public_key(raw).public_numbers()
    pem = load_public_key((vectors / CPAK_PEM).read_bytes())
    assert want == pem.public_numbers()  # the same key as the PEM, as the vectors' README says
    for padded in (b"\n\n  " + raw, b"\t" + raw + b"\n\n", b" \r\n" + raw.strip()):
        assert load_public_key(padded).public_numbers() == want


def test_jwk_members_named_in_refusals(vectors: Path) -> None:
    jwk = json.loads((vectors / JWK).read_text())
    for member in ("x", "y"):
        missing = {k: v for k, v in jwk.items() if k != member}
        assert _refused(json.dumps(missing).encode()) == f"JWK {member} is not a string"
        assert _refused(json.dumps({**jwk, member: 7}).encode()) == f"JWK {member} is not a string"
        # five base64url characters cannot be a whole number of bytes
        assert _refused(json.dumps({**jwk, member: "AAAAA"}).encode()) == f"JWK {member} is not base64url"
    assert _refused(json.dumps({**jwk, "x": jwk["x"][:-4]}).encode()) == "JWK coordinates are not 32 bytes for P-256"
    assert _refused(json.dumps({**jwk, "kty": "RSA"}).encode()) == "JWK kty 'RSA', expected EC"
    assert _refused(json.dumps({**jwk, "crv": "P-192"}).encode()) == \
        "JWK crv 'P-192', expected P-256, P-384 or P-521"
    assert _refused(b"{not json").startswith("not valid JSON (")


def test_a_jwk_private_key_must_match(vectors: Path) -> None:
    """testIAK.jwk.json carries d: its private key, whose public half is x, y; a d of another
    key is refused."""
    raw = (vectors / JWK).read_bytes()
    jwk = json.loads(raw)
    private = load_private_key(raw)
    assert private.public_key().public_numbers() == load_public_key(raw).public_numbers()
    d = int.from_bytes(base64.urlsafe_b64decode(jwk["d"] + "="), "big")
    assert private.private_numbers().private_value == d
    other = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    wrong = {**jwk, "d": base64.urlsafe_b64encode(other.to_bytes(32, "big")).decode().rstrip("=")}
    with pytest.raises(AttestKeyError) as exc:
        load_private_key(json.dumps(wrong).encode())
    assert str(exc.value) == "JWK private key d does not match x, y"
    with pytest.raises(AttestKeyError) as exc:
        load_private_key(json.dumps({**jwk, "d": "AAAAA"}).encode())
    assert str(exc.value) == "JWK d is not base64url"
    public_only = {k: v for k, v in jwk.items() if k != "d"}
    with pytest.raises(AttestKeyError, match="not an EC private key"):
        load_private_key(json.dumps(public_only).encode())


@pytest.mark.parametrize("make", [
    lambda: ed25519.Ed25519PrivateKey.generate(),
    lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
], ids=["ed25519", "rsa"])
def test_keys_that_are_not_elliptic_curve(make: object) -> None:
    key = make()  # type: ignore[operator]
    public = key.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    name = type(public).__name__
    assert _refused(pem) == f"not an elliptic-curve key ({name})"
    assert _refused(der) == f"not an elliptic-curve key ({name})"
    assert _refused(private_pem) == f"not an elliptic-curve key ({type(key).__name__})"
    assert _refused(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") == \
        "not a PEM, DER or JWK elliptic-curve key"


def test_der_private_keys_and_signatures() -> None:
    """A DER PKCS#8 EC key loads as itself; signatures made by ecdsa_signer are raw r||s that
    cryptography verifies, and the wrong length is named with the length expected."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from unirealm.arch import token as t
    from unirealm.attest.keys import ecdsa_signer, verify_sign1

    key = ec.generate_private_key(ec.SECP384R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert load_private_key(der).private_numbers() == key.private_numbers()
    sign = ecdsa_signer(key, t.COSE_ALG_ES384)
    raw = sign(b"payload")
    assert len(raw) == 96
    key.public_key().verify(encode_dss_signature(int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big")),
                            b"payload", ec.ECDSA(hashes.SHA384()))
    with pytest.raises(KeyError):
        ecdsa_signer(key, 12345)  # an algorithm given is used, not replaced by the key's
    sign1 = t.CoseSign1(cbor2.dumps({1: t.COSE_ALG_ES384}), {}, b"p", raw[:-1])
    assert verify_sign1(sign1, key.public_key()) == "ES384 signature is 95 bytes, expected 96"
