"""The platform root of trust's files and where they live (machine/platform.py): the XDG base
directory rules, the modes a private key and a public description get, an identity that is
only half there, the identity fields read back, and the software components' JSON names
(PSA attestation token, draft-tschofenig-rats-psa-token §4.4.1, as iat-verifier names them)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import cbor2
import pytest

from unirealm.arch import token as tk
from unirealm.machine.platform import PlatformRoT, data_dir


def test_xdg_data_home_then_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIREALM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "unirealm"
    monkeypatch.setenv("XDG_DATA_HOME", "")  # empty: as unset (XDG Base Directory Specification)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "unirealm"
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(tmp_path / "explicit"))
    assert data_dir() == tmp_path / "explicit"


def test_the_private_key_is_the_owners_alone(tmp_path: Path) -> None:
    PlatformRoT(tmp_path)
    directory = tmp_path / "platform"
    assert stat.S_IMODE((directory / "cpak.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "identity.json").stat().st_mode) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == ["cpak.pem", "identity.json"]  # no temporary left


@pytest.mark.parametrize("left", ["cpak.pem", "identity.json"])
def test_half_an_identity_is_replaced_by_a_whole_one(tmp_path: Path, left: str) -> None:
    """Both files or neither: one file alone (an interrupted first use) is not an identity."""
    first = PlatformRoT(tmp_path)
    directory = tmp_path / "platform"
    for name in ("cpak.pem", "identity.json"):
        if name != left:
            (directory / name).unlink()
    again = PlatformRoT(tmp_path)
    assert again.identity.cpak_public_pem != first.identity.cpak_public_pem
    assert (directory / "cpak.pem").is_file() and (directory / "identity.json").is_file()
    assert PlatformRoT(tmp_path).identity.cpak_public_pem == again.identity.cpak_public_pem


def test_the_identity_fields_are_read_back(tmp_path: Path) -> None:
    PlatformRoT(tmp_path)
    meta_path = tmp_path / "platform" / "identity.json"
    meta = json.loads(meta_path.read_text())
    meta.update(verification_service="https://verifier.example/rats", profile="http://arm.com/CCA-SSD/1.0.0",
                lifecycle=0x3001, config="00000002")
    meta_path.write_text(json.dumps(meta))
    claims = cbor2.loads(cbor2.loads(PlatformRoT(tmp_path).platform_token(bytes(64))).value[2])
    assert claims[tk.PLATFORM_VERIFICATION_SERVICE] == "https://verifier.example/rats"
    assert claims[tk.PLATFORM_PROFILE] == "http://arm.com/CCA-SSD/1.0.0"  # the draft profile's name
    assert claims[tk.PLATFORM_LIFECYCLE] == 0x3001 and claims[tk.PLATFORM_CONFIG] == bytes.fromhex("00000002")
    del meta["profile"]  # written before profiles were recorded: the 1.0 platform profile
    meta_path.write_text(json.dumps(meta))
    assert PlatformRoT(tmp_path).identity.profile == tk.PROFILE_PLATFORM_1_0


def test_software_components_carry_the_psa_json_names(tmp_path: Path) -> None:
    for c in PlatformRoT(tmp_path).identity.software_components:
        shown = c.as_json()
        assert shown == {"measurement-type": c.measurement_type, "measurement-value": c.measurement_value.hex(),
                         "version": c.version, "signer-id": c.signer_id.hex(),
                         "measurement-description": c.measurement_description}
