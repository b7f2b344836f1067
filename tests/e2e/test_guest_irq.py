"""The unikernel takes interrupts (guest/gic.py, guest/irq.py) in all three environments: a
program's nanosleep ends on the virtual timer's PPI 27, acknowledged and EOIed by the
unikernel (`--trace irq`), with the vCPU asleep in between (few exits, not a polling loop);
a server's frames come in on the NIC's SPI."""

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

from .conftest import PLATFORMS, ROOT, BackgroundRun, unirealm_run
from .test_httpreply import BODY, fetch

CC = shutil.which("aarch64-linux-gnu-gcc")
SLEEPER = r"""
#include <stdio.h>
#include <time.h>
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4;
    struct timespec a, b, d = {0, 100000000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("slept %ld ms\n", (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000);
    return 0;
}
"""
TRACE = re.compile(rb"IRQ (\w+) intid=(\d+) vcpu=0")


def _compile(out: Path, name: str, source: str | Path) -> Path:
    if CC is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    src = out / f"{name}.c"
    src.write_text(source if isinstance(source, str) else source.read_text())
    elf = out / name
    subprocess.run([CC, "-static", "-O2", "-include", "stdlib.h", "-o", str(elf), str(src)], check=True)
    image = out / f"{name}.img"
    image.write_bytes(build_image(elf.read_bytes(), name))
    return image


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(tmp_path_factory.mktemp("sleeper"), "sleeper", SLEEPER)


def events(stderr: bytes) -> list[tuple[str, int]]:
    return [(kind.decode(), int(intid)) for kind, intid in TRACE.findall(stderr)]


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_nanosleep_ends_on_the_virtual_timer_interrupt(platform: str, sleeper: Path, tmp_path: Path) -> None:
    res = unirealm_run(sleeper, *PLATFORMS[platform], "--trace", "irq", params="-- 4", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    slept = int(res.stdout.split()[1])
    assert slept >= 400, res.stdout
    seen = events(res.stderr)
    acks = [e for e in seen if e == ("ack", 27)]
    # A plain VM's WFI ends only on an interrupt: one timer interrupt per sleep. A realm's host
    # may let a waiting REC look again early (a spurious wake-up), and a kernel that finds its
    # deadline passed then re-arms the timer before taking the interrupt.
    assert len(acks) >= (1 if platform == "realm" else 4), seen
    ended = {"eoi", "deactivate"} & {kind for kind, intid in seen if intid == 27}
    assert ended, seen  # the unikernel's EOI (in a realm, the list register's deactivation)


def _exits(image: Path, sleeps: int) -> int:
    cfg = RunConfig.from_args(run_parser().parse_args(["-k", str(image), "--platform", "kvm", "--params",
                                                       f"-- {sleeps}"]))
    out, log = io.BytesIO(), io.BytesIO()
    result = Vmm(cfg, out, None, log_output=log).run()
    assert result.status == 0, log.getvalue().decode()[-2000:]
    assert int(out.getvalue().split()[1]) >= 100 * sleeps
    return result.exits


def test_a_sleeping_unikernel_waits_in_wfi_not_in_a_polling_loop(sleeper: Path) -> None:
    """Each 100 ms nanosleep costs a handful of exits (the WFI, the timer's wake-up): the
    vCPU sleeps until its timer. Polling, each WFI was one trip through the VMM's wait loop
    (about 170 exits per 100 ms sleep, measured on the tree before)."""
    per_sleep = (_exits(sleeper, 20) - _exits(sleeper, 2)) / 18
    assert per_sleep < 20, per_sleep


@pytest.fixture(scope="module")
def httpreply_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(tmp_path_factory.mktemp("httpreply"), "httpreply", ROOT / "examples/httpreply/httpreply.c")


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_frames_come_in_on_the_nic_interrupt(platform: str, httpreply_image: Path, tmp_path: Path) -> None:
    server = BackgroundRun(httpreply_image, platform, tmp_path, 8123, extra=("--trace", "irq"))
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.proc.poll() is None, server.log()
            try:
                if fetch(server.port) == BODY:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.5)
        for _ in range(5):
            assert fetch(server.port) == BODY
    finally:
        server.stop()
    seen = events(server.err.read_bytes())
    nic = {intid for kind, intid in seen if kind == "ack" and intid >= 32}
    assert nic, seen[-50:]  # an SPI: the NIC's (the only device with its interrupt on here)
