"""Apps attest themselves through configfs-tsm: an unmodified busybox `sh -c` pipeline and the
C client in examples/attest get a CCA token for the challenge they wrote (checked with plain
cbor2 + `cryptography` and with `unirealm token verify --challenge`), extend REMs through the
tsm rtmr group, and get Linux's ENXIO where there is no provider (a plain VM, an RME normal VM)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from unirealm.host.image import build_image

from .conftest import PLATFORMS, ROOT, UNIREALM, unirealm_run

CHALLENGE = bytes(range(0x40, 0x80))  # 64 bytes
SHORT = bytes(range(0xA0, 0xC0))  # 32 bytes: zero-padded to 64 in the token
ENXIO_TEXT = b"No such device or address"


@pytest.fixture(scope="session")
def attest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    out = tmp_path_factory.mktemp("attest")
    subprocess.run([cc, "-static", "-O2", "-o", str(out / "attest"), str(ROOT / "examples/attest/attest.c")],
                   check=True)
    image = out / "attest.img"
    image.write_bytes(build_image((out / "attest").read_bytes(), "attest"))
    return image


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, UNIREALM_DATA_DIR=str(tmp / "data"))
    return subprocess.run([*UNIREALM, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def cpak(tmp: Path) -> Path:
    pem = tmp / "cpak.pem"
    assert cli(tmp, "platform", "export", "--cpak-pub", str(pem)).returncode == 0
    return pem


def sign1_verify(sign1: cbor2.CBORTag, key: ec.EllipticCurvePublicKey, algo: hashes.HashAlgorithm) -> None:
    protected, _, payload, signature = sign1.value
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    half = len(signature) // 2
    der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
    key.verify(der, to_be_signed, ec.ECDSA(algo))


def split_collection(raw: bytes, tag: int) -> tuple[cbor2.CBORTag, cbor2.CBORTag]:
    """The platform and realm COSE_Sign1 of a tag-399 ({44234: bstr, 44241: bstr}) or tag-907
    CMW ({44234: [263, bstr], 44241: [263, bstr]}) collection, with plain cbor2."""
    collection = cbor2.loads(raw)
    assert collection.tag == tag
    assert sorted(collection.value) == [44234, 44241]
    parts = []
    for key in (44234, 44241):
        value = collection.value[key]
        if tag == 907:
            assert list(value[:1]) == [263] and len(value) == 2  # application/eat+cwt
            value = value[1]
        assert isinstance(value, bytes)
        sign1 = cbor2.loads(value)
        assert sign1.tag == 18
        parts.append(sign1)
    return parts[0], parts[1]


def check_token(raw: bytes, tmp: Path, challenge: bytes, rems: list[bytes] | None = None) -> None:
    """The token read from outblob, decoded with plain cbor2 and checked with `cryptography`,
    then accepted by `unirealm token verify --challenge` (and refused for another challenge)."""
    platform_sign1, realm_sign1 = split_collection(raw, 399)
    realm = cbor2.loads(realm_sign1.value[2])
    platform = cbor2.loads(platform_sign1.value[2])
    assert realm[10] == challenge.ljust(64, b"\0")  # cca-realm-challenge, zero-padded as Linux pads it
    assert platform[10] == hashlib.sha256(realm[44237]).digest()  # bound to the RAK claim
    cose_key = cbor2.loads(realm[44237])
    rak = ec.EllipticCurvePublicNumbers(int.from_bytes(cose_key[-2], "big"), int.from_bytes(cose_key[-3], "big"),
                                        ec.SECP384R1()).public_key()
    sign1_verify(realm_sign1, rak, hashes.SHA384())
    pem = cpak(tmp)
    key = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    sign1_verify(platform_sign1, key, hashes.SHA256() if key.curve.key_size == 256 else hashes.SHA384())
    if rems is not None:
        assert list(realm[44239]) == rems
    path = tmp / "token.cbor"
    path.write_bytes(raw)
    ok = cli(tmp, "token", "verify", str(path), "--cpak", str(pem), "--challenge", challenge.hex())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified" in ok.stdout
    other = cli(tmp, "token", "verify", str(path), "--cpak", str(pem), "--challenge", (b"\1" + challenge[1:]).hex())
    assert other.returncode == 1 and "cca-realm-challenge" in other.stdout


def octal(data: bytes) -> str:
    return "".join(f"\\{b:03o}" for b in data)


def busybox_report(challenge: bytes, name: str = "r0") -> str:
    d = f"/sys/kernel/config/tsm/report/{name}"
    return f"mkdir {d} && printf '{octal(challenge)}' > {d}/inblob && cat {d}/outblob | base64"


@pytest.mark.parametrize("challenge", [CHALLENGE, SHORT], ids=["64-bytes", "32-bytes"])
def test_busybox_pipeline_gets_a_token(challenge: bytes, busybox_image: Path, tmp_path: Path) -> None:
    script = busybox_report(challenge) + "; cat /sys/kernel/config/tsm/report/r0/provider"
    r = unirealm_run(busybox_image, "--realm", params=f'quiet -- sh -c "{script}"', tmp=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    *b64, provider = r.stdout.decode().split()
    assert provider == "arm_cca_guest"
    check_token(base64.b64decode("".join(b64)), tmp_path, challenge)


def test_busybox_reports_are_isolated_and_counted(busybox_image: Path, tmp_path: Path) -> None:
    """Two reports at once, each with its own inblob; `generation` counts each one's writes;
    a cached token is made again only after a new write; rmdir removes a report."""
    other = bytes(range(64))
    d0, d1 = "/sys/kernel/config/tsm/report/a", "/sys/kernel/config/tsm/report/b"
    script = (
        f"mkdir {d0} {d1} && printf '{octal(other)}' > {d0}/inblob && printf '{octal(CHALLENGE)}' > {d1}/inblob"
        f" && printf '{octal(other)}' > {d0}/inblob && cat {d0}/generation {d1}/generation"
        f" && cat {d1}/outblob | sha256sum && cat {d1}/outblob | sha256sum && cat {d0}/outblob | base64"
        f" && rmdir {d0} && ls /sys/kernel/config/tsm/report"
    )
    r = unirealm_run(busybox_image, "--realm", params=f'quiet -- sh -c "{script}"', tmp=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    lines = r.stdout.decode().split("\n")
    assert lines[:2] == ["2", "1"]
    assert lines[2] == lines[3]  # read twice, made once
    assert lines[-2] == "b"
    check_token(base64.b64decode("".join(lines[4:-2])), tmp_path, other)


@pytest.mark.parametrize("platform", ["kvm", "rme"])
def test_busybox_without_a_provider_gets_enxio(platform: str, busybox_image: Path, tmp_path: Path) -> None:
    script = busybox_report(CHALLENGE) + "; echo status $?; ls /sys/kernel/config/tsm"
    r = unirealm_run(busybox_image, *PLATFORMS[platform], params=f'quiet -- sh -c "{script}"', tmp=tmp_path,
                     timeout=120)
    error, *rest = r.stdout.decode().split("\n")  # the app's stderr is the console too
    assert error == "mkdir: can't create directory '/sys/kernel/config/tsm/report/r0': " + ENXIO_TEXT.decode()
    assert rest == ["status 1", "report", "rtmr", ""]


def test_c_client_attests_itself(attest_image: Path, tmp_path: Path) -> None:
    r = unirealm_run(attest_image, "--realm", params=f"quiet -- report {CHALLENGE.hex()}", tmp=tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    check_token(base64.b64decode(r.stdout), tmp_path, CHALLENGE)


@pytest.mark.parametrize("platform", ["kvm", "rme"])
def test_c_client_not_a_realm(platform: str, attest_image: Path, tmp_path: Path) -> None:
    r = unirealm_run(attest_image, *PLATFORMS[platform], params=f"quiet -- report {CHALLENGE.hex()}", tmp=tmp_path)
    assert r.returncode == 1
    assert r.stdout.startswith(b"attest: mkdir /sys/kernel/config/tsm/report/attest-")
    assert r.stdout.endswith(b": " + ENXIO_TEXT + b"\n")


def test_c_client_refuses_a_short_challenge(attest_image: Path, tmp_path: Path) -> None:
    """Linux's arm-cca-guest driver wants 32 to 64 bytes: reading outblob fails with EINVAL."""
    r = unirealm_run(attest_image, "--realm", params="quiet -- report 00112233", tmp=tmp_path)
    assert r.returncode == 1
    assert r.stdout.startswith(b"attest: read /sys/kernel/config/tsm/report/attest-")
    assert r.stdout.endswith(b"/outblob: Invalid argument\n")


def sha256_rem(*values: bytes) -> bytes:
    rem = bytes(32)
    for v in values:
        rem = hashlib.sha256(rem + v).digest()
    return rem


def test_c_client_extends_rems_and_reports_them(attest_image: Path, tmp_path: Path) -> None:
    a, b, c = b"first app measurement", bytes(64), b"\x01"
    argv = f"extend 2 {a.hex()} extend 2 {b.hex()} extend 4 {c.hex()} report {CHALLENGE.hex()}"
    r = unirealm_run(attest_image, "--realm", params=f"quiet -- {argv}", tmp=tmp_path)
    assert r.returncode == 0, r.stdout.decode(errors="replace")[-2000:]
    out = r.stdout.decode().split("\n")
    assert out[:3] == ["extended REM1", "extended REM1", "extended REM3"]
    zero = bytes(32)
    check_token(base64.b64decode("".join(out[3:])), tmp_path, CHALLENGE,
                rems=[zero, sha256_rem(a, b), zero, sha256_rem(c)])


def test_busybox_rem_log_replays_to_the_token(busybox_image: Path, tmp_path: Path) -> None:
    """Extensions through rtmr/ (index, data, status, generation), the kernel's REM log read back,
    and `token verify --rem-log` / `measure --rem-log --comid` accepting exactly that log."""
    d = "/sys/kernel/config/tsm/rtmr/m"
    script = (
        f"mkdir {d} && cat {d}/allowed_index && echo 1 > {d}/index && printf abc > {d}/data"
        f" && printf def > {d}/data && cat {d}/status {d}/generation"
        f" && printf x > /sys/kernel/config/tsm/rtmr/m/data && echo 0x3 > {d}/index && printf ghi > {d}/data"
        f" && cat /sys/kernel/security/unirealm/rem_log && {busybox_report(CHALLENGE)}"
    )
    params = f'quiet -- sh -c "{script}"'
    r = unirealm_run(busybox_image, "--realm", params=params, tmp=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout.decode(errors="replace")[-2000:]
    lines = r.stdout.decode().split("\n")
    assert lines[:3] == ["1-4", "0", "3"]
    log = lines[3:7]
    assert log == ["REM0 sha-256 616263", "REM0 sha-256 646566", "REM0 sha-256 78", "REM2 sha-256 676869"]
    zero = bytes(32)
    check_token(base64.b64decode("".join(lines[7:])), tmp_path, CHALLENGE,
                rems=[sha256_rem(b"abc", b"def", b"x"), zero, sha256_rem(b"ghi"), zero])
    (tmp_path / "rem_log").write_text("\n".join(log) + "\n")
    pem, token = str(cpak(tmp_path)), str(tmp_path / "token.cbor")
    ok = cli(tmp_path, "token", "verify", token, "--cpak", pem, "--rem-log", str(tmp_path / "rem_log"))
    assert ok.returncode == 0, ok.stdout
    (tmp_path / "bad_log").write_text("\n".join(log[:3]) + "\n")
    bad = cli(tmp_path, "token", "verify", token, "--cpak", pem, "--rem-log", str(tmp_path / "bad_log"))
    assert bad.returncode == 1 and "REM[2] does not match the reference" in bad.stdout
    comid = tmp_path / "realm-comid.json"
    m = cli(tmp_path, "measure", "--realm", "-k", str(busybox_image), f"--params={params}",
            "--rem-log", str(tmp_path / "rem_log"), "--comid", str(comid))
    assert m.returncode == 0, m.stderr
    assert f"REM2 (sha-256): {sha256_rem(b'ghi').hex()}" in m.stdout
    ok = cli(tmp_path, "token", "verify", token, "--cpak", pem, "--ref", str(comid))
    assert ok.returncode == 0, ok.stdout
    m = cli(tmp_path, "measure", "--realm", "-k", str(busybox_image), f"--params={params}",
            "--rem-log", str(tmp_path / "bad_log"), "--comid", str(comid))
    bad = cli(tmp_path, "token", "verify", token, "--cpak", pem, "--ref", str(comid))
    assert bad.returncode == 1 and "REM[2] does not match the reference" in bad.stdout


def test_rtmr_refuses_data_before_an_index(busybox_image: Path, tmp_path: Path) -> None:
    d = "/sys/kernel/config/tsm/rtmr/m"
    script = (f"mkdir {d} && printf abc > {d}/data; echo 9 > {d}/index; cat {d}/generation"
              " /sys/kernel/security/unirealm/rem_log")
    r = unirealm_run(busybox_image, "--realm", params=f'quiet -- sh -c "{script}"', tmp=tmp_path, timeout=120)
    # no index yet: the data is refused; index 9 is out of range: refused; nothing extended
    assert r.stdout == b"sh: write error: Invalid argument\n0\n"


@pytest.mark.parametrize("profile", ["realm#1.0.0", "realm#2.0.0"])
@pytest.mark.parametrize("fmt", ["399", "907"])
def test_token_format_and_profile_on_request(fmt: str, profile: str, busybox_image: Path, tmp_path: Path) -> None:
    """`run --realm --token-format F --token-profile P`: the token an app reads is that
    collection with exactly that profile's claims, each checked with plain cbor2."""
    params = f'quiet -- sh -c "{busybox_report(CHALLENGE)}"'
    r = unirealm_run(busybox_image, "--realm", "--token-format", fmt, "--token-profile", profile,
                     params=params, tmp=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout.decode(errors="replace")[-2000:]
    raw = base64.b64decode(r.stdout)
    platform_sign1, realm_sign1 = split_collection(raw, int(fmt))
    assert cbor2.loads(realm_sign1.value[0]) == {1: -35}  # ES384
    realm = cbor2.loads(realm_sign1.value[2])
    v2 = profile == "realm#2.0.0"
    want_keys = [10, 256, 44235, 44237, 44236, 44240, 265, 44238, 44239, 44243] if v2 else \
        [10, 44235, 44237, 44236, 44240, 265, 44238, 44239]
    assert list(realm) == want_keys
    assert realm[265] == ("tag:arm.com,2024:realm#2.0.0" if v2 else "tag:arm.com,2023:realm#1.0.0")
    assert realm[10] == CHALLENGE
    assert realm[44235] == bytes(64)  # no --realm-pv
    assert realm[44236] == "sha-256" and realm[44240] == "sha-256"
    assert len(realm[44238]) == 32 and [len(m) for m in realm[44239]] == [32] * 4
    cose_key = cbor2.loads(realm[44237])
    assert list(cose_key) == [1, -1, -2, -3] and cose_key[1] == 2 and cose_key[-1] == 2  # EC2, P-384
    if v2:
        assert len(realm[256]) == 33 and realm[256][0] == 0x01  # UEID, type RAND
        assert realm[44243] == 0 and type(realm[44243]) is int  # MEC policy: shared (no FEAT_MEC)
    platform = cbor2.loads(platform_sign1.value[2])
    assert platform[265] == "tag:arm.com,2023:cca_platform#1.0.0"
    assert platform[10] == hashlib.sha256(realm[44237]).digest()
    (tmp_path / "t.cbor").write_bytes(raw)
    ok = cli(tmp_path, "token", "verify", str(tmp_path / "t.cbor"), "--cpak", str(cpak(tmp_path)),
             "--challenge", CHALLENGE.hex())
    assert ok.returncode == 0, ok.stdout
    assert f"format: tag-{fmt}" in ok.stdout and f"realm profile: {realm[265]}" in ok.stdout


@pytest.mark.parametrize("flag", [["--token-format", "907"], ["--token-profile", "realm#2.0.0"]])
def test_token_options_need_a_realm(flag: list[str], busybox_image: Path, tmp_path: Path) -> None:
    r = unirealm_run(busybox_image, "--platform", "rme", *flag, params="quiet -- true", tmp=tmp_path)
    assert r.returncode != 0
    assert f"{flag[0]} valid only with --realm".encode() in r.stderr


@pytest.mark.parametrize(("flag", "message"), [
    (["--token-format", "18"], "unknown token format '18': use 399 or 907"),
    (["--token-profile", "realm#1.1.0"], "unknown realm token profile 'realm#1.1.0'"),
])
def test_bad_token_options_are_refused(flag: list[str], message: str, busybox_image: Path, tmp_path: Path) -> None:
    r = unirealm_run(busybox_image, "--realm", *flag, params="quiet -- true", tmp=tmp_path)
    assert r.returncode != 0 and message.encode() in r.stderr


def test_token_create_profile(tmp_path: Path) -> None:
    out = tmp_path / "t.cbor"
    r = cli(tmp_path, "token", "create", "--challenge", CHALLENGE.hex(), "--format", "907", "--profile",
            "realm#2.0.0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    _, realm_sign1 = split_collection(out.read_bytes(), 907)
    realm = cbor2.loads(realm_sign1.value[2])
    assert realm[265] == "tag:arm.com,2024:realm#2.0.0" and realm[256][0] == 1 and realm[44243] == 0
