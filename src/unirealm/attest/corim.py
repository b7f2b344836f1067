"""Reference values and trust anchors as CoMIDs, in the JSON shape Veraison's Arm CCA
scheme provisions (the `cocli comid create` template form).

Realm reference values: one reference-values triple whose environment class id is the
RIM, with measurements `cca.rim`, `cca.rem0`..`cca.rem3` (digests) and `cca.rpv` (raw
bytes). Platform endorsement: reference values for the software components
(`cca.software-component`: name = measurement type, digest = measurement value,
cryptokeys = signer ID) and the platform config (`cca.platform-config`: raw-value with the
raw-value-mask Veraison's CCA platform profile requires beside it; all ones: every bit counts), and an attester-verification-keys triple
binding the CPAK (PEM) to the implementation and instance IDs.

Encodings follow Veraison's JSON: byte values are standard base64; digests are
[IANA named-information algorithm id, unpadded base64url].
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization

from unirealm.arch import token as t

# IANA Named Information Hash Algorithm Registry ids
NAMED_INFORMATION_IDS = {"sha-256": 1, "sha-384": 7, "sha-512": 8}
_IDS_BY_LENGTH = {32: 1, 48: 7, 64: 8}
# A fixed namespace so the same reference values give the same tag id.
_TAG_NAMESPACE = uuid.UUID("5d2c0b7e-6a52-4c1e-9a43-7f2b3e1c0ca0")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _digest(value: bytes, algo: str | None = None) -> list[Any]:
    """[named-information id, value]: the id of `algo` when it names one, else the one the
    length gives. A named algorithm whose digests have another length is refused (CoRIM's
    digest is valid only when the value is that algorithm's length, as Veraison checks)."""
    by_length = _IDS_BY_LENGTH.get(len(value))
    alg_id = NAMED_INFORMATION_IDS.get(algo or "") or by_length
    if alg_id is None:
        raise ValueError(f"no hash algorithm gives a {len(value)}-byte digest")
    if alg_id != by_length:
        raise ValueError(f"a {len(value)}-byte value is not a {algo} digest")
    return [alg_id, base64.urlsafe_b64encode(value).decode().rstrip("=")]


def _typed_bytes(data: bytes) -> dict[str, str]:
    return {"type": "bytes", "value": _b64(data)}


def _measurement(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": {"type": "string", "value": key}, "value": value}


def _tag_identity(tag_id: str | None, *parts: bytes) -> dict[str, Any]:
    ident = tag_id or str(uuid.uuid5(_TAG_NAMESPACE, b"".join(parts).hex())).upper()
    return {"id": ident, "version": 0}


def realm_comid(
    rim: bytes,
    *,
    hash_algo: str | None = None,
    rpv: bytes | None = None,
    rems: Sequence[bytes] | None = None,
    tag_id: str | None = None,
) -> dict[str, Any]:
    """A CoMID with the reference values of one realm: its RIM, and RPV / REMs when known."""
    measurements = [_measurement("cca.rim", {"digests": [_digest(rim, hash_algo)]})]
    for i, rem in enumerate(rems or []):
        measurements.append(_measurement(f"cca.rem{i}", {"digests": [_digest(rem, hash_algo)]}))
    if rpv is not None:
        measurements.append(_measurement("cca.rpv", {"raw-value": _typed_bytes(rpv)}))
    return {
        "tag-identity": _tag_identity(tag_id, rim, rpv or b""),
        "triples": {
            "reference-values": [
                {"environment": {"class": {"id": _typed_bytes(rim)}}, "measurements": measurements}
            ]
        },
    }


_SWC_FIELDS = {
    "measurement-type": t.SWC_MEASUREMENT_TYPE,
    "measurement-value": t.SWC_MEASUREMENT_VALUE,
    "version": t.SWC_VERSION,
    "signer-id": t.SWC_SIGNER_ID,
    "measurement-description": t.SWC_MEASUREMENT_DESCRIPTION,
}


def _component_field(comp: Mapping[Any, Any], name: str) -> Any:
    """A component may be keyed by Veraison's names or by the token's integer labels."""
    if name in comp:
        return comp[name]
    return comp.get(_SWC_FIELDS[name])


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise ValueError(f"{what}: expected bytes or a hex string")


def _sw_component(comp: Mapping[Any, Any], i: int) -> dict[str, Any]:
    value = _component_field(comp, "measurement-value")
    if value is None:
        raise ValueError(f"sw_components[{i}]: measurement-value missing")
    mval: dict[str, Any] = {}
    signer = _component_field(comp, "signer-id")
    if signer is not None:
        mval["cryptokeys"] = [_typed_bytes(_as_bytes(signer, f"sw_components[{i}].signer-id"))]
    description = _component_field(comp, "measurement-description")
    algo = description if description in NAMED_INFORMATION_IDS else None
    mval["digests"] = [_digest(_as_bytes(value, f"sw_components[{i}].measurement-value"), algo)]
    name = _component_field(comp, "measurement-type")
    if name is not None:
        mval["name"] = name
    version = _component_field(comp, "version")
    if version is not None:
        mval["version"] = {"value": version}
    return _measurement("cca.software-component", mval)


def platform_comid(
    cpak_public_pem: bytes,
    implementation_id: bytes,
    instance_id: bytes,
    sw_components: list[dict[str, Any]],
    *,
    platform_config: bytes | None = None,
    tag_id: str | None = None,
) -> dict[str, Any]:
    """A CoMID endorsing a CCA platform: reference values for its software components
    (and config), and the CPAK as the attester verification key of the instance.

    `sw_components` are dicts keyed by Veraison's names (measurement-type,
    measurement-value, version, signer-id, measurement-description) or by the token's
    labels (1, 2, 4, 5, 6), as `decode_token` returns them; byte values as bytes or hex."""
    if len(implementation_id) != 32:
        raise ValueError("implementation_id must be 32 bytes")
    if len(instance_id) != 33 or instance_id[0] != 0x01:
        raise ValueError("instance_id must be a 33-byte UEID of type 0x01")
    try:
        key = serialization.load_pem_public_key(cpak_public_pem)
    except ValueError as exc:
        raise ValueError(f"cpak_public_pem is not a PEM public key ({exc})") from None
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    measurements = [_sw_component(c, i) for i, c in enumerate(sw_components)]
    if platform_config is not None:
        measurements.append(_measurement("cca.platform-config", {
            "raw-value": _typed_bytes(platform_config),
            "raw-value-mask": _b64(b"\xff" * len(platform_config)),
        }))
    env_class = {"class": {"id": _typed_bytes(implementation_id)}}
    return {
        "tag-identity": _tag_identity(tag_id, implementation_id, instance_id),
        "triples": {
            "reference-values": [{"environment": env_class, "measurements": measurements}],
            "attester-verification-keys": [
                {
                    "environment": {**env_class, "instance": {"type": "ueid", "value": _b64(instance_id)}},
                    "verification-keys": [{"type": "pkix-base64-key", "value": pem.decode().strip()}],
                }
            ],
        },
    }
