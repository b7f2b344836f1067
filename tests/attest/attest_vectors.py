"""Helpers for the token vectors: a reader for the small YAML subset TF-M tools' claim
sources use (PyYAML is not a dependency), their claim names, and a token builder."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from unirealm.arch import token as t
from unirealm.attest.keys import cose_alg_for, ecdsa_signer

# --- YAML subset: mappings, "- " lists, !!binary (inline or block), !inc, scalars -----------


def load_yaml(path: Path) -> Any:
    lines = []
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((len(raw) - len(raw.lstrip(" ")), stripped))
    value, end = _block(lines, 0, lines[0][0], path.parent)
    assert end == len(lines), f"{path}: unparsed line {lines[end]}"
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int, base: Path) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        return _list(lines, i, indent, base)
    return _mapping(lines, i, indent, base)


def _deeper(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[list[str], int]:
    out = []
    while i < len(lines) and lines[i][0] > indent:
        out.append(lines[i][1])
        i += 1
    return out, i


def _value(rest: str, lines: list[tuple[int, str]], i: int, indent: int, base: Path) -> tuple[Any, int]:
    """The value after `key:` or `- ` on line i-1; may consume following lines."""
    if rest == "":
        child = lines[i][0]
        if child > indent or (child == indent and lines[i][1].startswith("- ")):
            return _block(lines, i, child, base)
        return None, i
    if rest.startswith("!!binary"):
        arg = rest[len("!!binary") :].strip()
        if arg == "|":
            body, i = _deeper(lines, i, indent)
            arg = "".join(body)
        return base64.b64decode(arg), i
    if rest.startswith("!inc "):
        return load_yaml(base / rest[5:].strip()), i
    if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
        return rest[1:-1], i
    try:
        return int(rest, 0), i
    except ValueError:
        return rest, i


def _split(text: str) -> tuple[str, str]:
    if text.endswith(":") and ": " not in text:
        return text[:-1], ""
    key, rest = text.split(": ", 1)
    return key, rest.strip()


def _mapping(lines: list[tuple[int, str]], i: int, indent: int, base: Path) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
        key, rest = _split(lines[i][1])
        out[key], i = _value(rest, lines, i + 1, indent, base)
    return out, i


def _list(lines: list[tuple[int, str]], i: int, indent: int, base: Path) -> tuple[list[Any], int]:
    out: list[Any] = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
        item = lines[i][1][2:].strip()
        if item.startswith("!!binary") or (": " not in item and not item.endswith(":")):
            value, i = _value(item, lines, i + 1, indent, base)
        else:
            # "- key: value" opens a mapping whose other keys sit two columns deeper
            lines[i] = (indent + 2, item)
            value, i = _mapping(lines, i, indent + 2, base)
        out.append(value)
    return out, i


# --- TF-M tools claim names -> claim labels -------------------------------------------------
TFM_PLATFORM = {
    "cca_attestation_profile": t.PLATFORM_PROFILE,
    "cca_platform_challenge": t.PLATFORM_CHALLENGE,
    "cca_platform_implementation_id": t.PLATFORM_IMPLEMENTATION_ID,
    "cca_platform_instance_id": t.PLATFORM_INSTANCE_ID,
    "cca_platform_config": t.PLATFORM_CONFIG,
    "cca_platform_lifecycle": t.PLATFORM_LIFECYCLE,
    "cca_platform_hash_algo_id": t.PLATFORM_HASH_ALGO_ID,
    "cca_platform_verification_service": t.PLATFORM_VERIFICATION_SERVICE,
    "cca_platform_sw_components": t.PLATFORM_SW_COMPONENTS,
}
TFM_SW_COMPONENT = {
    "sw_component_type": t.SWC_MEASUREMENT_TYPE,
    "measurement_value": t.SWC_MEASUREMENT_VALUE,
    "sw_component_version": t.SWC_VERSION,
    "signer_id": t.SWC_SIGNER_ID,
    "cca_sw_component_hash_id": t.SWC_MEASUREMENT_DESCRIPTION,
}
TFM_REALM = {
    "cca_realm_profile": t.REALM_PROFILE,
    "cca_realm_challenge": t.REALM_CHALLENGE,
    "cca_realm_instance_id": t.REALM_INSTANCE_ID,
    "cca_realm_personalization_value": t.REALM_PERSONALIZATION_VALUE,
    "cca_realm_hash_algm_id": t.REALM_HASH_ALGO_ID,
    "cca_realm_pub_key": t.REALM_PUBLIC_KEY,
    "cca_realm_pub_key_hash_algo_id": t.REALM_PUBLIC_KEY_HASH_ALGO_ID,
    "cca_realm_initial_measurement": t.REALM_INITIAL_MEASUREMENT,
    "cca_realm_extensible_measurements": t.REALM_EXTENSIBLE_MEASUREMENTS,
    "cca_realm_mec_policy": t.REALM_MEC_POLICY,
}


def tfm_platform_claims(src: Mapping[str, Any]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for name, value in src.items():
        key = TFM_PLATFORM[name]
        if key == t.PLATFORM_LIFECYCLE and isinstance(value, str):
            value = int(value.rsplit("_", 1)[1], 0)  # "secured_0x3003"
        elif key == t.PLATFORM_SW_COMPONENTS:
            value = [{TFM_SW_COMPONENT[k]: v for k, v in comp.items()} for comp in value]
        out[key] = value
    return out


def tfm_realm_claims(src: Mapping[str, Any]) -> dict[int, Any]:
    return {TFM_REALM[name]: value for name, value in src.items()}


def plain(value: Any) -> Any:
    """cbor2 gives tuples/frozendicts inside tags: compare as lists/dicts."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# --- building tokens --------------------------------------------------------------------------
def signed(claims: Mapping[int, Any], key: ec.EllipticCurvePrivateKey) -> bytes:
    alg = cose_alg_for(key)
    return t.sign1(cbor2.dumps(dict(claims)), ecdsa_signer(key, alg), alg).encode()


def build_token(
    platform_claims: Mapping[int, Any],
    realm_claims: Mapping[int, Any],
    cpak: ec.EllipticCurvePrivateKey,
    rak: ec.EllipticCurvePrivateKey,
    tag: int = t.TAG_CMW_COLLECTION,
) -> bytes:
    return t.encode_collection(signed(platform_claims, cpak), signed(realm_claims, rak), tag)
