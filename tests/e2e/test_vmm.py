"""helloworld through the VMM in all three environments, the RIM it reports, and bad input."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from unirealm.arch.memory import World
from unirealm.attest.measure import measure_launch
from unirealm.attest.verify import verify_token
from unirealm.cli.measure import launch_of_run
from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image, inspect_image, payload_zip
from unirealm.host.vmm import Vmm
from unirealm.machine.board import Machine
from unirealm.machine.memory import GranuleProtectionFault
from unirealm.machine.platform import PlatformRoT
from unirealm.rmm.core import Rmm

REPO = Path(__file__).resolve().parents[2]
CC = shutil.which("aarch64-linux-gnu-gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="aarch64-linux-gnu-gcc is not installed (make setup installs it)")

EXIT_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) { printf("exiting with %s\n", argv[1]); return atoi(argv[1]); }
"""


def compile_c(source: Path | str, out: Path) -> bytes:
    if isinstance(source, str):
        src = out.with_suffix(".c")
        src.write_text(source)
        source = src
    subprocess.run([CC, "-static", "-O2", "-o", str(out), str(source)], check=True)  # type: ignore[list-item]
    return out.read_bytes()


@pytest.fixture(scope="module")
def hello_image(hello_elf: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "helloworld.img"
    path.write_bytes(build_image(hello_elf, "helloworld"))
    return path


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.getbasetemp() / "platform-data"
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(path))
    return path


def run_vmm(*argv: str) -> tuple[int, str]:
    """Exit status, and the kernel log (ttyS1) followed by the app's output (ttyS0)."""
    status, out, log = run_vmm_split(*argv)
    return status, log + out


def run_vmm_split(*argv: str) -> tuple[int, str, str]:
    cfg = RunConfig.from_args(run_parser().parse_args(list(argv)))
    out, log = io.BytesIO(), io.BytesIO()
    result = Vmm(cfg, out, None, log_output=log).run()
    return result.status, out.getvalue().decode(), log.getvalue().decode()


@needs_cc
def test_app_output_and_kernel_log_are_separate(hello_image: Path) -> None:
    status, out, log = run_vmm_split("--realm", "-k", str(hello_image), "-p", "loglevel=7 -- solo")
    assert status == 0
    assert out == "Hello from unirealm! argc=2\n  argv[0] = /helloworld\n  argv[1] = solo\n"
    assert "RSI 1.0 detected" in log and "Hello" not in log


@needs_cc
@pytest.mark.parametrize("env", [["--platform", "kvm"], ["--platform", "rme"], ["--realm"]], ids=["kvm", "rme", "realm"])
def test_helloworld_in_every_environment(hello_image: Path, env: list[str]) -> None:
    status, out = run_vmm(*env, "-k", str(hello_image), "-p", "loglevel=7 -- one two")
    assert status == 0
    assert "Hello from unirealm! argc=3" in out
    assert "argv[1] = one" in out and "argv[2] = two" in out
    if env == ["--realm"]:
        assert "RSI 1.0 detected: running as a realm" in out
        assert "IPA width 33 bits" in out  # -m default 256 MiB: last RAM address 0x8fffffff, +1 for realms
        assert "RIPAS RAM set over [0x80000000, 0x90000000)" in out
        mapped = next(line for line in out.splitlines() if "mapped unprotected at IPA | 0x100000000:" in line)
        for base in (0x1000000, 0x1001000, 0x3FFF0000):
            assert f" {base:#x}" in mapped
        assert "not a realm" not in out
    else:
        assert "RSI: NOT_SUPPORTED -> not a realm" in out
        assert "mapped unprotected" not in out


@needs_cc
def test_exit_status_becomes_the_vmm_status(tmp_path: Path) -> None:
    image = tmp_path / "exit.img"
    image.write_bytes(build_image(compile_c(EXIT_C, tmp_path / "exit"), "exit"))
    for env in (["--platform", "kvm"], ["--realm"]):
        status, out = run_vmm(*env, "-k", str(image), "-p", "-- 7")
        assert status == 7, out
        assert "exiting with 7" in out


@needs_cc
@pytest.mark.parametrize("console", [[], ["--console", "virtio"]], ids=["serial", "virtio"])
def test_measure_predicts_the_rim_the_realm_reads_and_reports(hello_image: Path, console: list[str]) -> None:
    challenge = bytes(range(48))
    argv = ["--realm", "-k", str(hello_image), *console, "-p", f"attest={challenge.hex()} ukrsi.selftest -- x"]
    predicted = measure_launch(launch_of_run(run_parser().parse_args(argv))).digest
    status, out = run_vmm(*argv)
    assert status == 0
    # The self test's MEASUREMENT_READ(RIM) succeeded, and the token carries the RIM.
    assert "ukrsi.selftest: RSI_MEASUREMENT_READ(RIM) -> SUCCESS [ok]" in out
    assert re.search(r"ukrsi.selftest: \d+ passed, 0 failed", out), out
    match = re.search(r"base64\):\n(.*?)\nunirealm: end of", out, re.S)
    assert match is not None
    token = base64.b64decode("".join(match.group(1).split()))
    verdict = verify_token(token, PlatformRoT().identity.cpak.public_key(), challenge=challenge)
    assert verdict.ok, verdict.problems
    assert verdict.token.realm is not None
    assert verdict.token.realm.claims[44238] == predicted


@needs_cc
def test_changing_one_byte_of_the_image_changes_what_runs_and_the_rim(hello_elf: bytes, tmp_path: Path) -> None:
    original = tmp_path / "a.img"
    original.write_bytes(build_image(hello_elf, "helloworld"))
    kernel_src = (REPO / "src" / "unirealm" / "guest" / "kernel.py").read_text()
    marker = "not a realm"
    assert marker in kernel_src
    changed = tmp_path / "b.img"
    changed.write_bytes(
        build_image(hello_elf, "helloworld", extra={"guest/kernel.py": kernel_src.replace(marker, "not a realX").encode()})
    )
    a, b = original.read_bytes(), changed.read_bytes()
    assert a != b

    def rim(path: Path) -> bytes:
        return measure_launch(launch_of_run(run_parser().parse_args(["--realm", "-k", str(path)]))).digest

    assert rim(original) != rim(changed)
    _, out = run_vmm("--platform", "kvm", "-k", str(changed), "-p", "loglevel=7")
    assert "not a realX" in out  # the code that ran is the code in the image

    # One byte anywhere in the image moves the RIM, even in the padding the guest never reads.
    flipped = bytearray(a)
    flipped[0x30] ^= 1
    path = tmp_path / "c.img"
    path.write_bytes(bytes(flipped))
    assert rim(path) != rim(original)


@needs_cc
def test_a_corrupted_payload_is_refused_by_the_vcpu(hello_elf: bytes, tmp_path: Path) -> None:
    image = bytearray(build_image(hello_elf, "helloworld"))
    info = inspect_image(bytes(image))
    assert info is not None
    image[info.payload_offset + 100] ^= 0xFF
    path = tmp_path / "bad.img"
    path.write_bytes(bytes(image))
    proc = subprocess.run(
        [sys.executable, "-m", "unirealm.cli.main", "run", "-k", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "does not match its hash" in proc.stderr and "Traceback" not in proc.stderr


def test_the_host_cannot_read_realm_memory(tmp_path: Path) -> None:
    machine = Machine(dram_size=64 << 20, data_dir=tmp_path)
    Rmm(machine.monitor)
    from unirealm.host.kvm import RealmConfig, RealmVm
    from unirealm.host.rmi_client import HostPages

    vm = RealmVm(machine, HostPages(machine), RealmConfig(ipa_bits=33))
    vm.create()
    secret = b"realm secret".ljust(4096, b"\0")
    vm.populate(0x8000_0000, secret)
    data_pa = vm.data[0x8000_0000]
    ns = machine.ns_memory()
    with pytest.raises(GranuleProtectionFault):
        ns.read(data_pa, 16)
    with pytest.raises(GranuleProtectionFault):
        ns.write(data_pa, b"x")
    assert machine.memory.accessor(World.REALM).read(data_pa, 12) == b"realm secret"
    vm.destroy()
    assert ns.read(data_pa, 16) == bytes(16)  # back with the host, scrubbed


def test_image_payload_is_deterministic() -> None:
    assert payload_zip(b"\x7fELF", "x") == payload_zip(b"\x7fELF", "x")
    names = zipfile.ZipFile(io.BytesIO(payload_zip(None))).namelist()
    assert "guest/kernel.py" in names and "arch/rsi.py" in names
    assert not any(n.startswith(("rmm/", "host/", "machine/")) for n in names)


def cli(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unirealm.cli.main", *argv], capture_output=True, text=True, input=stdin, timeout=120
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "-k", "/nonexistent/kernel.img"], "not found"),
        (["run", "--frobnicate"], "unrecognized arguments"),
        (["run", "-k", "X", "--realm", "--realm-pv", "aa" * 65], "at most 64"),
        (["run", "-k", "X", "--realm-pv", "abc"], "realm"),
        (["run", "-k", "X", "--platform", "kvm", "--realm"], "realm"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv: list[str], message: str) -> None:
    proc = cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # argparse adds a usage line for unknown flags


@needs_cc
def test_truncated_kernel_and_too_little_memory(hello_image: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.img"
    truncated.write_bytes(hello_image.read_bytes()[: 100_000])
    proc = cli("run", "-k", str(truncated))
    assert proc.returncode == 2 and "truncated" in proc.stderr and "Traceback" not in proc.stderr
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(hello_image.read_bytes()[:0x50])
    proc = cli("run", "-k", str(tiny))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = cli("run", "-k", str(hello_image), "-m", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@needs_cc
def test_static_pie_program(tmp_path: Path) -> None:
    elf = tmp_path / "hello-pie"
    subprocess.run([CC, "-static-pie", "-O2", "-o", str(elf), str(REPO / "examples/helloworld/hello.c")], check=True)  # type: ignore[list-item]
    image = tmp_path / "pie.img"
    image.write_bytes(build_image(elf.read_bytes(), "hello-pie"))
    status, out, _ = run_vmm_split("--realm", "-k", str(image), "-p", "-- pie")
    assert status == 0
    assert out == "Hello from unirealm! argc=2\n  argv[0] = /hello-pie\n  argv[1] = pie\n"


@needs_cc
def test_two_virtio_devices_in_one_granule(hello_image: Path, tmp_path: Path) -> None:
    """virtio-mmio windows are 0x200 bytes, so 9p and net share a granule: the realm checks the
    RIPAS of whole granules and maps both through the unprotected alias."""
    share = tmp_path / "share"
    share.mkdir()
    status, out, log = run_vmm_split(
        "--realm", "-k", str(hello_image), "--9p", f"{share},kvm_9p", "-n", "mode=user", "-p", "loglevel=7 -- both"
    )
    assert status == 0, log
    assert "argv[1] = both" in out
    mapped = next(line for line in log.splitlines() if "mapped unprotected at IPA | 0x100000000:" in line)
    assert "virtio,mmio 0x3000000 0x3000200" in mapped


@needs_cc
@pytest.mark.parametrize("env", [["--realm"], ["--platform", "kvm"]], ids=["realm", "kvm"])
def test_a_panic_before_the_console_is_still_reported(hello_elf: bytes, tmp_path: Path, env: list[str]) -> None:
    kernel_src = (REPO / "src" / "unirealm" / "guest" / "kernel.py").read_text()
    marker = "    def map_devices(self) -> None:\n"
    broken = kernel_src.replace(marker, marker + "        raise RuntimeError('deliberate early failure')\n", 1)
    image = tmp_path / "panic.img"
    image.write_bytes(build_image(hello_elf, "hello", extra={"guest/kernel.py": broken.encode()}))
    status, out, log = run_vmm_split(*env, "-k", str(image))
    assert status == 125
    assert "panic: RuntimeError: deliberate early failure" in log
    assert out == ""
