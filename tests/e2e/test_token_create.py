"""`unirealm token create` end to end, checked with plain cbor2 and cryptography only:
both signatures, the platform/realm binding, the requested challenge, RPV and REMs (REM
chains computed here), hash algorithm names and RIM lengths; `token verify` on the result
and on corrupted copies; bad input; --trace; and `unirealm measure` reproducing the RIM."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from unirealm.cli.main import main

CHALLENGE = bytes.fromhex(
    "5f3c9a1e0b7d42c6a8e1f09b3d6c2e4a7b9d0f1e2c3a4b5d6e7f8091a2b3c4d5"
    "e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d6"
)
RPV = bytes(range(0xA0, 0xE0))
REMS = [(1, b"\x01\x02\x03"), (3, bytes(range(64))), (1, b"second extend of REM0")]
HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
IMAGE_BASE = 0x8000_0000
RAM_SIZE = 1 << 20
GRANULE = 4096

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("unirealm-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNIREALM_DATA_DIR", str(path))
        yield path


@pytest.fixture
def cli(data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(data_dir))

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            status = int(exc.code or 0)
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture(scope="module")
def cpak_pem(data_dir: Path) -> bytes:
    path = data_dir / "cpak-pub.pem"
    assert main(["platform", "export", "--cpak-pub", str(path)]) == 0
    return path.read_bytes()


# --- plain decoding ------------------------------------------------------------------------
def plain(obj: Any) -> Any:
    """cbor2 may hand tag contents back as tuples / frozendicts: make them lists / dicts."""
    if isinstance(obj, Mapping):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes | bytearray):
        return [plain(v) for v in obj]
    return obj


@dataclass
class Sign1:
    protected: bytes
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def claims(self) -> dict[int, Any]:
        return plain(cbor2.loads(self.payload))

    def verify(self, key: ec.EllipticCurvePublicKey) -> None:
        assert plain(cbor2.loads(self.protected)) == {1: -35}  # ES384
        assert len(self.signature) == 96
        r = int.from_bytes(self.signature[:48], "big")
        s = int.from_bytes(self.signature[48:], "big")
        tbs = cbor2.dumps(["Signature1", self.protected, b"", self.payload])
        key.verify(encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA384()))


def sign1(data: bytes) -> Sign1:
    obj = cbor2.loads(data)
    assert isinstance(obj, cbor2.CBORTag) and obj.tag == 18
    protected, unprotected, payload, signature = plain(obj.value)
    return Sign1(protected, unprotected, payload, signature)


def split(token: bytes, tag: int) -> tuple[bytes, bytes]:
    top = cbor2.loads(token)
    assert isinstance(top, cbor2.CBORTag) and top.tag == tag
    body = plain(top.value)
    assert set(body) == {44234, 44241}
    if tag == 399:
        return body[44234], body[44241]
    assert body[44234][0] == 263 and body[44241][0] == 263
    return body[44234][1], body[44241][1]


def rem_chain(hashfn: Callable[..., Any], values: list[bytes]) -> bytes:
    hlen = hashfn().digest_size
    rem = bytes(64)
    for v in values:
        rem = hashfn(rem[:hlen] + v).digest()
    return rem[:hlen]


# --- tokens, created once per (algorithm, format) ----------------------------------------
@pytest.fixture(scope="module")
def created(data_dir: Path) -> Callable[[str, str], tuple[bytes, str]]:
    cache: dict[tuple[str, str], tuple[bytes, str]] = {}

    def make(algo: str, fmt: str) -> tuple[bytes, str]:
        if (algo, fmt) not in cache:
            out = data_dir / f"token-{algo}-{fmt}.cbor"
            args = ["token", "create", "--out", str(out), "--challenge", CHALLENGE.hex(), "--rpv", RPV.hex()]
            for index, value in REMS:
                args += ["--rem", f"{index}:{value.hex()}"]
            args += ["--measurement-algo", algo, "--format", fmt]
            assert main(args) == 0
            cache[(algo, fmt)] = (out.read_bytes(), str(out))
        return cache[(algo, fmt)]

    return make


COMBOS = [("sha256", "399"), ("sha512", "907"), ("sha256", "907"), ("sha512", "399")]


@pytest.mark.parametrize(("algo", "fmt"), COMBOS)
def test_created_token_verifies_with_plain_libraries(
    created: Callable[[str, str], tuple[bytes, str]], cpak_pem: bytes, algo: str, fmt: str
) -> None:
    token, _ = created(algo, fmt)
    platform_bytes, realm_bytes = split(token, int(fmt))
    platform, realm = sign1(platform_bytes), sign1(realm_bytes)

    cpak = serialization.load_pem_public_key(cpak_pem)
    assert isinstance(cpak, ec.EllipticCurvePublicKey)
    platform.verify(cpak)

    claims = realm.claims
    rak_claim = claims[44237]
    assert isinstance(rak_claim, bytes) and len(rak_claim) == 107
    cose_key = plain(cbor2.loads(rak_claim))
    assert cose_key[1] == 2 and cose_key[-1] == 2  # EC2, P-384
    rak = ec.EllipticCurvePublicNumbers(
        int.from_bytes(cose_key[-2], "big"), int.from_bytes(cose_key[-3], "big"), ec.SECP384R1()
    ).public_key()
    realm.verify(rak)

    # Binding: platform challenge = SHA-256 of the exact claim-44237 bytes.
    assert claims[44240] == "sha-256"
    assert platform.claims[10] == hashlib.sha256(rak_claim).digest()

    hashfn = HASHES[algo]
    hlen = hashfn().digest_size
    assert claims[265] == "tag:arm.com,2023:realm#1.0.0"
    assert claims[10] == CHALLENGE
    assert claims[44235] == RPV
    assert claims[44236] == {"sha256": "sha-256", "sha512": "sha-512"}[algo]
    assert len(claims[44238]) == hlen
    assert claims[44238] != bytes(hlen)
    expected_rems = [
        rem_chain(hashfn, [v for i, v in REMS if i == index]) if any(i == index for i, _ in REMS) else bytes(hlen)
        for index in (1, 2, 3, 4)
    ]
    assert claims[44239] == expected_rems
    assert claims[44239][0] == hashfn(hashfn(bytes(hlen) + REMS[0][1]).digest() + REMS[2][1]).digest()


def test_both_formats_carry_the_same_rim(created: Callable[[str, str], tuple[bytes, str]]) -> None:
    rims = {}
    for algo, fmt in COMBOS:
        _, realm = split(created(algo, fmt)[0], int(fmt))
        rims.setdefault(algo, set()).add(sign1(realm).claims[44238])
    assert all(len(v) == 1 for v in rims.values())


# --- token verify --------------------------------------------------------------------------
def flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize(("algo", "fmt"), [("sha256", "399"), ("sha512", "907")])
def test_token_verify_accepts_and_rejects_any_flipped_byte(
    cli: Cli, created: Callable[[str, str], tuple[bytes, str]], cpak_pem: bytes, data_dir: Path, tmp_path: Path,
    algo: str, fmt: str,
) -> None:  # fmt: skip
    token, path = created(algo, fmt)
    pem = data_dir / "cpak-pub.pem"
    status, out, err = cli("token", "verify", path, "--cpak", pem, "--challenge", CHALLENGE.hex())
    assert status == 0, err

    platform_bytes, realm_bytes = split(token, int(fmt))
    p_at, r_at = token.index(platform_bytes), token.index(realm_bytes)
    realm_claims = sign1(realm_bytes).claims
    positions = {
        "realm signature": r_at + len(realm_bytes) - 1,
        "platform signature": p_at + len(platform_bytes) - 5,
        "realm challenge": token.index(CHALLENGE) + 10,
        "RPV": token.index(RPV) + 63,
        "RIM": token.index(realm_claims[44238]),
        "RAK": token.index(realm_claims[44237]) + 50,
        "platform challenge": token.index(sign1(platform_bytes).claims[10]) + 3,
        "platform implementation id": token.index(sign1(platform_bytes).claims[2396]) + 31,
    }
    for what, pos in positions.items():
        bad = tmp_path / f"bad-{pos}.cbor"
        bad.write_bytes(flip(token, pos))
        status, out, err = cli("token", "verify", bad, "--cpak", pem, "--challenge", CHALLENGE.hex())
        assert status == 1, f"flipping a byte of the {what} was not detected: {out}{err}"
        assert "Traceback" not in err


def test_token_verify_with_the_wrong_challenge_fails(cli: Cli, created: Callable[[str, str], tuple[bytes, str]], data_dir: Path) -> None:
    _, path = created("sha256", "399")
    status, _, _ = cli("token", "verify", path, "--cpak", data_dir / "cpak-pub.pem", "--challenge", "00" * 64)
    assert status == 1


# --- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        ["--challenge", "abc"],  # odd number of hex digits
        ["--challenge", "ab" * 65],  # 65 bytes
        ["--challenge", "zz"],
        ["--rpv", "00" * 65],
        ["--rem", "0:aa"],
        ["--rem", "5:aa"],
        ["--rem", "1:zz"],
        ["--rem", "1:" + "00" * 65],
        ["--rem", "aa"],
        ["--measurement-algo", "sha384"],
        ["--format", "18"],
    ],
)
def test_bad_input_exits_2_with_one_line(cli: Cli, tmp_path: Path, extra: list[str]) -> None:
    out_file = tmp_path / "t.cbor"
    status, _out, err = cli("token", "create", "--out", out_file, *extra)
    assert status == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out_file.exists()


# --- trace ---------------------------------------------------------------------------------
def test_trace_prints_one_line_per_call(cli: Cli, tmp_path: Path) -> None:
    status, _out, err = cli(
        "token", "create", "--out", tmp_path / "t.cbor", "--challenge", "11" * 64, "--rem", "2:abcd", "--trace"
    )
    assert status == 0
    lines = err.splitlines()
    assert lines and all(line.startswith(("RMI_", "RSI_")) for line in lines)
    assert any(line.startswith("RSI_VERSION(req=0x10000) -> SUCCESS") for line in lines)
    assert sum(line.startswith("RMI_REALM_ACTIVATE(") for line in lines) == 1
    assert sum(line.startswith("RMI_REALM_CREATE(") for line in lines) == 1
    assert sum(line.startswith("RSI_REALM_CONFIG(") for line in lines) == 1
    assert sum(line.startswith("RSI_MEASUREMENT_EXTEND(index=0x2 size=0x2") for line in lines) == 1
    assert sum(line.startswith("RSI_ATTESTATION_TOKEN_INIT(") for line in lines) == 1
    assert any(line.startswith("RSI_ATTESTATION_TOKEN_CONTINUE(") and "SUCCESS" in line for line in lines)
    assert any(line.startswith("RSI_IPA_STATE_SET(") for line in lines)
    assert any(line.startswith("RMI_RTT_SET_RIPAS(") for line in lines)
    assert lines[-1].startswith("RMI_REALM_DESTROY(") or lines[-1].startswith("RMI_GRANULE_UNDELEGATE(")
    activate = next(i for i, line in enumerate(lines) if line.startswith("RMI_REALM_ACTIVATE("))
    first_rsi = next(i for i, line in enumerate(lines) if line.startswith("RSI_"))
    assert activate < first_rsi


def test_without_trace_nothing_on_stderr(cli: Cli, tmp_path: Path) -> None:
    status, out, err = cli("token", "create", "--out", tmp_path / "t.cbor")
    assert status == 0 and err == ""
    assert "RIM (sha256): " in out


# --- measure reproduces the RIM ------------------------------------------------------------
@pytest.mark.parametrize(("algo", "fmt"), [("sha256", "399"), ("sha512", "907")])
def test_measure_reproduces_the_token_rim(
    cli: Cli, created: Callable[[str, str], tuple[bytes, str]], tmp_path: Path, algo: str, fmt: str
) -> None:
    from unirealm.host.attest_realm import attest_image

    image = attest_image()
    (tmp_path / "image.bin").write_bytes(image)
    image_end = IMAGE_BASE + -(-len(image) // GRANULE) * GRANULE
    launch = {
        "realm": {"s2sz": 33, "hash_algo": algo, "num_bps": 1, "num_wps": 1, "rpv": RPV.hex()},
        "operations": [
            {"op": "data", "ipa": hex(IMAGE_BASE), "file": "image.bin", "measured": True},
            {"op": "ripas", "base": hex(image_end), "top": hex(IMAGE_BASE + RAM_SIZE), "level": 3},
            {"op": "rec", "flags": 1, "pc": hex(IMAGE_BASE), "gprs": [0] * 8},
        ],
    }
    (tmp_path / "launch.json").write_text(json.dumps(launch))
    status, out, err = cli("measure", tmp_path / "launch.json", "--json")
    assert status == 0, err
    rim = bytes.fromhex(json.loads(out)["rim"])
    token, _ = created(algo, fmt)
    _, realm = split(token, int(fmt))
    assert rim == sign1(realm).claims[44238]


def test_data_dir_is_the_one_in_the_environment(data_dir: Path, cpak_pem: bytes) -> None:
    assert (data_dir / "platform" / "cpak.pem").is_file()
    assert os.environ.get("UNIREALM_DATA_DIR") == str(data_dir)
    assert cpak_pem == (data_dir / "cpak-pub.pem").read_bytes()
