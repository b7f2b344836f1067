"""Keys and COSE_Sign1 signatures for the relying party.

The CPAK (platform attestation key) comes from the verifier's trust anchors, as a PEM
public or private key or as a JWK; the RAK comes from the realm token itself, as a
COSE_Key (realm profiles 1.0.0 and 2.0.0) or as a raw SEC1 point (no profile).
ECDSA signatures in COSE are raw r||s (RFC 9053 §2.1).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from unirealm.arch import token as t


class AttestKeyError(ValueError):
    """A key that cannot be loaded or used."""


# COSE alg -> (curve, hash); the curve must match the key's.
COSE_ECDSA = {
    t.COSE_ALG_ES256: (ec.SECP256R1, hashes.SHA256, "ES256"),
    t.COSE_ALG_ES384: (ec.SECP384R1, hashes.SHA384, "ES384"),
    t.COSE_ALG_ES512: (ec.SECP521R1, hashes.SHA512, "ES512"),
}
Curve = Callable[[], ec.EllipticCurve]
COSE_CURVES: dict[int, Curve] = {t.COSE_CRV_P256: ec.SECP256R1, t.COSE_CRV_P384: ec.SECP384R1, t.COSE_CRV_P521: ec.SECP521R1}
JWK_CURVES: dict[str, Curve] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}
SEC1_CURVES: dict[int, Curve] = {65: ec.SECP256R1, 97: ec.SECP384R1, 133: ec.SECP521R1}
CURVE_COSE = {"secp256r1": t.COSE_CRV_P256, "secp384r1": t.COSE_CRV_P384, "secp521r1": t.COSE_CRV_P521}
CURVE_ALG = {"secp256r1": t.COSE_ALG_ES256, "secp384r1": t.COSE_ALG_ES384, "secp521r1": t.COSE_ALG_ES512}


def _coordinate_size(curve: ec.EllipticCurve) -> int:
    return (curve.key_size + 7) // 8


def _b64url(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise AttestKeyError(f"JWK {what} is not a string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise AttestKeyError(f"JWK {what} is not base64url") from None


def _from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey:
    if jwk.get("kty") != "EC":
        raise AttestKeyError(f"JWK kty {jwk.get('kty')!r}, expected EC")
    curve_cls = JWK_CURVES.get(jwk.get("crv"))  # type: ignore[arg-type]
    if curve_cls is None:
        raise AttestKeyError(f"JWK crv {jwk.get('crv')!r}, expected P-256, P-384 or P-521")
    curve = curve_cls()
    size = _coordinate_size(curve)
    x, y = _b64url(jwk.get("x"), "x"), _b64url(jwk.get("y"), "y")
    if len(x) != size or len(y) != size:
        raise AttestKeyError(f"JWK coordinates are not {size} bytes for {jwk['crv']}")
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
        if "d" in jwk:
            d = int.from_bytes(_b64url(jwk["d"], "d"), "big")
            private = ec.derive_private_key(d, curve)
            if private.public_key() != public:
                raise AttestKeyError("JWK private key d does not match x, y")
            return private
    except ValueError as exc:
        if isinstance(exc, AttestKeyError):
            raise
        raise AttestKeyError(f"JWK is not a valid {jwk['crv']} key ({exc})") from None
    return public


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The RFC 7518 §6.2.1 JWK of an EC public key (the form evcli and Veraison read)."""
    names = {make().name: crv for crv, make in JWK_CURVES.items()}
    crv = names.get(key.curve.name)
    if crv is None:
        raise AttestKeyError(f"no JWK curve name for {key.curve.name}")
    size = _coordinate_size(key.curve)
    numbers = key.public_numbers()

    def b64url(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(size, "big")).decode().rstrip("=")

    return {"kty": "EC", "crv": crv, "x": b64url(numbers.x), "y": b64url(numbers.y)}


def load_private_key(data: bytes) -> ec.EllipticCurvePrivateKey:
    """An EC private key from PEM, DER or a JWK with `d`."""
    key = _load_any(data)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AttestKeyError("not an EC private key")
    return key


def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """An EC public key from a PEM/DER public or private key, or a JWK (private part ignored)."""
    key = _load_any(data)
    return key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key


def _load_any(data: bytes) -> ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey:
    text = data.lstrip()
    if text.startswith(b"{"):
        try:
            jwk = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AttestKeyError(f"not valid JSON ({exc})") from None
        if not isinstance(jwk, dict):
            raise AttestKeyError("JWK is not a JSON object")
        return _from_jwk(jwk)
    loaders: tuple[Callable[[bytes], object], ...] = (
        serialization.load_pem_public_key,
        lambda d: serialization.load_pem_private_key(d, None),
        serialization.load_der_public_key,
        lambda d: serialization.load_der_private_key(d, None),
    )
    for loader in loaders:
        try:
            key = loader(data)
        except (ValueError, TypeError):
            continue
        except Exception:  # unsupported key types raise their own errors
            continue
        if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
            raise AttestKeyError(f"not an elliptic-curve key ({type(key).__name__})")
        return key
    raise AttestKeyError("not a PEM, DER or JWK elliptic-curve key")


def rak_from_claim(claim: bytes, *, cose_key: bool) -> ec.EllipticCurvePublicKey:
    """The RAK from claim 44237: a CBOR COSE_Key, or a raw uncompressed SEC1 point."""
    try:
        if not cose_key:
            curve_cls = SEC1_CURVES.get(len(claim))
            if curve_cls is None:
                raise AttestKeyError(f"raw RAK of {len(claim)} bytes is not an uncompressed SEC1 point")
            return ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), claim)
        key = t.loads_whole(claim, "COSE_Key")
        if not isinstance(key, Mapping) or key.get(t.COSE_KEY_KTY) != t.COSE_KTY_EC2:
            raise AttestKeyError("COSE_Key is not an EC2 key")
        curve_cls = COSE_CURVES.get(key.get(t.COSE_KEY_CRV))  # type: ignore[arg-type]
        if curve_cls is None:
            raise AttestKeyError(f"COSE_Key crv {key.get(t.COSE_KEY_CRV)!r} is not P-256, P-384 or P-521")
        x, y = key.get(t.COSE_KEY_X), key.get(t.COSE_KEY_Y)
        if not (isinstance(x, bytes) and isinstance(y, bytes)):
            raise AttestKeyError("COSE_Key x/y are not byte strings")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), b"\x04" + x + y)
    except t.TokenFormatError as exc:
        raise AttestKeyError(str(exc)) from None
    except ValueError as exc:
        if isinstance(exc, AttestKeyError):
            raise
        raise AttestKeyError(f"not a point on the curve ({exc})") from None


def verify_sign1(sign1: t.CoseSign1, key: ec.EllipticCurvePublicKey) -> str | None:
    """Verify a COSE_Sign1 with the algorithm from its protected header: None, or the reason."""
    try:
        alg = sign1.alg
    except Exception:
        return "protected header is not a CBOR map"
    if alg not in COSE_ECDSA:
        return f"unsupported COSE algorithm {alg!r} (expected ES256, ES384 or ES512)"
    curve_cls, hash_cls, alg_name = COSE_ECDSA[alg]
    if not isinstance(key.curve, curve_cls):
        return f"{alg_name} needs a {curve_cls.name} key, the key is {key.curve.name}"
    size = _coordinate_size(key.curve)
    if len(sign1.signature) != 2 * size:
        return f"{alg_name} signature is {len(sign1.signature)} bytes, expected {2 * size}"
    r = int.from_bytes(sign1.signature[:size], "big")
    s = int.from_bytes(sign1.signature[size:], "big")
    try:
        key.verify(encode_dss_signature(r, s), sign1.to_be_signed(), ec.ECDSA(hash_cls()))
    except InvalidSignature:
        return f"{alg_name} signature does not verify"
    return None


def cose_alg_for(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> int:
    return CURVE_ALG[key.curve.name]


def ecdsa_signer(private_key: ec.EllipticCurvePrivateKey, alg: int | None = None) -> t.Signer:
    """A `unirealm.arch.token.Signer` (to-be-signed bytes -> raw r||s) for `private_key`."""
    alg = cose_alg_for(private_key) if alg is None else alg
    _, hash_cls, _ = COSE_ECDSA[alg]
    size = _coordinate_size(private_key.curve)

    def sign(tbs: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(tbs, ec.ECDSA(hash_cls())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    return sign


def sec1_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The raw uncompressed SEC1 point (the pre-rel0 RAK claim)."""
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def cose_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """The COSE_Key encoding of the RAK claim (realm profiles 1.0.0 / 2.0.0)."""
    point = sec1_point(key)
    size = _coordinate_size(key.curve)
    return t.cose_ec2_key(CURVE_COSE[key.curve.name], point[1 : 1 + size], point[1 + size :])
