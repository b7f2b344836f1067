"""Claim tables of the CCA platform and realm tokens, keyed by profile.

Sources: digest §5.2; DEN0137 A7.2.3 (realm claims, 2.0 adds instance ID, MEC and LFA policy,
devices token hash); draft-ffm-rats-cca-token (platform claims); Veraison ccatoken for the
JSON claim names (`cca-realm-challenge`, `cca-platform-sw-components`, ...) and for what a
claims validator rejects. Every problem names the claim and says why.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unirealm.arch import token as t

# --- profiles ---------------------------------------------------------------------------
REALM_PROFILE_LEGACY = None  # no profile claim: pre-rel0 realm token, raw SEC1 RAK
REALM_PROFILES = (t.PROFILE_REALM_1_0, t.PROFILE_REALM_2_0)
PLATFORM_PROFILES = (t.PROFILE_PLATFORM_1_0, t.PROFILE_PLATFORM_LEGACY)

# IANA Named Information hash algorithm names a claim may carry.
IANA_HASH_NAMES = frozenset(
    {
        "sha-256", "sha-256-128", "sha-256-120", "sha-256-96", "sha-256-64", "sha-256-32",
        "sha-384", "sha-512", "sha3-224", "sha3-256", "sha3-384", "sha3-512",
    }
)  # fmt: skip
HASH_LENGTHS = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
MEASUREMENT_LENGTHS = (32, 48, 64)
SEC1_POINT_LENGTHS = {65: "P-256", 97: "P-384", 133: "P-521"}

# PSA/CCA security lifecycle ranges (Veraison psatoken lifecycle.go): (first, last, name)
LIFECYCLE_STATES = (
    (0x0000, 0x00FF, "unknown"),
    (0x1000, 0x10FF, "assembly-and-test"),
    (0x2000, 0x20FF, "cca-platform-rot-provisioning"),
    (0x3000, 0x30FF, "secured"),
    (0x4000, 0x40FF, "non-cca-platform-debug"),
    (0x5000, 0x50FF, "recoverable-cca-platform-debug"),
    (0x6000, 0x60FF, "decommissioned"),
)


def shown(value: Any, limit: int = 80) -> str:
    """A short repr of a claim value for messages: never fails (bignums past Python's digit
    limit print in hex) and never runs past `limit` characters."""
    try:
        text = repr(value)
    except ValueError:
        text = hex(value) if isinstance(value, int) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def lifecycle_name(value: int) -> str | None:
    for first, last, name in LIFECYCLE_STATES:
        if first <= value <= last:
            return name
    return None


@dataclass(frozen=True)
class Problem:
    """One reason a token (or claim set) is rejected, or a warning about it."""

    claim: str  # Veraison's claim name, or the token part for signature checks
    reason: str

    def __str__(self) -> str:
        return f"{self.claim}: {self.reason}"


Check = Callable[[Any], str | None]  # value -> reason it is wrong, or None


# --- value checks -----------------------------------------------------------------------
def _bytes(*lengths: int) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, bytes):
            return f"expected a byte string, got {type(v).__name__}"
        if lengths and len(v) not in lengths:
            want = " or ".join(map(str, lengths))
            return f"length {len(v)} bytes, expected {want}"
        return None

    return check


def _nonempty_bytes(v: Any) -> str | None:
    if not isinstance(v, bytes):
        return f"expected a byte string, got {type(v).__name__}"
    return None if v else "empty byte string"


def _text(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"expected a text string, got {type(v).__name__}"
    return None if v else "empty text string"


def _hash_name(v: Any) -> str | None:
    if (bad := _text(v)) is not None:
        return bad
    return None if v in IANA_HASH_NAMES else f"unknown hash algorithm {shown(v)}"


def _ueid(v: Any) -> str | None:
    if (bad := _bytes(33)(v)) is not None:
        return bad
    return None if v[0] == 0x01 else f"UEID type byte 0x{v[0]:02x}, expected 0x01 (RAND)"


def _measurements(v: Any) -> str | None:
    if not isinstance(v, Sequence) or isinstance(v, str | bytes):
        return f"expected an array of 4 measurements, got {type(v).__name__}"
    if len(v) != 4:
        return f"{len(v)} measurements, expected 4"
    for i, m in enumerate(v):
        if (bad := _bytes(*MEASUREMENT_LENGTHS)(m)) is not None:
            return f"REM[{i}]: {bad}"
    return None


def _realm_profile(v: Any) -> str | None:
    if (bad := _text(v)) is not None:
        return bad
    return None if v in REALM_PROFILES else f"unknown realm profile {shown(v)}"


def _platform_profile(v: Any) -> str | None:
    if (bad := _text(v)) is not None:
        return bad
    return None if v in PLATFORM_PROFILES else f"unknown platform profile {shown(v)}"


def _raw_rak(v: Any) -> str | None:
    """Pre-rel0 RAK: an uncompressed SEC1 point (whether it is on the curve is checked
    when the realm signature is verified)."""
    if not isinstance(v, bytes):
        return f"expected a byte string, got {type(v).__name__}"
    if len(v) not in SEC1_POINT_LENGTHS:
        return f"length {len(v)} bytes, expected a raw SEC1 point of 65, 97 or 133 bytes"
    return None


def _cose_key_rak(v: Any) -> str | None:
    if not isinstance(v, bytes):
        return f"expected a byte string, got {type(v).__name__}"
    try:
        key = t.loads_whole(v, "COSE_Key")
    except t.TokenFormatError as exc:
        return f"not a CBOR-encoded COSE_Key ({exc})"
    if not isinstance(key, Mapping):
        return "not a COSE_Key map"
    if key.get(t.COSE_KEY_KTY) != t.COSE_KTY_EC2:
        return f"COSE_Key kty {shown(key.get(t.COSE_KEY_KTY))}, expected 2 (EC2)"
    if key.get(t.COSE_KEY_CRV) not in (t.COSE_CRV_P256, t.COSE_CRV_P384, t.COSE_CRV_P521):
        return f"COSE_Key crv {shown(key.get(t.COSE_KEY_CRV))}, expected P-256, P-384 or P-521"
    for label in (t.COSE_KEY_X, t.COSE_KEY_Y):
        if not isinstance(key.get(label), bytes):
            return f"COSE_Key has no {'x' if label == t.COSE_KEY_X else 'y'} coordinate"
    return None


def _mec_policy(v: Any) -> str | None:
    # DEN0137 2.0: shared = 0, private = 1; Veraison and TF-M tools also write the names.
    if v in (0, 1, "shared", "private") and not isinstance(v, bool):
        return None
    return f"{shown(v)} is neither 0/1 nor shared/private"


def _policy_bit(v: Any) -> str | None:
    return None if v in (0, 1) and not isinstance(v, bool) else f"{shown(v)} is neither 0 nor 1"


def _lifecycle(v: Any) -> str | None:
    if not isinstance(v, int) or isinstance(v, bool):
        return f"expected an unsigned integer, got {type(v).__name__}"
    return None if lifecycle_name(v) else f"0x{v:04x} is not a valid security lifecycle state"


SWC_NAMES = {
    t.SWC_MEASUREMENT_TYPE: "measurement-type",
    t.SWC_MEASUREMENT_VALUE: "measurement-value",
    t.SWC_VERSION: "version",
    t.SWC_SIGNER_ID: "signer-id",
    t.SWC_MEASUREMENT_DESCRIPTION: "measurement-description",
}
SWC_KEYS = {name: key for key, name in SWC_NAMES.items()}


def _sw_components(v: Any) -> str | None:
    if not isinstance(v, Sequence) or isinstance(v, str | bytes):
        return f"expected an array of software components, got {type(v).__name__}"
    if not v:
        return "no software components"
    for i, c in enumerate(v):
        if not isinstance(c, Mapping):
            return f"component {i}: not a map"
        for key in c:
            if key not in SWC_NAMES:
                return f"component {i}: unknown key {shown(key)}"
        for key, check in (
            (t.SWC_MEASUREMENT_VALUE, _bytes(*MEASUREMENT_LENGTHS)),
            (t.SWC_SIGNER_ID, _bytes(*MEASUREMENT_LENGTHS)),
        ):
            if key not in c:
                return f"component {i}: {SWC_NAMES[key]} missing"
            if (bad := check(c[key])) is not None:
                return f"component {i}: {SWC_NAMES[key]}: {bad}"
        for key in (t.SWC_MEASUREMENT_TYPE, t.SWC_VERSION, t.SWC_MEASUREMENT_DESCRIPTION):
            if key in c and (bad := _text(c[key])) is not None:
                return f"component {i}: {SWC_NAMES[key]}: {bad}"
    return None


# --- tables -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimSpec:
    key: int
    name: str  # as Veraison's JSON prints it
    mandatory: bool
    check: Check
    kind: str = "bytes"  # JSON representation: bytes, text, int, bytes-array, sw-components, mec


REALM_LFA_POLICY = 44244  # DEN0137 2.0
REALM_DEVICES_TOKEN_HASH = 44257  # DEN0137 2.0


def _realm_table(profile: str | None) -> tuple[ClaimSpec, ...]:
    v2 = profile == t.PROFILE_REALM_2_0
    rak = _raw_rak if profile is None else _cose_key_rak
    return (
        ClaimSpec(t.REALM_PROFILE, "cca-realm-profile", False, _realm_profile, "text"),
        ClaimSpec(t.REALM_CHALLENGE, "cca-realm-challenge", True, _bytes(64)),
        ClaimSpec(t.REALM_INSTANCE_ID, "cca-realm-instance-id", v2, _ueid),
        ClaimSpec(t.REALM_PERSONALIZATION_VALUE, "cca-realm-personalization-value", True, _bytes(64)),
        ClaimSpec(
            t.REALM_INITIAL_MEASUREMENT, "cca-realm-initial-measurement", True, _bytes(*MEASUREMENT_LENGTHS)
        ),
        ClaimSpec(
            t.REALM_EXTENSIBLE_MEASUREMENTS,
            "cca-realm-extensible-measurements",
            True,
            _measurements,
            "bytes-array",
        ),
        ClaimSpec(t.REALM_HASH_ALGO_ID, "cca-realm-hash-algo-id", True, _text, "text"),
        ClaimSpec(t.REALM_PUBLIC_KEY, "cca-realm-public-key", True, rak),
        ClaimSpec(t.REALM_PUBLIC_KEY_HASH_ALGO_ID, "cca-realm-public-key-hash-algo-id", True, _text, "text"),
        ClaimSpec(t.REALM_MEC_POLICY, "cca-realm-mec-policy", v2, _mec_policy, "mec"),
        ClaimSpec(REALM_LFA_POLICY, "cca-realm-lfa-policy", False, _policy_bit, "int"),
        ClaimSpec(
            REALM_DEVICES_TOKEN_HASH, "cca-realm-devices-token-hash", False, _bytes(*MEASUREMENT_LENGTHS)
        ),
    )


_PLATFORM_TABLE = (
    ClaimSpec(t.PLATFORM_PROFILE, "cca-platform-profile", True, _platform_profile, "text"),
    ClaimSpec(t.PLATFORM_CHALLENGE, "cca-platform-challenge", True, _bytes(32, 48, 64)),
    ClaimSpec(t.PLATFORM_IMPLEMENTATION_ID, "cca-platform-implementation-id", True, _bytes(32)),
    ClaimSpec(t.PLATFORM_INSTANCE_ID, "cca-platform-instance-id", True, _ueid),
    ClaimSpec(t.PLATFORM_CONFIG, "cca-platform-config", True, _bytes()),
    ClaimSpec(t.PLATFORM_LIFECYCLE, "cca-platform-lifecycle", True, _lifecycle, "int"),
    ClaimSpec(t.PLATFORM_SW_COMPONENTS, "cca-platform-sw-components", True, _sw_components, "sw-components"),
    ClaimSpec(t.PLATFORM_VERIFICATION_SERVICE, "cca-platform-service-indicator", False, _text, "text"),
    ClaimSpec(t.PLATFORM_HASH_ALGO_ID, "cca-platform-hash-algo-id", True, _hash_name, "text"),
)

REALM_TABLES: dict[str | None, tuple[ClaimSpec, ...]] = {p: _realm_table(p) for p in (None, *REALM_PROFILES)}
PLATFORM_TABLES: dict[str, tuple[ClaimSpec, ...]] = {p: _PLATFORM_TABLE for p in PLATFORM_PROFILES}
# Names of every claim either token may carry, for JSON in and out.
REALM_NAMES = {s.key: s for s in REALM_TABLES[t.PROFILE_REALM_2_0]}
PLATFORM_NAMES = {s.key: s for s in _PLATFORM_TABLE}


def realm_claim_name(key: int) -> str:
    spec = REALM_NAMES.get(key)
    return spec.name if spec else f"realm claim {key}"


def platform_claim_name(key: int) -> str:
    spec = PLATFORM_NAMES.get(key)
    return spec.name if spec else f"platform claim {key}"


def _validate(
    claims: Mapping[Any, Any], table: Sequence[ClaimSpec], what: str
) -> tuple[list[Problem], list[Problem]]:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    known = {spec.key for spec in table}
    for spec in table:
        if spec.key not in claims:
            if spec.mandatory:
                problems.append(Problem(spec.name, "mandatory claim missing"))
            continue
        if (bad := spec.check(claims[spec.key])) is not None:
            problems.append(Problem(spec.name, bad))
    for key in claims:
        if key not in known:
            # EAT lets a token carry more claims; a verifier does not rely on them.
            warnings.append(Problem(f"{what} claim {shown(key)}", "not defined by the profile; ignored"))
    return problems, warnings


def validate_realm_claims(
    claims: Mapping[Any, Any], *, strict: bool = False
) -> tuple[list[Problem], list[Problem]]:
    """Check a realm claim map against the table of its profile: (problems, warnings).

    Measurements longer than the realm hash algorithm's digest (Veraison's test tokens
    carry 64-byte values with sha-256) are a warning, or a problem when `strict`."""
    profile = claims.get(t.REALM_PROFILE)
    if profile is not None and (not isinstance(profile, str) or profile not in REALM_PROFILES):
        return [Problem("cca-realm-profile", f"unknown realm profile {shown(profile)}")], []
    problems, warnings = _validate(claims, REALM_TABLES[profile], "realm")
    algo = claims.get(t.REALM_HASH_ALGO_ID)
    if isinstance(algo, str) and algo in HASH_LENGTHS:
        want = HASH_LENGTHS[algo]
        named = [("cca-realm-initial-measurement", claims.get(t.REALM_INITIAL_MEASUREMENT))]
        rems = claims.get(t.REALM_EXTENSIBLE_MEASUREMENTS)
        if isinstance(rems, Sequence) and not isinstance(rems, str | bytes):
            named += [(f"cca-realm-extensible-measurements[{i}]", m) for i, m in enumerate(rems)]
        for name, value in named:
            if isinstance(value, bytes) and len(value) in MEASUREMENT_LENGTHS and len(value) != want:
                p = Problem(name, f"{len(value)} bytes, but cca-realm-hash-algo-id {algo} gives {want}")
                (problems if strict else warnings).append(p)
    elif isinstance(algo, str):
        warnings.append(Problem("cca-realm-hash-algo-id", f"unknown hash algorithm {shown(algo)}"))
    return problems, warnings


def validate_platform_claims(claims: Mapping[Any, Any]) -> tuple[list[Problem], list[Problem]]:
    """Check a platform claim map against the table of its profile: (problems, warnings)."""
    profile = claims.get(t.PLATFORM_PROFILE)
    if profile is None:
        return [Problem("cca-platform-profile", "mandatory claim missing")], []
    if not isinstance(profile, str) or profile not in PLATFORM_TABLES:
        return [Problem("cca-platform-profile", f"unknown platform profile {shown(profile)}")], []
    return _validate(claims, PLATFORM_TABLES[profile], "platform")


# --- Veraison JSON ----------------------------------------------------------------------
class ClaimsJsonError(ValueError):
    """A JSON claim set that cannot be turned into claims; `problem` names the claim."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _b64decode(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ClaimsJsonError(Problem(name, f"expected a base64 string, got {type(value).__name__}"))
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClaimsJsonError(Problem(name, "not valid base64")) from None


def _from_json_value(spec: ClaimSpec, value: Any) -> Any:
    name = spec.name
    if spec.kind == "bytes":
        return _b64decode(name, value)
    if spec.kind == "bytes-array":
        if not isinstance(value, list):
            raise ClaimsJsonError(Problem(name, "expected an array of base64 strings"))
        return [_b64decode(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if spec.kind == "sw-components":
        if not isinstance(value, list):
            raise ClaimsJsonError(Problem(name, "expected an array of software components"))
        out = []
        for i, comp in enumerate(value):
            if not isinstance(comp, dict):
                raise ClaimsJsonError(Problem(name, f"component {i}: not an object"))
            c: dict[int, Any] = {}
            for field, v in comp.items():
                if field not in SWC_KEYS:
                    raise ClaimsJsonError(Problem(name, f"component {i}: unknown field {shown(field)}"))
                key = SWC_KEYS[field]
                if key in (t.SWC_MEASUREMENT_VALUE, t.SWC_SIGNER_ID):
                    c[key] = _b64decode(f"{name}: component {i}: {field}", v)
                else:
                    c[key] = v
            out.append(c)
        return out
    return value  # text, int, mec: JSON scalars map one to one


def _claims_from_json(obj: Any, names: Mapping[int, ClaimSpec], what: str) -> dict[int, Any]:
    if not isinstance(obj, dict):
        raise ClaimsJsonError(Problem(what, "expected a JSON object of claims"))
    by_name = {spec.name: spec for spec in names.values()}
    claims: dict[int, Any] = {}
    for name, value in obj.items():
        spec = by_name.get(name)
        if spec is None:
            raise ClaimsJsonError(Problem(name, f"not a {what} claim"))
        claims[spec.key] = _from_json_value(spec, value)
    return claims


def realm_claims_from_json(obj: Any) -> dict[int, Any]:
    """Veraison-style JSON realm claims -> claim map (keys as in the token)."""
    return _claims_from_json(obj, REALM_NAMES, "cca-realm-delegated-token")


def platform_claims_from_json(obj: Any) -> dict[int, Any]:
    """Veraison-style JSON platform claims -> claim map (keys as in the token)."""
    return _claims_from_json(obj, PLATFORM_NAMES, "cca-platform-token")


def _to_json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {SWC_NAMES.get(k, k if isinstance(k, str) else shown(k)): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_to_json_value(v) for v in value]
    return value


def claims_to_json(claims: Mapping[Any, Any], names: Mapping[int, ClaimSpec]) -> dict[str, Any]:
    """Claim map -> JSON object with Veraison's claim names and base64 byte strings."""
    out: dict[str, Any] = {}
    for key, value in claims.items():
        spec = names.get(key)
        out[spec.name if spec else key if isinstance(key, str) else shown(key)] = _to_json_value(value)
    return out


def realm_claims_to_json(claims: Mapping[Any, Any]) -> dict[str, Any]:
    return claims_to_json(claims, REALM_NAMES)


def platform_claims_to_json(claims: Mapping[Any, Any]) -> dict[str, Any]:
    return claims_to_json(claims, PLATFORM_NAMES)
