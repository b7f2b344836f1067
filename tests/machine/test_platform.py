"""The platform root of trust (machine/platform.py): a persistent identity under the data
directory, clear errors for a corrupt one, and platform tokens that verify with the
exported CPAK using `cryptography` and `cbor2` directly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from unirealm.machine.platform import PlatformRoT


def verify_es384(public_pem: bytes, token: bytes) -> dict:  # type: ignore[type-arg]
    """Check a tagged COSE_Sign1 (ES384) with the PEM key; return its payload claims."""
    obj = cbor2.loads(token)
    assert isinstance(obj, cbor2.CBORTag) and obj.tag == 18
    protected, _unprotected, payload, signature = obj.value
    assert dict(cbor2.loads(protected)) == {1: -35}
    assert len(signature) == 96
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    der = encode_dss_signature(int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big"))
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    key.verify(der, tbs, ec.ECDSA(hashes.SHA384()))
    return dict(cbor2.loads(payload))


def test_identity_is_created_on_first_use_and_persists(tmp_path: Path) -> None:
    first = PlatformRoT(tmp_path)
    assert (tmp_path / "platform" / "cpak.pem").is_file()
    assert (tmp_path / "platform" / "identity.json").is_file()
    second = PlatformRoT(tmp_path)
    assert second.identity.cpak_public_pem == first.identity.cpak_public_pem
    assert second.identity.instance_id == first.identity.instance_id
    assert second.identity.implementation_id == first.identity.implementation_id
    other = PlatformRoT(tmp_path / "elsewhere")
    assert other.identity.cpak_public_pem != first.identity.cpak_public_pem


def test_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(tmp_path / "env"))
    rot = PlatformRoT()
    assert rot.directory == tmp_path / "env" / "platform"
    assert (tmp_path / "env" / "platform" / "cpak.pem").is_file()


def test_instance_id_is_a_rand_ueid_of_the_cpak(tmp_path: Path) -> None:
    ident = PlatformRoT(tmp_path).identity
    point = serialization.load_pem_public_key(ident.cpak_public_pem).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert ident.instance_id == b"\x01" + hashlib.sha256(point).digest()
    assert len(ident.implementation_id) == 32


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("cpak.pem", b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"),
        ("cpak.pem", b"\x00\x01garbage"),
        ("identity.json", b"{not json"),
        ("identity.json", b'{"lifecycle": 12288}'),
        ("identity.json", b'{"implementation_id": "zz", "lifecycle": 1, "config": "", "verification_service": ""}'),
    ],
)
def test_corrupt_identity_is_a_clear_error(tmp_path: Path, name: str, content: bytes) -> None:
    PlatformRoT(tmp_path)
    (tmp_path / "platform" / name).write_bytes(content)
    with pytest.raises(RuntimeError, match="platform identity") as info:
        PlatformRoT(tmp_path)
    assert str(tmp_path / "platform") in str(info.value)


def test_a_p256_cpak_is_refused(tmp_path: Path) -> None:
    PlatformRoT(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "platform" / "cpak.pem").write_bytes(pem)
    with pytest.raises(RuntimeError):
        PlatformRoT(tmp_path)


@pytest.mark.parametrize("size", [32, 48, 64])
def test_platform_token_verifies_with_the_cpak(tmp_path: Path, size: int) -> None:
    rot = PlatformRoT(tmp_path)
    challenge = bytes(range(size))
    claims = verify_es384(rot.identity.cpak_public_pem, rot.platform_token(challenge))
    assert claims[10] == challenge
    assert claims[265] == "tag:arm.com,2023:cca_platform#1.0.0"
    assert claims[256] == rot.identity.instance_id
    assert claims[2396] == rot.identity.implementation_id
    assert 0x3000 <= claims[2395] <= 0x30FF  # secured
    assert claims[2402] == "sha-256"
    # A fresh instance reading the same identity signs with the same key.
    again = PlatformRoT(tmp_path)
    verify_es384(rot.identity.cpak_public_pem, again.platform_token(challenge))


def test_platform_token_does_not_verify_with_another_key(tmp_path: Path) -> None:
    token = PlatformRoT(tmp_path / "a").platform_token(bytes(32))
    other = PlatformRoT(tmp_path / "b").identity.cpak_public_pem
    with pytest.raises(InvalidSignature):
        verify_es384(other, token)


@pytest.mark.parametrize("size", [0, 31, 33, 65])
def test_bad_challenge_size_is_refused(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError):
        PlatformRoT(tmp_path).platform_token(bytes(size))


def test_software_components_include_the_rmm(tmp_path: Path) -> None:
    rot = PlatformRoT(tmp_path)
    claims = verify_es384(rot.identity.cpak_public_pem, rot.platform_token(bytes(32)))
    components = [dict(c) for c in claims[2399]]
    by_type = {c[1]: c for c in components}
    assert "RMM" in by_type
    rmm = by_type["RMM"]
    assert isinstance(rmm[2], bytes) and len(rmm[2]) == 32
    assert rmm[2] != bytes(32)
    assert rmm[5] == rot.identity.signer_id
    for c in components:
        assert len(c[2]) == 32 and isinstance(c[4], str)
