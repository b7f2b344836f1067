"""attest/refvals.py: each field of the plain reference-values form and of a CoMID taking
effect on a real token's verdict (the TF-M example token and its CPAK from the shared
vectors), and malformed values refused with one line."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from unirealm.arch import token as t
from unirealm.attest.corim import platform_comid
from unirealm.attest.keys import load_public_key
from unirealm.attest.refvals import ReferenceValuesError, reference_values_from_json
from unirealm.attest.verify import CcaToken, decode_token, verify_token

TFM_TOKEN = "tf-m-tools/08c16e94-head/cca_example_token.cbor"
TFM_KEY = "tf-m-tools/08c16e94-head/cca_platform.pem"
TFM_PUB = "veraison-ccatoken/tf-rmm-cca_platform.pub"


def _token(vectors: Path) -> CcaToken:
    return decode_token((vectors / TFM_TOKEN).read_bytes())


def _problems(vectors: Path, ref: Any) -> list[str]:
    cpak = load_public_key((vectors / TFM_KEY).read_bytes())
    result = verify_token(_token(vectors), cpak, reference=reference_values_from_json(ref))
    return [str(p) for p in result.problems]


def _plain_components(vectors: Path) -> list[dict[str, Any]]:
    comps = _token(vectors).platform.claims[t.PLATFORM_SW_COMPONENTS]
    out = []
    for c in comps:
        item = {"measurement-type": c[t.SWC_MEASUREMENT_TYPE], "measurement-value": c[t.SWC_MEASUREMENT_VALUE].hex()}
        if t.SWC_SIGNER_ID in c:
            item["signer-id"] = c[t.SWC_SIGNER_ID].hex()
        if t.SWC_VERSION in c:
            item["version"] = c[t.SWC_VERSION]
        out.append(item)
    return out


def test_plain_implementation_id_and_config(vectors: Path) -> None:
    p = _token(vectors).platform.claims
    impl, config = p[t.PLATFORM_IMPLEMENTATION_ID], p[t.PLATFORM_CONFIG]
    ref = reference_values_from_json({"implementation-id": impl.hex(), "platform-config": "0x" + config.hex()})
    assert (ref.implementation_id, ref.platform_config) == (impl, config)
    assert _problems(vectors, {"implementation-id": impl.hex(), "platform-config": config.hex()}) == []
    assert _problems(vectors, {"implementation-id": "00" * 32}) == [
        "cca-platform-implementation-id: does not match the reference"]
    assert _problems(vectors, {"platform-config": config.hex() + "00"}) == [
        "cca-platform-config: does not match the reference"]
    with pytest.raises(ReferenceValuesError, match=r"^implementation-id: not a hex string$"):
        reference_values_from_json({"implementation-id": "xyz"})


def test_plain_software_components(vectors: Path) -> None:
    comps = _plain_components(vectors)
    assert any("signer-id" in c for c in comps)
    ref = reference_values_from_json({"sw-components": comps})
    assert ref.sw_components is not None and len(ref.sw_components) == len(comps)
    signed = next(i for i, c in enumerate(comps) if "signer-id" in c)
    assert ref.sw_components[signed][t.SWC_SIGNER_ID] == bytes.fromhex(comps[signed]["signer-id"])
    assert _problems(vectors, {"sw-components": comps}) == []
    # another signer for one component: that component matches nothing
    other = copy.deepcopy(comps)
    other[signed]["signer-id"] = "00" * 32
    kind = comps[signed]["measurement-type"]
    assert _problems(vectors, {"sw-components": other}) == [
        f"cca-platform-sw-components: component {signed} ({kind}) matches no reference value"]
    other = copy.deepcopy(comps)
    other[0]["measurement-value"] = "00" * 32
    assert _problems(vectors, {"sw-components": other}) == [
        f"cca-platform-sw-components: component 0 ({comps[0]['measurement-type']}) matches no reference value"]
    for bad, message in (
        ({"sw-components": {"a": 1}}, "sw-components: expected an array"),
        ({"sw-components": [5]}, "sw-components[0]: expected an object"),
        ({"sw-components": [{"signer-id": "00"}]}, "sw-components[0]: measurement-value missing"),
        ({"sw-components": [{"measurement-value": "00", "signer-id": "q"}]},
         "sw-components[0].signer-id: not a hex string"),
        ({"sw-components": [{"measurement-value": 5}]}, "sw-components[0].measurement-value: expected a hex string"),
        ({"rems": ["00"] * 3}, "rems: expected an array of 4 hex strings or nulls"),
        ({"rim": "00", "colour": 1}, "unknown reference value(s): colour"),
    ):
        with pytest.raises(ReferenceValuesError) as exc:
            reference_values_from_json(bad)
        assert str(exc.value) == message


def _platform_comid(vectors: Path) -> dict[str, Any]:
    p = _token(vectors).platform.claims
    return platform_comid((vectors / TFM_PUB).read_bytes(), p[t.PLATFORM_IMPLEMENTATION_ID],
                          p[t.PLATFORM_INSTANCE_ID], p[t.PLATFORM_SW_COMPONENTS])


def _measurements(comid: dict[str, Any]) -> list[dict[str, Any]]:
    return comid["triples"]["reference-values"][0]["measurements"]  # type: ignore[no-any-return]


def test_comid_environment_is_the_implementation_id(vectors: Path) -> None:
    """The class id of the triple holding software components is the implementation ID the
    token must carry."""
    comid = _platform_comid(vectors)
    assert reference_values_from_json(comid).implementation_id == \
        _token(vectors).platform.claims[t.PLATFORM_IMPLEMENTATION_ID]
    assert _problems(vectors, comid) == []
    comid["triples"]["reference-values"][0]["environment"]["class"]["id"]["value"] = base64.b64encode(
        bytes(32)).decode()
    assert _problems(vectors, comid) == ["cca-platform-implementation-id: does not match the reference"]


def test_comid_cryptokeys(vectors: Path) -> None:
    """cryptokeys holds the signer ID; an empty list sets none (any signer matches)."""
    comid = _platform_comid(vectors)
    signed = next(i for i, m in enumerate(_measurements(comid)) if m["value"].get("cryptokeys"))
    _measurements(comid)[signed]["value"]["cryptokeys"] = [{"type": "bytes", "value": base64.b64encode(
        bytes(32)).decode()}]
    assert len(_problems(vectors, comid)) == 1
    _measurements(comid)[signed]["value"]["cryptokeys"] = []
    ref = reference_values_from_json(comid)
    assert ref.sw_components is not None and t.SWC_SIGNER_ID not in ref.sw_components[signed]
    assert _problems(vectors, comid) == []


@pytest.mark.parametrize("value", ["AQID!", "AQ ID", "A", "AQIDBA=A"])
def test_comid_bytes_must_be_strict_base64(value: str, vectors: Path) -> None:
    """Standard base64 (RFC 4648 §4) as Veraison writes it: characters outside the alphabet
    or misplaced padding are refused, not skipped."""
    comid = _platform_comid(vectors)
    _measurements(comid)[0]["value"]["cryptokeys"] = [{"type": "bytes", "value": value}]
    with pytest.raises(ReferenceValuesError) as exc:
        reference_values_from_json(comid)
    assert str(exc.value) == "cca.software-component cryptokeys: not valid base64"
