"""`unirealm run --realm` launches as kvmtool-cca does (RIPAS RAM over all of RAM, then the
images in address order, kvmtool's DTB and initrd placement), so `unirealm measure -c
unirealm ... kvmtool ARGS` with run's own flags predicts the RIM the booted realm reports in
its attestation token."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest

from unirealm.attest.verify import verify_token
from unirealm.cli.main import main
from unirealm.host.cmdline import parse_run_args
from unirealm.host.cpio import write_initrd
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm
from unirealm.machine.platform import PlatformRoT

RIM_CLAIM = 44238
CHALLENGE = bytes(range(64))


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.getbasetemp() / "platform-data"
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "app.img"
    path.write_bytes(build_image(None))
    return path


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rootfs")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("kvmtool's initrd placement, 4 bytes below the DTB\n" * 37)
    path = root.parent / "initrd.cpio"
    path.write_bytes(write_initrd(root))
    assert len(path.read_bytes()) % 4096  # not a whole number of granules
    return path


def token_rim(argv: list[str]) -> tuple[bytes, str]:
    """Boot the realm with attest=CHALLENGE; the RIM claim of the token it prints, and its log."""
    cfg = parse_run_args(argv)
    out, log = io.BytesIO(), io.BytesIO()
    assert Vmm(cfg, out, None, log_output=log).run().status == 0, log.getvalue().decode()
    text = log.getvalue().decode() + out.getvalue().decode()
    match = re.search(r"base64\):\n(.*?)\nunirealm: end of", text, re.S)
    assert match is not None, text
    token = base64.b64decode("".join(match.group(1).split()))
    verdict = verify_token(token, PlatformRoT().identity.cpak.public_key(), challenge=CHALLENGE)
    assert verdict.ok, verdict.problems
    assert verdict.token.realm is not None
    return verdict.token.realm.claims[RIM_CLAIM], text


def kvmtool_rim(capsys: pytest.CaptureFixture[str], host: list[str], vmm: list[str]) -> bytes:
    capsys.readouterr()
    assert main(["measure", "-c", "unirealm", *host, "kvmtool", *vmm]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    rim = bytes.fromhex(line.removeprefix("RIM: "))  # printed as the RMM's 64-byte register
    size = 64 if "sha512" in vmm else 32
    assert rim[size:] == bytes(64 - size)
    return rim[:size]


def run_rim(capsys: pytest.CaptureFixture[str], argv: list[str]) -> bytes:
    capsys.readouterr()
    assert main(["measure", *argv]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("RIM"))
    return bytes.fromhex(line.split()[-1])


@pytest.mark.parametrize("flags", [
    ["-c", "1", "-m", "256M"],
    ["-c", "2", "-m", "128M", "-i", "INITRD"],
    ["-c", "1", "-m", "1G", "-i", "INITRD", "-p", "root=/dev/vda2"],
    ["-c", "3", "-m", "2G", "--measurement-algo", "sha512", "--console", "serial"],
    ["-c", "1", "-m", "96M", "--9p", "SHARE", "--virtio-transport", "mmio"],
    ["-c", "1", "-m", "64M", "--virtio-transport", "mmio", "-n", "mode=user", "--9p", "SHARE,data",
     "--console", "serial"],
], ids=["kernel", "smp-initrd", "1G-initrd", "2G-sha512", "9p-default-nic", "nic-9p"])
def test_measure_from_kvmtool_flags_is_the_rim_the_realm_reports(
        flags: list[str], image: Path, initrd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    share = tmp_path / "share"
    share.mkdir()
    vmm = [f.replace("INITRD", str(initrd)).replace("SHARE", str(share)) for f in flags]
    params = f"attest={CHALLENGE.hex()} nonet loglevel=7"
    if "-p" in vmm:
        vmm[vmm.index("-p") + 1] += " " + params
    else:
        vmm += ["-p", params]
    argv = ["--realm", "-k", str(image), *vmm]
    host = ["-k", str(image)] + (["-i", str(initrd)] if "-i" in vmm else [])
    predicted = kvmtool_rim(capsys, host, argv)
    assert run_rim(capsys, argv) == predicted  # run's own plan says the same
    reported, log = token_rim(argv)
    assert reported == predicted
    if "-i" in vmm:  # the kernel found the cpio at /chosen's 4-byte aligned linux,initrd-start
        assert "initrd: 2 entries unpacked into /" in log, log
