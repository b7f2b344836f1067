"""`unirealm token decode|verify` in-process: exit codes 0/1/2 and output."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from unirealm.arch import token as t
from unirealm.attest.corim import platform_comid, realm_comid
from unirealm.attest.keys import load_public_key
from unirealm.attest.refvals import reference_values_from_json
from unirealm.attest.verify import decode_token, verify_token

Cli = Callable[..., tuple[int, str, str]]
GOOD = "veraison-ccatoken/testGoodCCAToken.cbor"
IAK = "veraison-ccatoken/testIAK.jwk.json"
TFM_TOKEN = "tf-m-tools/08c16e94-head/cca_example_token.cbor"
TFM_KEY = "tf-m-tools/08c16e94-head/cca_platform.pem"


def test_decode_json_uses_veraison_claim_names(cli: Cli, vectors: Path) -> None:
    status, out, _ = cli("token", "decode", vectors / GOOD, "--json")
    assert status == 0
    got = json.loads(out)
    want = json.loads((vectors / "veraison-ccatoken/testCombinedClaimsJSON.json").read_text())
    assert got["format"] == "tag-907 CMW collection"
    assert got["cca-platform-token"] == want["cca-platform-token"]
    assert got["cca-realm-delegated-token"] == want["cca-realm-delegated-token"]


def test_decode_text_names_format_and_profiles(cli: Cli, vectors: Path) -> None:
    status, out, _ = cli("token", "decode", vectors / TFM_TOKEN)
    assert status == 0
    assert "format: tag-907 CMW collection" in out
    assert t.PROFILE_REALM_2_0 in out and t.PROFILE_PLATFORM_1_0 in out
    assert "cca-realm-instance-id: 0102030405" in out
    assert "cca-platform-lifecycle: 0x3003 (secured)" in out


@pytest.mark.parametrize(
    ("token", "key"),
    [
        (TFM_TOKEN, TFM_KEY),
        (GOOD, IAK),
        ("veraison-ccatoken/tf-rmm-cca_token.cbor", "veraison-ccatoken/tf-rmm-cca_platform.pub"),
    ],
)
def test_verify_good_tokens_exit_0(cli: Cli, vectors: Path, token: str, key: str) -> None:
    status, out, _ = cli("token", "verify", vectors / token, "--cpak", vectors / key)
    assert status == 0, out
    assert out.strip().endswith("verified")


def test_verify_wrong_key_exits_1_naming_the_token(cli: Cli, vectors: Path) -> None:
    status, out, _ = cli(
        "token", "verify", vectors / GOOD, "--cpak", vectors / "veraison-ccatoken/testAltIAK.jwk.json"
    )
    assert status == 1
    assert "NOT verified" in out
    assert "  cca-platform-token: platform signature: ES256 signature does not verify with the CPAK" in out


def test_verify_strict_fails_on_long_measurements(cli: Cli, vectors: Path) -> None:
    status, out, _ = cli("token", "verify", vectors / GOOD, "--cpak", vectors / IAK, "--strict", "--json")
    assert status == 1
    result = json.loads(out)
    assert result["verified"] is False
    assert "cca-realm-initial-measurement" in {p["claim"] for p in result["problems"]}


def test_verify_challenge(cli: Cli, vectors: Path) -> None:
    token, key = vectors / "veraison-ccatoken/tf-rmm-cca_token.cbor", vectors / TFM_KEY
    assert cli("token", "verify", token, "--cpak", key, "--challenge", "ab" * 64)[0] == 0
    status, out, _ = cli("token", "verify", token, "--cpak", key, "--challenge", "ab" * 32)
    assert status == 1 and "cca-realm-challenge: does not match the expected challenge" in out


def _ref_file(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(obj))
    return path


def test_verify_reference_values_plain(cli: Cli, vectors: Path, tmp_path: Path) -> None:
    rim = "311314ab73620350cf758834ae5c65d9e8c2dc7febe6e7d9654bbe864e300d49"
    args = ("token", "verify", vectors / TFM_TOKEN, "--cpak", vectors / TFM_KEY, "--ref")
    assert (
        cli(*args, _ref_file(tmp_path, {"rim": rim, "rems": ["24d5b0a2" + "00" * 28, None, None, None]}))[0]
        == 1
    )
    assert cli(*args, _ref_file(tmp_path, {"rim": rim}))[0] == 0
    status, out, _ = cli(*args, _ref_file(tmp_path, {"rim": "00" * 32, "rpv": "00" * 64}))
    assert status == 1
    assert "cca-realm-initial-measurement: does not match any reference RIM" in out
    assert "cca-realm-personalization-value" in out


def test_verify_reference_values_from_comids(vectors: Path) -> None:
    token = decode_token((vectors / TFM_TOKEN).read_bytes())
    p, r = token.platform.claims, token.realm.claims  # type: ignore[union-attr]
    pem = (vectors / "veraison-ccatoken/tf-rmm-cca_platform.pub").read_bytes()
    comids = [
        realm_comid(
            r[t.REALM_INITIAL_MEASUREMENT],
            hash_algo="sha-256",
            rpv=r[t.REALM_PERSONALIZATION_VALUE],
            rems=r[t.REALM_EXTENSIBLE_MEASUREMENTS],
        ),
        platform_comid(
            pem,
            p[t.PLATFORM_IMPLEMENTATION_ID],
            p[t.PLATFORM_INSTANCE_ID],
            p[t.PLATFORM_SW_COMPONENTS],
            platform_config=p[t.PLATFORM_CONFIG],
        ),
    ]
    cpak = load_public_key((vectors / TFM_KEY).read_bytes())
    ref = reference_values_from_json(json.loads(json.dumps(comids)))
    assert len(ref.sw_components or []) == 13
    assert verify_token(token, cpak, reference=ref).ok
    comids[1]["triples"]["reference-values"][0]["measurements"].pop(8)  # drop the RMM component
    result = verify_token(token, cpak, reference=reference_values_from_json(comids))
    assert [str(x) for x in result.problems] == [
        "cca-platform-sw-components: component 8 (RMM) matches no reference value"
    ]


def test_platform_comid_shape(vectors: Path) -> None:
    pem = (vectors / "veraison-ccatoken/tf-rmm-cca_platform.pub").read_bytes()
    comp = {
        "measurement-type": "BL",
        "measurement-value": bytes(32),
        "signer-id": bytes([1]) * 32,
        "version": "1.0",
    }
    comid = platform_comid(pem, bytes(32), b"\x01" + bytes(32), [comp])
    (avk,) = comid["triples"]["attester-verification-keys"]
    assert avk["environment"]["instance"] == {"type": "ueid", "value": "AQ" + "A" * 42}
    assert avk["verification-keys"][0]["type"] == "pkix-base64-key"
    assert avk["verification-keys"][0]["value"].startswith("-----BEGIN PUBLIC KEY-----")
    (m,) = comid["triples"]["reference-values"][0]["measurements"]
    assert m["key"] == {"type": "string", "value": "cca.software-component"}
    assert m["value"]["name"] == "BL" and m["value"]["digests"] == [[1, "A" * 43]]
    with pytest.raises(ValueError, match="instance_id"):
        platform_comid(pem, bytes(32), bytes(33), [comp])


# --- bad input: exit 2, one line, never a traceback --------------------------------------------
def _malformed(tmp_path: Path, vectors: Path) -> dict[str, Path]:
    data = (vectors / TFM_TOKEN).read_bytes()
    files = {
        "empty": b"",
        "random": os.urandom(512),
        "truncated": data[: len(data) // 2],
        "text": b"hello, world\n",
        "cbor-int": b"\x01",
        "trailing": data + b"\xff",
    }
    out = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        out[name] = tmp_path / name
    out["unwrapped"] = vectors / "veraison-ccatoken/testBadUnwrappedTokens.cbor"
    out["missing"] = tmp_path / "does-not-exist.cbor"
    out["directory"] = tmp_path
    return out


@pytest.mark.parametrize(
    "kind",
    ["empty", "random", "truncated", "text", "cbor-int", "trailing", "unwrapped", "missing", "directory"],
)
@pytest.mark.parametrize("action", ["decode", "verify"])
def test_malformed_input_exits_2(cli: Cli, vectors: Path, tmp_path: Path, kind: str, action: str) -> None:
    path = _malformed(tmp_path, vectors)[kind]
    extra = ("--cpak", vectors / TFM_KEY) if action == "verify" else ()
    status, out, err = cli("token", action, path, *extra)
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if kind == "unwrapped":
        assert "not wrapped in a bstr" in err


@pytest.mark.parametrize(
    "args",
    [
        ("--cpak", "missing.pem"),
        ("--cpak", "token"),  # not a key
        ("--cpak", "key", "--challenge", "zz"),
        ("--cpak", "key", "--challenge", "00" * 65),
        ("--cpak", "key", "--ref", "token"),
        (),  # --cpak is required
    ],
)
def test_bad_verify_options_exit_2(cli: Cli, vectors: Path, args: tuple[str, ...]) -> None:
    names = {"token": str(vectors / TFM_TOKEN), "key": str(vectors / TFM_KEY)}
    status, _, err = cli("token", "verify", vectors / TFM_TOKEN, *[names.get(a, a) for a in args])
    assert status == 2
    assert "Traceback" not in err and err.strip()


def test_token_create_is_registered(cli: Cli) -> None:
    status, _, err = cli("token", "create", "--help")
    assert status == 0, err
