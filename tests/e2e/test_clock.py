"""Time in the unikernel: the wall clock from the RTC, and the vDSO that reads the
architected counter at EL0 so clock_gettime does not trap."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from unirealm.host.cmdline import RunConfig, run_parser
from unirealm.host.image import build_image
from unirealm.host.vmm import Vmm

REPO = Path(__file__).resolve().parents[2]
CC = shutil.which("aarch64-linux-gnu-gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="aarch64-linux-gnu-gcc is not installed")


@pytest.fixture(scope="module")
def clock_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("clock")
    subprocess.run([CC, "-static", "-O2", "-o", str(tmp / "clock"), str(REPO / "examples/clock/clock.c")], check=True)  # type: ignore[list-item]
    image = tmp / "clock.img"
    image.write_bytes(build_image((tmp / "clock").read_bytes(), "clock"))
    return image


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIREALM_DATA_DIR", str(tmp_path))


def run(image: Path, *argv: str) -> tuple[str, str]:
    cfg = RunConfig.from_args(run_parser().parse_args([*argv, "-k", str(image)]))
    out, log = io.BytesIO(), io.BytesIO()
    assert Vmm(cfg, out, None, log_output=log).run().status == 0
    return out.getvalue().decode(), log.getvalue().decode()


@pytest.mark.parametrize("env", [["--realm"], ["--platform", "kvm"]], ids=["realm", "kvm"])
def test_wall_clock_and_vdso(clock_image: Path, env: list[str]) -> None:
    out, log = run(clock_image, *env, "-p", "strace --")
    realtime = int(re.search(r"realtime (\d+)", out).group(1))  # type: ignore[union-attr]
    assert abs(realtime - time.time()) < 5
    assert abs(int(re.search(r"gettimeofday (\d+)", out).group(1)) - realtime) <= 1  # type: ignore[union-attr]
    assert "resolution 16 ns" in out  # one tick of the 62.5 MHz counter
    # The 20 ms loop ran in the vDSO: no clock_gettime, gettimeofday or clock_getres trapped.
    assert not re.search(r"\] (clock_gettime|gettimeofday|clock_getres)\(", log), log
    calls = int(re.search(r"monotonic calls in 20 ms: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert calls > 1000


def test_a_broken_vdso_falls_back_to_syscalls(clock_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unirealm.host import image as image_mod

    monkeypatch.setattr(image_mod, "vdso", lambda: b"\x7fELF-not-a-vdso")
    plain = tmp_path / "novdso.img"
    plain.write_bytes(image_mod.build_image((clock_image.parent / "clock").read_bytes(), "clock"))
    out, log = run(plain, "--platform", "kvm", "-p", "strace --")
    assert abs(int(re.search(r"realtime (\d+)", out).group(1)) - time.time()) < 5  # type: ignore[union-attr]
    assert re.search(r"\] clock_gettime\(0x1,", log)
