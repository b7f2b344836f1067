"""Decode and verify CCA attestation tokens of every generation (digest §5.2).

Formats: the tag-399 collection (RMM 1.0 EAC and rel0), the tag-907 CMW collection
(realm 1.0.0 with MEC policy, realm 2.0.0 with the realm instance ID), and a bare
platform token. Verification: the platform signature with the CPAK, the realm signature
with the RAK the realm token carries, the binding (platform challenge =
hash_{44240}(exact bytes of claim 44237)), the claim tables of each profile, and, when
given, the expected realm challenge and reference values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from unirealm.arch import token as t
from unirealm.attest.claims import (
    HASH_LENGTHS,
    Problem,
    shown,
    validate_platform_claims,
    validate_realm_claims,
)
from unirealm.attest.keys import AttestKeyError, rak_from_claim, verify_sign1
from unirealm.attest.refvals import ReferenceValues, compare_reference_values

TokenFormatError = t.TokenFormatError


class TokenFormat(Enum):
    COLLECTION_399 = "tag-399 CCA token collection"
    CMW_COLLECTION_907 = "tag-907 CMW collection"
    PLATFORM_TOKEN = "bare platform token (COSE_Sign1)"


@dataclass(frozen=True)
class SignedToken:
    """One COSE_Sign1 of the collection with its decoded claim map."""

    raw: bytes
    sign1: t.CoseSign1
    claims: dict[Any, Any]

    @property
    def profile(self) -> str | None:
        value = self.claims.get(t.REALM_PROFILE)  # same label (265) in both tokens
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class CcaToken:
    format: TokenFormat
    platform: SignedToken
    realm: SignedToken | None

    @property
    def platform_profile(self) -> str | None:
        return self.platform.profile

    @property
    def realm_profile(self) -> str | None:
        return self.realm.profile if self.realm else None

    @property
    def realm_generation(self) -> str | None:
        """A human name for the realm token's generation."""
        if self.realm is None:
            return None
        profile = self.realm_profile
        if profile is None:
            return "legacy realm token (no profile, raw SEC1 RAK)"
        if profile == t.PROFILE_REALM_2_0:
            return "realm 2.0.0 (COSE_Key RAK, realm instance ID)"
        if profile == t.PROFILE_REALM_1_0:
            return "realm 1.0.0 (COSE_Key RAK)"
        return f"unknown realm profile {shown(profile)}"


def _signed_token(raw: bytes, where: str) -> SignedToken:
    sign1 = t.decode_sign1(raw, where)
    if not sign1.tagged:
        raise TokenFormatError(f"{where}: COSE_Sign1 is not tagged with tag 18")
    try:
        header = sign1.protected_header
    except Exception:
        raise TokenFormatError(f"{where}: protected header is not well-formed CBOR") from None
    if not isinstance(header, Mapping):
        raise TokenFormatError(f"{where}: protected header is not a CBOR map")
    # Duplicate claim labels would let two readers see different values: reject them.
    claims = t.loads_whole(sign1.payload, f"{where} payload", allow_duplicate_keys=False)
    if not isinstance(claims, Mapping):
        raise TokenFormatError(f"{where}: payload is not a claims map")
    return SignedToken(raw, sign1, dict(claims))


def decode_token(data: bytes) -> CcaToken:
    """Decode a CCA token (any generation) without verifying it.

    Raises `TokenFormatError` with a one-line reason when the bytes are not a token."""
    tag, platform_raw, realm_raw = t.decode_collection(bytes(data))
    platform = _signed_token(platform_raw, "platform token")
    if realm_raw is None:
        return CcaToken(TokenFormat.PLATFORM_TOKEN, platform, None)
    realm = _signed_token(realm_raw, "realm delegated token")
    fmt = TokenFormat.COLLECTION_399 if tag == t.TAG_CCA_TOKEN_COLLECTION else TokenFormat.CMW_COLLECTION_907
    return CcaToken(fmt, platform, realm)


@dataclass
class VerificationResult:
    token: CcaToken
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def reasons(self) -> list[str]:
        return [str(p) for p in self.problems]


def rak_binding(realm_claims: Mapping[Any, Any]) -> bytes | None:
    """hash_{claim 44240}(exact bytes of claim 44237), or None if it cannot be computed."""
    algo = realm_claims.get(t.REALM_PUBLIC_KEY_HASH_ALGO_ID)
    rak = realm_claims.get(t.REALM_PUBLIC_KEY)
    if not isinstance(algo, str) or algo not in HASH_LENGTHS or not isinstance(rak, bytes):
        return None
    return hashlib.new(algo.replace("-", ""), rak).digest()


def _first_difference(got: bytes, want: bytes) -> str:
    if len(got) != len(want):
        return f"{len(got)} bytes, expected {len(want)}"
    i = next(i for i in range(len(got)) if got[i] != want[i])
    return f"byte {i} is 0x{got[i]:02x}, expected 0x{want[i]:02x}"


def check_binding(platform_claims: Mapping[Any, Any], realm_claims: Mapping[Any, Any]) -> Problem | None:
    """The platform challenge must be the hash of the RAK claim (digest §5.2, Binding)."""
    algo = realm_claims.get(t.REALM_PUBLIC_KEY_HASH_ALGO_ID)
    if not isinstance(algo, str) or algo not in HASH_LENGTHS:
        return Problem("cca-realm-public-key-hash-algo-id", f"cannot compute the binding with {shown(algo)}")
    expected = rak_binding(realm_claims)
    challenge = platform_claims.get(t.PLATFORM_CHALLENGE)
    if expected is None or not isinstance(challenge, bytes):
        return Problem("cca-platform-challenge", "binding cannot be computed from malformed claims")
    if challenge != expected:
        return Problem(
            "cca-platform-challenge",
            f"is not {algo}(cca-realm-public-key): {_first_difference(challenge, expected)}",
        )
    return None


def verify_token(
    token: CcaToken | bytes,
    cpak: ec.EllipticCurvePublicKey,
    *,
    challenge: bytes | None = None,
    reference: ReferenceValues | None = None,
    strict: bool = False,
) -> VerificationResult:
    """Verify a CCA token; the result lists every problem found (empty = verified).

    `cpak` verifies the platform token; the realm token is verified with its own RAK.
    `challenge` is the realm challenge the relying party sent (zero-padded to 64 bytes
    when shorter, as Linux pads it). `strict` turns measurement-length warnings into
    problems."""
    if isinstance(token, bytes | bytearray):
        token = decode_token(bytes(token))
    result = VerificationResult(token)
    problems, warnings = result.problems, result.warnings

    reason = verify_sign1(token.platform.sign1, cpak)
    if reason is not None:
        problems.append(Problem("cca-platform-token", f"platform signature: {reason} with the CPAK"))
    p, w = validate_platform_claims(token.platform.claims)
    problems += p
    warnings += w

    realm = token.realm
    if realm is not None:
        p, w = validate_realm_claims(realm.claims, strict=strict)
        problems += p
        warnings += w
        rak_claim = realm.claims.get(t.REALM_PUBLIC_KEY)
        if isinstance(rak_claim, bytes):
            # The profile claim says how the RAK is encoded (Veraison evidence.go).
            cose = realm.profile is not None
            try:
                rak = rak_from_claim(rak_claim, cose_key=cose)
            except AttestKeyError as exc:
                problems.append(Problem("cca-realm-public-key", f"unusable RAK: {exc}"))
            else:
                reason = verify_sign1(realm.sign1, rak)
                if reason is not None:
                    problems.append(
                        Problem(
                            "cca-realm-delegated-token",
                            f"realm signature: {reason} with cca-realm-public-key",
                        )
                    )
        binding = check_binding(token.platform.claims, realm.claims)
        if binding is not None:
            problems.append(binding)
        if challenge is not None:
            want = challenge.ljust(64, b"\0")
            got = realm.claims.get(t.REALM_CHALLENGE)
            if len(challenge) > 64:
                problems.append(Problem("cca-realm-challenge", "expected challenge is longer than 64 bytes"))
            elif got != want:
                problems.append(Problem("cca-realm-challenge", "does not match the expected challenge"))
    elif challenge is not None and token.platform.claims.get(t.PLATFORM_CHALLENGE) != challenge:
        # A bare platform token carries the relying party's nonce as its challenge.
        problems.append(Problem("cca-platform-challenge", "does not match the expected challenge"))

    if reference is not None:
        problems += compare_reference_values(
            reference, token.platform.claims, realm.claims if realm is not None else None
        )
    return result
