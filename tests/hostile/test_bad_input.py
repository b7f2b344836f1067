"""Every piece of bad input a user can hand the CLI ends in one line on stderr and the
documented exit status (2 for unreadable input), within seconds: never a traceback, a hang
or an unbounded read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cbor2
import pytest

from .conftest import assert_one_line_refusal, cli


def bare_token(claims: dict) -> bytes:  # type: ignore[type-arg]
    """A tag-18 platform token with these claims (decoding does not check the signature)."""
    return cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -35}), {}, cbor2.dumps(claims), bytes(96)]))


def write(path: Path, data: str | bytes) -> str:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return str(path)


def cpak_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


# (name, argv builder, status, fragment of the one stderr line)
CASES = {
    "run -k /dev/zero": (lambda t, img: ["run", "-k", "/dev/zero"], 2, "is not a regular file"),
    "run -i /dev/zero": (lambda t, img: ["run", "-k", img, "-i", "/dev/zero"], 2, "is not a regular file"),
    "run -i larger than RAM": (
        lambda t, img: ["run", "-k", img, "-m", "64", "-i", write(t / "big", b"\0" * (65 << 20))],
        2, "larger than the guest's RAM"),
    "run -m 1T": (lambda t, img: ["run", "-k", img, "-m", "1T"], 2, "cannot allocate 1048576 MiB of guest RAM"),
    "--dump-dtb into a missing directory": (
        lambda t, img: ["run", "-k", img, "--dump-dtb", str(t / "missing" / "x.dtb")], 2, "--dump-dtb"),
    "-p with a control byte": (lambda t, img: ["run", "-k", img, "-p", "a\x01b"], 2, "control character 0x01"),
    "-p with a byte that is not UTF-8": (
        lambda t, img: ["run", "-k", img, "-p", os.fsdecode(b"a\xffb")], 2, "not UTF-8"),
    "--9p DIR,a,b": (lambda t, img: ["run", "-k", img, "--9p", f"{t},a,b"], 2, "may hold only letters"),
    "-n host_ip equal to guest_ip": (
        lambda t, img: ["run", "-k", img, "-n", "mode=user,guest_ip=10.0.2.15,host_ip=10.0.2.15"], 2,
        "host_ip and guest_ip are both"),
    "--realm-pv zz": (lambda t, img: ["run", "-k", img, "--realm", "--realm-pv", "zz"], 2, "hex digits"),
    "token decode /dev/zero": (lambda t, img: ["token", "decode", "/dev/zero"], 2, "is not a regular file"),
    "token decode of a token over 1 MiB": (
        lambda t, img: ["token", "decode", write(t / "t.cbor", bytes(2 << 20))], 2, "larger than"),
    "token verify --ref nested 100,000 deep": (
        lambda t, img: ["token", "verify", write(t / "t.cbor", bare_token({})), "--cpak", write(t / "k.pem", cpak_pem()),
                        "--ref", write(t / "ref.json", deep_json(100_000))], 2, "nested more than 64 deep"),
    "measure JSON nested 100,000 deep": (
        lambda t, img: ["measure", write(t / "l.json", deep_json(100_000))], 2, "nested more than 64 deep"),
    'measure "file": "/dev/zero"': (
        lambda t, img: ["measure", write(t / "l.json", json.dumps(
            {"operations": [{"op": "data", "ipa": 0, "file": "/dev/zero"}]}))], 2, "is not a regular file"),
    "measure level-3 RIPAS over 2^47 bytes": (
        lambda t, img: ["measure", write(t / "l.json", json.dumps(
            {"operations": [{"op": "ripas", "base": 0, "top": 1 << 47, "level": 3}]}))], 2,
        "at most 1048576 are measured"),
    "measure 5000-digit number": (
        lambda t, img: ["measure", write(t / "l.json", '{"operations": [{"op": "rec", "pc": ' + "9" * 5000 + "}]}")],
        2, "an integer of 5000 digits"),
    "measure 5000-digit number string": (
        lambda t, img: ["measure", write(t / "l.json", json.dumps({"operations": [{"op": "rec", "pc": "9" * 5000}]}))],
        2, "(5000 characters)"),
    "initrd -o into a missing directory": (
        lambda t, img: ["initrd", str(t), "-o", str(t / "no" / "such" / "x.cpio")], 2, "does not exist"),
    "build -o into a missing directory": (
        lambda t, img: ["build", str(Path(img).with_suffix("")), "-o", str(t / "no" / "such" / "x.img")], 2, "does not exist"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_its_status(name: str, hello_image: Path, tmp_path: Path) -> None:
    argv, status, fragment = CASES[name]
    proc = cli(*argv(tmp_path, str(hello_image)), cwd=tmp_path, timeout=30)
    assert_one_line_refusal(proc, status, fragment)
    if name.startswith(("build", "initrd")):
        assert not (tmp_path / "no").exists()  # no parent directory was created


def test_build_refuses_elf_not_aarch64_and_creates_only_build_dir(hello_image: Path, tmp_path: Path) -> None:
    """Without -o the image goes to build/ of the current directory, the only directory
    `build` creates."""
    proc = cli("build", write(tmp_path / "x", b"\x7fELF" + bytes(60)), cwd=tmp_path)
    assert_one_line_refusal(proc, 2, "not an AArch64 ELF")
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize(
    "claims",
    [
        {265: "x", 256: 10**5000},  # a bignum past Python's 4300-digit str() limit
        {265: cbor2.CBORTag(1234, [b"ab", cbor2.undefined]), 2396: cbor2.undefined},
        {265: "x", 10**5000: 1, 2400: [cbor2.CBORTag(99, -(10**5000))], 2401: cbor2.CBORSimpleValue(99)},
        {265: cbor2.CBORTag(5000, 10**5000)},  # in the "note:" a verifier's check prints
    ],
    ids=["bignum", "tag-and-undefined", "bignum-key-and-simple", "bignum-profile"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_token_decode_prints_any_claim_value(claims: dict, as_json: bool, tmp_path: Path) -> None:  # type: ignore[type-arg]
    token = write(tmp_path / "t.cbor", bare_token(claims))
    proc = cli("token", "decode", token, *(["--json"] if as_json else []), cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]
    if as_json:
        out = json.loads(proc.stdout)["cca-platform-token"]
        if 2396 in claims:
            assert out["cca-platform-implementation-id"] == "undefined"
            assert out["cca-platform-profile"] == {"cbor-tag": 1234, "value": ["6162", "undefined"]}
        if 256 in claims:
            assert out["cca-platform-instance-id"] == hex(10**5000)


def test_initrd_keeps_a_non_utf8_file_name(tmp_path: Path) -> None:
    from unirealm.arch.cpio import iter_archive

    root = tmp_path / "root"
    root.mkdir()
    (root / os.fsdecode(b"caf\xe9")).write_bytes(b"x")
    os.symlink(os.fsdecode(b"caf\xe9"), root / "link")
    proc = cli("initrd", str(root), "-o", str(tmp_path / "i.cpio"), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    entries = {e.name: e for e in iter_archive((tmp_path / "i.cpio").read_bytes())}
    assert entries[os.fsdecode(b"caf\xe9")].data == b"x"
    assert entries["link"].data == b"caf\xe9"
