"""Reference values a verifier compares a token's measurements with.

Read from a plain JSON object (hex values):

    {"rim": "<hex>" | ["<hex>", ...], "rems": ["<hex>" | null, x4], "rpv": "<hex>",
     "implementation-id": "<hex>", "platform-config": "<hex>",
     "sw-components": [{"measurement-type": "BL", "measurement-value": "<hex>",
                        "signer-id": "<hex>", "version": "1.0"}]}

or from CoMIDs in the JSON shape Veraison's Arm CCA scheme takes (what
`unirealm measure --comid` and `attest.corim.platform_comid` write): measurements keyed
`cca.rim`, `cca.rem0`..`cca.rem3`, `cca.rpv`, `cca.software-component`, `cca.platform-config`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unirealm.arch import token as t
from unirealm.attest.claims import Problem


class ReferenceValuesError(ValueError):
    """A reference-values file that cannot be read."""


@dataclass
class ReferenceValues:
    rims: list[bytes] = field(default_factory=list)  # any one may match
    rems: list[bytes | None] | None = None  # REM[i] must match where not None
    rpv: bytes | None = None
    implementation_id: bytes | None = None
    platform_config: bytes | None = None
    platform_config_mask: bytes | None = None  # the bits of platform_config that count (CoMID raw-value-mask)
    sw_components: list[dict[int, Any]] | None = None  # every token component must match one


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ReferenceValuesError(f"{what}: expected a hex string")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise ReferenceValuesError(f"{what}: not a hex string") from None


def _b64(value: Any, what: str, *, url: bool = False) -> bytes:
    if not isinstance(value, str):
        raise ReferenceValuesError(f"{what}: expected a base64 string")
    try:
        if url:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ReferenceValuesError(f"{what}: not valid base64") from None


def _plain(obj: Mapping[str, Any]) -> ReferenceValues:
    known = {"rim", "rems", "rpv", "implementation-id", "platform-config", "sw-components"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ReferenceValuesError(f"unknown reference value(s): {', '.join(unknown)}")
    ref = ReferenceValues()
    rim = obj.get("rim")
    if rim is not None:
        ref.rims = [_hex(r, "rim") for r in (rim if isinstance(rim, list) else [rim])]
    if "rems" in obj:
        rems = obj["rems"]
        if not isinstance(rems, list) or len(rems) != 4:
            raise ReferenceValuesError("rems: expected an array of 4 hex strings or nulls")
        ref.rems = [None if r is None else _hex(r, f"rems[{i}]") for i, r in enumerate(rems)]
    for name, attr in (("rpv", "rpv"), ("implementation-id", "implementation_id"),
                       ("platform-config", "platform_config")):  # fmt: skip
        if obj.get(name) is not None:
            setattr(ref, attr, _hex(obj[name], name))
    if "sw-components" in obj:
        comps = obj["sw-components"]
        if not isinstance(comps, list):
            raise ReferenceValuesError("sw-components: expected an array")
        ref.sw_components = [_plain_component(c, i) for i, c in enumerate(comps)]
    return ref


def _plain_component(c: Any, i: int) -> dict[int, Any]:
    if not isinstance(c, dict):
        raise ReferenceValuesError(f"sw-components[{i}]: expected an object")
    out: dict[int, Any] = {}
    for name, key in (("measurement-type", t.SWC_MEASUREMENT_TYPE), ("version", t.SWC_VERSION)):
        if name in c:
            out[key] = c[name]
    for name, key in (("measurement-value", t.SWC_MEASUREMENT_VALUE), ("signer-id", t.SWC_SIGNER_ID)):
        if name in c:
            out[key] = _hex(c[name], f"sw-components[{i}].{name}")
    if t.SWC_MEASUREMENT_VALUE not in out:
        raise ReferenceValuesError(f"sw-components[{i}]: measurement-value missing")
    return out


def _typed_bytes(v: Any, what: str) -> bytes:
    if not isinstance(v, dict) or v.get("type") != "bytes":
        raise ReferenceValuesError(f'{what}: expected {{"type": "bytes", "value": ...}}')
    return _b64(v.get("value"), what)


def _digest(mval: Mapping[str, Any], what: str) -> bytes:
    digests = mval.get("digests")
    if not isinstance(digests, list) or not digests:
        raise ReferenceValuesError(f"{what}: no digests")
    entry = digests[0]
    if not (isinstance(entry, list) and len(entry) == 2):
        raise ReferenceValuesError(f"{what}: a digest is not [alg, value]")
    return _b64(entry[1], what, url=True)


def _comid(obj: Mapping[str, Any], ref: ReferenceValues) -> None:
    triples = obj.get("triples")
    if not isinstance(triples, dict):
        raise ReferenceValuesError("CoMID without triples")
    for i, triple in enumerate(triples.get("reference-values", [])):
        measurements = triple.get("measurements") if isinstance(triple, dict) else None
        if not isinstance(measurements, list):
            raise ReferenceValuesError(f"reference-values[{i}]: no measurements")
        for m in measurements:
            key = m.get("key", {}).get("value") if isinstance(m, dict) else None
            mval = m.get("value", {}) if isinstance(m, dict) else {}
            if key == "cca.rim":
                ref.rims.append(_digest(mval, key))
            elif isinstance(key, str) and key.startswith("cca.rem") and key[7:] in ("0", "1", "2", "3"):
                if ref.rems is None:
                    ref.rems = [None] * 4
                ref.rems[int(key[7:])] = _digest(mval, key)
            elif key == "cca.rpv":
                ref.rpv = _typed_bytes(mval.get("raw-value"), key)
            elif key == "cca.platform-config":
                ref.platform_config = _typed_bytes(mval.get("raw-value"), key)
                if "raw-value-mask" in mval:
                    ref.platform_config_mask = _b64(mval["raw-value-mask"], f"{key} raw-value-mask")
                    if len(ref.platform_config_mask) != len(ref.platform_config):
                        raise ReferenceValuesError(f"{key}: raw-value-mask is not as long as raw-value")
            elif key == "cca.software-component":
                comp: dict[int, Any] = {t.SWC_MEASUREMENT_VALUE: _digest(mval, key)}
                if "name" in mval:
                    comp[t.SWC_MEASUREMENT_TYPE] = mval["name"]
                keys = mval.get("cryptokeys")
                if isinstance(keys, list) and keys:
                    comp[t.SWC_SIGNER_ID] = _typed_bytes(keys[0], f"{key} cryptokeys")
                version = mval.get("version")
                if isinstance(version, dict) and "value" in version:
                    comp[t.SWC_VERSION] = version["value"]
                ref.sw_components = [*(ref.sw_components or []), comp]
            else:
                raise ReferenceValuesError(f"unknown CoMID measurement key {key!r}")
        env = triple.get("environment", {}).get("class", {}).get("id")
        if env is not None and any(
            isinstance(m, dict) and m.get("key", {}).get("value") == "cca.software-component"
            for m in measurements
        ):
            ref.implementation_id = _typed_bytes(env, "environment class id")


def reference_values_from_json(obj: Any) -> ReferenceValues:
    """Reference values from the plain form, a CoMID, or a list of CoMIDs."""
    if isinstance(obj, list):
        ref = ReferenceValues()
        for item in obj:
            if not isinstance(item, dict):
                raise ReferenceValuesError("a list of reference values must hold CoMID objects")
            _comid(item, ref)
        return ref
    if not isinstance(obj, dict):
        raise ReferenceValuesError("expected a JSON object")
    if "triples" in obj:
        ref = ReferenceValues()
        _comid(obj, ref)
        return ref
    return _plain(obj)


def _component_label(c: Any, i: int) -> str:
    kind = c.get(t.SWC_MEASUREMENT_TYPE) if isinstance(c, Mapping) else None
    return f"component {i}" + (f" ({kind})" if isinstance(kind, str) else "")


def _component_matches(ref: Mapping[int, Any], comp: Mapping[Any, Any]) -> bool:
    return all(comp.get(key) == value for key, value in ref.items())


def _config_matches(ref: ReferenceValues, config: Any) -> bool:
    assert ref.platform_config is not None
    if ref.platform_config_mask is None:
        return config == ref.platform_config
    if not isinstance(config, bytes) or len(config) != len(ref.platform_config):
        return False
    return all((a ^ b) & m == 0 for a, b, m in zip(config, ref.platform_config, ref.platform_config_mask, strict=True))


def compare_reference_values(
    ref: ReferenceValues, platform: Mapping[Any, Any], realm: Mapping[Any, Any] | None
) -> list[Problem]:
    problems: list[Problem] = []
    if realm is not None:
        if ref.rims and realm.get(t.REALM_INITIAL_MEASUREMENT) not in ref.rims:
            problems.append(Problem("cca-realm-initial-measurement", "does not match any reference RIM"))
        if ref.rems is not None:
            rems = realm.get(t.REALM_EXTENSIBLE_MEASUREMENTS)
            rems = list(rems) if isinstance(rems, Sequence) and not isinstance(rems, str | bytes) else []
            for i, want in enumerate(ref.rems):
                if want is not None and (i >= len(rems) or rems[i] != want):
                    problems.append(
                        Problem("cca-realm-extensible-measurements", f"REM[{i}] does not match the reference")
                    )
        if ref.rpv is not None and realm.get(t.REALM_PERSONALIZATION_VALUE) != ref.rpv:
            problems.append(Problem("cca-realm-personalization-value", "does not match the reference RPV"))
    if (
        ref.implementation_id is not None
        and platform.get(t.PLATFORM_IMPLEMENTATION_ID) != ref.implementation_id
    ):
        problems.append(Problem("cca-platform-implementation-id", "does not match the reference"))
    if ref.platform_config is not None and not _config_matches(ref, platform.get(t.PLATFORM_CONFIG)):
        problems.append(Problem("cca-platform-config", "does not match the reference"))
    if ref.sw_components is not None:
        comps = platform.get(t.PLATFORM_SW_COMPONENTS)
        comps = comps if isinstance(comps, Sequence) and not isinstance(comps, str | bytes) else []
        for i, comp in enumerate(comps):
            if not isinstance(comp, Mapping) or not any(
                _component_matches(r, comp) for r in ref.sw_components
            ):
                problems.append(
                    Problem(
                        "cca-platform-sw-components",
                        f"{_component_label(comp, i)} matches no reference value",
                    )
                )
    return problems
