"""pthreads on the unikernel's green threads: examples/pthreads (6 threads, a mutex, a
condvar barrier, join, __thread counters, a sleeper and a spinner that needs preemption)
in all three environments, repeatedly, and a deliberate deadlock reported cleanly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import PLATFORMS, ROOT, unirealm_run

CC = shutil.which("aarch64-linux-gnu-gcc")
DEADLOCK_STATUS = 134


def expected(rounds: int) -> bytes:
    total = sum((i + 1) * rounds for i in range(6))
    lines = [f"threads 6 rounds {rounds} total {total} expected {total}"]
    lines += [f"thread {i} counted {(i + 1) * rounds}" for i in range(6)]
    return ("\n".join([*lines, "ok"]) + "\n").encode()


@pytest.fixture(scope="module")
def pthreads_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CC is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    out = tmp_path_factory.mktemp("pthreads")
    elf = out / "pthreads"
    subprocess.run([CC, "-static", "-O2", "-pthread", "-o", str(elf), str(ROOT / "examples/pthreads/pthreads.c")],
                   check=True)
    image = out / "pthreads.img"
    image.write_bytes(build_image(elf.read_bytes(), "pthreads"))
    return image


def run(image: Path, *extra: str, params: str, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    return unirealm_run(image, *extra, params=params, tmp=tmp, timeout=120)


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_pthreads_in_every_environment(platform: str, pthreads_image: Path, tmp_path: Path) -> None:
    res = run(pthreads_image, *PLATFORMS[platform], params="-- 300", tmp=tmp_path)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    assert res.stdout == expected(300)
    assert b"Traceback" not in res.stderr


@pytest.mark.slow
def test_pthreads_twenty_times_in_a_row(pthreads_image: Path, tmp_path: Path) -> None:
    for i in range(20):
        platform = list(PLATFORMS)[i % 3]
        res = run(pthreads_image, *PLATFORMS[platform], params="-- 60", tmp=tmp_path)
        assert res.returncode == 0, f"run {i} ({platform}): " + res.stdout.decode() + res.stderr.decode()
        assert res.stdout == expected(60), f"run {i} ({platform})"


def test_deadlock_is_reported_not_hung(pthreads_image: Path, tmp_path: Path) -> None:
    res = run(pthreads_image, "--platform", "kvm", params="-- deadlock", tmp=tmp_path)
    err = res.stderr.decode()
    assert res.returncode == DEADLOCK_STATUS, err
    assert res.stdout == b"locking the mutex a second time\n"
    assert "deadlock: every thread is blocked" in err and "futex wait" in err
    assert "Traceback" not in err and "panic" not in err


def test_bad_argument_fails_cleanly(pthreads_image: Path, tmp_path: Path) -> None:
    res = run(pthreads_image, "--realm", params="-- nonsense", tmp=tmp_path)
    out = res.stdout.decode() + res.stderr.decode()
    assert res.returncode == 2 and "usage:" in out and "Traceback" not in out


def test_pthreads_without_the_svc_fast_path(pthreads_image: Path, tmp_path: Path) -> None:
    """The kernel option `nofastsvc`: every syscall leaves the CPU loop (the slow path)."""
    res = run(pthreads_image, "--platform", "kvm", params="nofastsvc -- 100", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == expected(100)
