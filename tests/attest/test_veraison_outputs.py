"""Outputs Veraison's tools take: the platform CoMID's cca.platform-config with its
raw-value-mask, the CPAK as a JWK, and `token verify -t FILE -k KEY -c CLAIMS.json` as
evcli spells it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from unirealm.arch import token as t
from unirealm.attest.corim import platform_comid
from unirealm.attest.keys import load_public_key
from unirealm.attest.refvals import reference_values_from_json
from unirealm.attest.verify import decode_token, verify_token

Cli = Callable[..., tuple[int, str, str]]
GOOD = "veraison-ccatoken/testGoodCCAToken.cbor"
IAK = "veraison-ccatoken/testIAK.jwk.json"
TFM_TOKEN = "tf-m-tools/08c16e94-head/cca_example_token.cbor"
TFM_KEY = "tf-m-tools/08c16e94-head/cca_platform.pem"


def _config_measurement(comid: dict) -> dict:  # type: ignore[type-arg]
    (m,) = [m for m in comid["triples"]["reference-values"][0]["measurements"]
            if m["key"]["value"] == "cca.platform-config"]
    return m["value"]  # type: ignore[no-any-return]


def test_platform_config_carries_a_raw_value_mask(vectors: Path) -> None:
    token = decode_token((vectors / TFM_TOKEN).read_bytes())
    p = token.platform.claims
    pem = (vectors / "veraison-ccatoken/tf-rmm-cca_platform.pub").read_bytes()
    config = p[t.PLATFORM_CONFIG]
    comid = platform_comid(pem, p[t.PLATFORM_IMPLEMENTATION_ID], p[t.PLATFORM_INSTANCE_ID],
                           p[t.PLATFORM_SW_COMPONENTS], platform_config=config)
    mval = _config_measurement(comid)
    assert mval["raw-value"] == {"type": "bytes", "value": base64.b64encode(config).decode()}
    assert base64.b64decode(mval["raw-value-mask"]) == b"\xff" * len(config)
    cpak = load_public_key((vectors / TFM_KEY).read_bytes())
    assert verify_token(token, cpak, reference=reference_values_from_json(comid)).ok
    # a different config fails under the full mask; the same difference under a mask that
    # leaves that bit out passes
    mval["raw-value"]["value"] = base64.b64encode(bytes([config[0] ^ 0x80]) + config[1:]).decode()
    result = verify_token(token, cpak, reference=reference_values_from_json(comid))
    assert [str(x) for x in result.problems] == ["cca-platform-config: does not match the reference"]
    mval["raw-value-mask"] = base64.b64encode(b"\x7f" + b"\xff" * (len(config) - 1)).decode()
    assert verify_token(token, cpak, reference=reference_values_from_json(comid)).ok
    mval["raw-value-mask"] = base64.b64encode(b"\xff").decode()
    with pytest.raises(ValueError, match="raw-value-mask is not as long as raw-value"):
        reference_values_from_json(comid)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_platform_export_cpak_jwk(cli: Cli, data_dir: Path) -> None:
    jwk_path, pem_path, comid_path = data_dir / "cpak.jwk", data_dir / "cpak.pem", data_dir / "comid.json"
    status, out, _ = cli("platform", "export", "--cpak-jwk", jwk_path, "--cpak-pub", pem_path, "--comid", comid_path)
    assert status == 0 and f"wrote CPAK public key (JWK) to {jwk_path}" in out
    jwk = json.loads(jwk_path.read_text())
    assert sorted(jwk) == ["crv", "kty", "x", "y"] and jwk["kty"] == "EC" and jwk["crv"] == "P-384"
    x, y = (int.from_bytes(base64.urlsafe_b64decode(jwk[c] + "=="), "big") for c in ("x", "y"))
    key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
    pem = serialization.load_pem_public_key(pem_path.read_bytes())
    assert isinstance(pem, ec.EllipticCurvePublicKey)
    assert key.public_numbers() == pem.public_numbers()
    assert "raw-value-mask" in _config_measurement(json.loads(comid_path.read_text()))


def test_verify_as_evcli_spells_it(cli: Cli, vectors: Path, tmp_path: Path) -> None:
    claims = tmp_path / "claims.json"
    status, out, _ = cli("token", "verify", "-t", vectors / GOOD, "-k", vectors / IAK, "-c", claims)
    assert status == 0 and out.strip().endswith("verified")
    want = json.loads((vectors / "veraison-ccatoken/testCombinedClaimsJSON.json").read_text())
    assert json.loads(claims.read_text()) == {k: want[k] for k in ("cca-platform-token", "cca-realm-delegated-token")}
    assert cli("token", "verify", "--token", vectors / GOOD, "--key", vectors / IAK)[0] == 0


def test_evcli_spelling_refusals(cli: Cli, vectors: Path, tmp_path: Path) -> None:
    claims = tmp_path / "claims.json"
    alt = vectors / "veraison-ccatoken/testAltIAK.jwk.json"
    status, _, _ = cli("token", "verify", "-t", vectors / GOOD, "-k", alt, "-c", claims)
    assert status == 1 and not claims.exists()  # claims only for a verified token
    status, _, err = cli("token", "verify", vectors / GOOD, "-t", vectors / GOOD, "-k", vectors / IAK)
    assert status == 2 and "give the token once" in err
    status, _, err = cli("token", "verify", "-k", vectors / IAK)
    assert status == 2 and "give the token once" in err


def test_platform_export_refuses_a_component_digest_its_hash_does_not_fit(
        cli: Cli, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A firmware component whose measurement does not fit the hash it names gets one line,
    not a traceback, and no CoMID is written."""
    import dataclasses

    from unirealm.machine import platform

    measured = platform.PlatformRoT._measure_firmware

    def misnamed(self: platform.PlatformRoT) -> list[platform.SoftwareComponent]:
        return [dataclasses.replace(c, measurement_description="sha-512") for c in measured(self)]

    monkeypatch.setattr(platform.PlatformRoT, "_measure_firmware", misnamed)
    comid_path = data_dir / "comid.json"
    status, _, err = cli("platform", "export", "--comid", comid_path)
    assert status == 2 and not comid_path.exists()
    assert err.strip().splitlines()[-1].endswith("a 32-byte value is not a sha-512 digest")
    assert "Traceback" not in err
