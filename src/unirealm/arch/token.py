"""The CCA attestation token: claim keys, profiles, envelopes and the COSE_Sign1 codec.

Sources: digest §5.2; draft-ffm-rats-cca-token (CCA token, EAT profiles); RFC 9052
(COSE_Sign1, Sig_structure); RFC 9053 (ES384: raw r||s signature); draft-ietf-rats-msg-wrap
(CMW collection, tag 907). Both the RMM (to encode) and the relying party (to decode)
use this module, so the wire format is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

# --- envelopes -------------------------------------------------------------------------
TAG_CCA_TOKEN_COLLECTION = 399  # legacy / draft-00 collection: {44234: bstr, 44241: bstr}
TAG_CMW_COLLECTION = 907  # CMW collection: {44234: [263, bstr], 44241: [263, bstr]}
TAG_COSE_SIGN1 = 18
COAP_CONTENT_FORMAT_EAT_CWT = 263

KEY_PLATFORM_TOKEN = 44234
KEY_REALM_DELEGATED_TOKEN = 44241

# --- realm claims (digest §5.2) --------------------------------------------------------
REALM_PROFILE = 265
REALM_CHALLENGE = 10
REALM_PERSONALIZATION_VALUE = 44235
REALM_HASH_ALGO_ID = 44236
REALM_PUBLIC_KEY = 44237
REALM_PUBLIC_KEY_HASH_ALGO_ID = 44240
REALM_INITIAL_MEASUREMENT = 44238
REALM_EXTENSIBLE_MEASUREMENTS = 44239
REALM_INSTANCE_ID = 256  # realm profile 2.0.0
REALM_MEC_POLICY = 44243  # 1.1-alp and 2.0

PROFILE_REALM_1_0 = "tag:arm.com,2023:realm#1.0.0"
PROFILE_REALM_2_0 = "tag:arm.com,2024:realm#2.0.0"

# --- platform claims -------------------------------------------------------------------
PLATFORM_PROFILE = 265
PLATFORM_CHALLENGE = 10
PLATFORM_IMPLEMENTATION_ID = 2396
PLATFORM_INSTANCE_ID = 256
PLATFORM_CONFIG = 2401
PLATFORM_LIFECYCLE = 2395
PLATFORM_SW_COMPONENTS = 2399
PLATFORM_VERIFICATION_SERVICE = 2400
PLATFORM_HASH_ALGO_ID = 2402

PROFILE_PLATFORM_1_0 = "tag:arm.com,2023:cca_platform#1.0.0"
PROFILE_PLATFORM_LEGACY = "http://arm.com/CCA-SSD/1.0.0"

# software component map keys
SWC_MEASUREMENT_TYPE = 1
SWC_MEASUREMENT_VALUE = 2
SWC_VERSION = 4
SWC_SIGNER_ID = 5
SWC_MEASUREMENT_DESCRIPTION = 6

# --- COSE (RFC 9052 / 9053) ------------------------------------------------------------
COSE_HEADER_ALG = 1
COSE_ALG_ES256 = -7
COSE_ALG_ES384 = -35
COSE_ALG_ES512 = -36
COSE_KEY_KTY = 1
COSE_KTY_EC2 = 2
COSE_KEY_CRV = -1
COSE_KEY_X = -2
COSE_KEY_Y = -3
COSE_CRV_P256 = 1
COSE_CRV_P384 = 2
COSE_CRV_P521 = 3

Signer = Callable[[bytes], bytes]  # to-be-signed bytes -> raw r||s signature


@dataclass(frozen=True)
class CoseSign1:
    """A decoded COSE_Sign1 (RFC 9052 §4.2)."""

    protected: bytes  # the serialized protected header bstr
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes
    tagged: bool = True

    @property
    def protected_header(self) -> dict[Any, Any]:
        return cbor2.loads(self.protected) if self.protected else {}

    @property
    def alg(self) -> int | None:
        return self.protected_header.get(COSE_HEADER_ALG)

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        return sig_structure(self.protected, self.payload, external_aad)

    def encode(self) -> bytes:
        body = [self.protected, self.unprotected, self.payload, self.signature]
        return cbor2.dumps(cbor2.CBORTag(TAG_COSE_SIGN1, body) if self.tagged else body)


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """Sig_structure for COSE_Sign1: ["Signature1", protected, external_aad, payload]."""
    return cbor2.dumps(["Signature1", protected, external_aad, payload])


def sign1(payload: bytes, signer: Signer, alg: int = COSE_ALG_ES384) -> CoseSign1:
    protected = cbor2.dumps({COSE_HEADER_ALG: alg})
    signature = signer(sig_structure(protected, payload))
    return CoseSign1(protected, {}, payload, signature)


class TokenFormatError(ValueError):
    """The bytes are not the CBOR structure the token format requires."""


def decode_sign1(data: bytes | Any, where: str = "token") -> CoseSign1:
    obj = data
    if isinstance(data, bytes | bytearray):
        try:
            obj = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several error types for malformed input
            raise TokenFormatError(f"{where}: not well-formed CBOR ({exc})") from None
    tagged = False
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != TAG_COSE_SIGN1:
            raise TokenFormatError(f"{where}: CBOR tag {obj.tag}, expected COSE_Sign1 tag 18")
        obj, tagged = obj.value, True
    if not (isinstance(obj, list) and len(obj) == 4):
        raise TokenFormatError(f"{where}: not a COSE_Sign1 array of four items")
    protected, unprotected, payload, signature = obj
    if not isinstance(protected, bytes):
        raise TokenFormatError(f"{where}: COSE_Sign1 protected header is not a bstr")
    if not isinstance(unprotected, dict):
        raise TokenFormatError(f"{where}: COSE_Sign1 unprotected header is not a map")
    if not isinstance(payload, bytes):
        raise TokenFormatError(f"{where}: COSE_Sign1 payload is not a bstr")
    if not isinstance(signature, bytes):
        raise TokenFormatError(f"{where}: COSE_Sign1 signature is not a bstr")
    return CoseSign1(protected, unprotected, payload, signature, tagged)


def cose_ec2_key(crv: int, x: bytes, y: bytes) -> bytes:
    """A COSE_Key for an EC2 public key, map keys in the order TF-RMM writes them
    (kty, crv, x, y): 107 bytes for P-384 (digest §5.2, "RAK encoding")."""
    return cbor2.dumps({COSE_KEY_KTY: COSE_KTY_EC2, COSE_KEY_CRV: crv, COSE_KEY_X: x, COSE_KEY_Y: y})


def encode_collection(platform_token: bytes, realm_token: bytes, tag: int = TAG_CCA_TOKEN_COLLECTION) -> bytes:
    """Wrap the two tokens in a CCA collection: tag 399 (bstrs) or tag 907 (CMW arrays)."""
    if tag == TAG_CCA_TOKEN_COLLECTION:
        body: dict[int, Any] = {KEY_PLATFORM_TOKEN: platform_token, KEY_REALM_DELEGATED_TOKEN: realm_token}
    elif tag == TAG_CMW_COLLECTION:
        body = {
            KEY_PLATFORM_TOKEN: [COAP_CONTENT_FORMAT_EAT_CWT, platform_token],
            KEY_REALM_DELEGATED_TOKEN: [COAP_CONTENT_FORMAT_EAT_CWT, realm_token],
        }
    else:
        raise ValueError(f"unknown CCA collection tag {tag}")
    return cbor2.dumps(cbor2.CBORTag(tag, body))
