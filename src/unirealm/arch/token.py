"""The CCA attestation token: claim keys, profiles, envelopes and the COSE_Sign1 codec.

Sources: digest §5.2; draft-ffm-rats-cca-token (CCA token, EAT profiles); RFC 9052
(COSE_Sign1, Sig_structure); RFC 9053 (ES384: raw r||s signature); draft-ietf-rats-msg-wrap
(CMW collection, tag 907). Both the RMM (to encode) and the relying party (to decode)
use this module, so the wire format is written once.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
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
REALM_PROFILES_BY_NAME = {"realm#1.0.0": PROFILE_REALM_1_0, "realm#2.0.0": PROFILE_REALM_2_0}
# cca-realm-mec-policy values (DEN0137 2.0): the realm shares the default MECID, or has its own.
MEC_POLICY_SHARED = 0
MEC_POLICY_PRIVATE = 1
UEID_TYPE_RAND = 0x01  # a realm instance ID: UEID type RAND + 32 bytes (33 bytes in all)

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
    # cbor2 >= 6 returns the contents of a tag as immutable tuple/frozendict
    if not (isinstance(obj, Sequence) and not isinstance(obj, str | bytes) and len(obj) == 4):
        raise TokenFormatError(f"{where}: not a COSE_Sign1 array of four items")
    protected, unprotected, payload, signature = obj
    if not isinstance(protected, bytes):
        raise TokenFormatError(f"{where}: COSE_Sign1 protected header is not a bstr")
    if not isinstance(unprotected, Mapping):
        raise TokenFormatError(f"{where}: COSE_Sign1 unprotected header is not a map")
    unprotected = dict(unprotected)
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


def loads_whole(data: bytes, where: str = "token", **options: Any) -> Any:
    """Decode one CBOR item that must span all of `data` (cbor2.loads ignores trailing bytes)."""
    if not data:
        raise TokenFormatError(f"{where}: empty input")
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(stream, **options).decode()
    except Exception as exc:  # cbor2 raises several error types for malformed input
        raise TokenFormatError(f"{where}: not well-formed CBOR ({exc})") from None
    if stream.tell() != len(data):
        raise TokenFormatError(f"{where}: {len(data) - stream.tell()} trailing bytes after the CBOR item")
    return obj


def _collection_entry(tag: int, key: int, value: Any) -> bytes:
    name = "platform token" if key == KEY_PLATFORM_TOKEN else "realm delegated token"
    if tag == TAG_CMW_COLLECTION:
        if not (isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) == 2):
            raise TokenFormatError(f"CMW collection: {key} ({name}) is not a [content-format, bstr] array")
        content_format, value = value
        if content_format != COAP_CONTENT_FORMAT_EAT_CWT:
            raise TokenFormatError(
                f"CMW collection: {key} ({name}) has content format {content_format!r}, "
                f"expected {COAP_CONTENT_FORMAT_EAT_CWT} (EAT CWT)"
            )
    if isinstance(value, cbor2.CBORTag) and value.tag == TAG_COSE_SIGN1:
        raise TokenFormatError(f"tag {tag} collection: {key} ({name}) is a COSE_Sign1 not wrapped in a bstr")
    if not isinstance(value, bytes):
        raise TokenFormatError(f"tag {tag} collection: {key} ({name}) is not a bstr")
    return value


def decode_collection(data: bytes) -> tuple[int, bytes, bytes | None]:
    """Split a CCA token into (tag, platform token bytes, realm token bytes).

    Recognises a tag-399 collection (bstr values), a tag-907 CMW collection ([263, bstr]
    values) and a bare tag-18 platform token, for which it returns (18, data, None).
    """
    obj = loads_whole(data, "CCA token")
    if not isinstance(obj, cbor2.CBORTag):
        raise TokenFormatError("CCA token: not a tagged CBOR item (expected tag 399, 907 or 18)")
    if obj.tag == TAG_COSE_SIGN1:
        decode_sign1(obj, "platform token")
        return TAG_COSE_SIGN1, bytes(data), None
    if obj.tag not in (TAG_CCA_TOKEN_COLLECTION, TAG_CMW_COLLECTION):
        raise TokenFormatError(f"CCA token: unknown CBOR tag {obj.tag} (expected 399, 907 or 18)")
    body = obj.value
    if not isinstance(body, Mapping):
        raise TokenFormatError(f"tag {obj.tag} collection: not a map")
    missing = [k for k in (KEY_PLATFORM_TOKEN, KEY_REALM_DELEGATED_TOKEN) if k not in body]
    if missing:
        raise TokenFormatError(f"tag {obj.tag} collection: missing key(s) {', '.join(map(str, missing))}")
    extra = [k for k in body if k not in (KEY_PLATFORM_TOKEN, KEY_REALM_DELEGATED_TOKEN)]
    if extra:
        raise TokenFormatError(f"tag {obj.tag} collection: unexpected key(s) {', '.join(map(repr, extra))}")
    platform = _collection_entry(obj.tag, KEY_PLATFORM_TOKEN, body[KEY_PLATFORM_TOKEN])
    realm = _collection_entry(obj.tag, KEY_REALM_DELEGATED_TOKEN, body[KEY_REALM_DELEGATED_TOKEN])
    return obj.tag, platform, realm
