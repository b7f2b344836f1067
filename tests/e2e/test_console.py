"""The console at speed, end to end: a static C program (tests/e2e/progs/console_burst.c,
built at test time) writes a large burst to stdout and reads stdin through `unirealm run
--console virtio` (hvc0) in a plain VM, a VM on the RME machine and a realm, and through
the ns16550 (ttyS0); every byte of stdout is compared with what it must be. Debian's
busybox `cat` and `sha256sum` read stdin through hvc0 too."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import PLATFORMS, unirealm_run

pytestmark = pytest.mark.e2e
PROG = Path(__file__).parent / "progs" / "console_burst.c"


@pytest.fixture(scope="module")
def burst_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    out = tmp_path_factory.mktemp("console")
    subprocess.run([cc, "-static", "-O2", "-o", str(out / "burst"), str(PROG)], check=True)
    image = out / "burst.img"
    image.write_bytes(build_image((out / "burst").read_bytes(), "console_burst"))
    return image


def pattern(n: int) -> bytes:
    return bytes(ord("a") + (i * 7 + i // 97) % 26 for i in range(n))


def fnv(data: bytes) -> str:
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFF_FFFF_FFFF_FFFF
    return f"in={len(data)} sum={h:016x}\n"


@pytest.mark.parametrize("platform", ["kvm", "rme", "realm"])
def test_virtio_console_burst_and_stdin_exact(burst_image: Path, platform: str, tmp_path: Path) -> None:
    """1 MiB out in one write(), 200 KB of arbitrary bytes in, echoed back: all through hvc0."""
    data_in = random.Random(platform).randbytes(200_000)
    res = unirealm_run(burst_image, *PLATFORMS[platform], "--console", "virtio", params=f"loglevel=7 -- {1 << 20} echo",
                       stdin=data_in, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert res.stdout == pattern(1 << 20) + data_in + fnv(data_in).encode()
    assert b"hvc0: virtio-console" in res.stderr  # stdio really went through the virtio console


def test_virtio_console_with_no_stdin_reads_end_of_input(burst_image: Path, tmp_path: Path) -> None:
    res = unirealm_run(burst_image, "--realm", "--console", "virtio", params="-- 10", tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert res.stdout == pattern(10) + fnv(b"").encode()


def test_serial_console_burst_and_stdin_exact(burst_image: Path, tmp_path: Path) -> None:
    """The same program on ttyS0 (the 16550 with its FIFOs): smaller sizes, every byte exact."""
    data_in = random.Random(1).randbytes(3000)
    res = unirealm_run(burst_image, "--platform", "kvm", params="-- 20000 echo", stdin=data_in, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert res.stdout == pattern(20000) + data_in + fnv(data_in).encode()
    assert b"hvc0" not in res.stderr


def test_hostile_used_ring_on_the_console_is_refused(burst_image: Path, tmp_path: Path) -> None:
    """A VMM whose used entries name descriptors past the queue or lengths past the buffer:
    the realm's console driver refuses them (one line on the kernel log), and the run still
    ends -- no hang, no traceback, no bytes from outside the buffers."""
    res = unirealm_run(burst_image, "--realm", "--console", "virtio", "--hostile", "used-bogus",
                       params="-- 1000 echo", stdin=b"x" * 5000, tmp=tmp_path, timeout=300)
    err = res.stderr.decode(errors="replace")
    assert "hvc0:" in err and "console disabled" in err, err[-2000:]
    assert "Traceback" not in err
    assert len(res.stdout) <= 1000 + 5000 + 40 and res.stdout == pattern(1000)[: len(res.stdout)]


@pytest.mark.parametrize("platform", ["kvm", "realm"])
def test_busybox_cat_and_sha256sum_over_hvc0(busybox_image: Path, platform: str, tmp_path: Path) -> None:
    """Debian's busybox through hvc0: `cat` echoes 300 KB of arbitrary stdin byte for byte,
    and `sha256sum` of stdin equals hashlib's."""
    data = random.Random(platform + "bb").randbytes(300_000)
    res = unirealm_run(busybox_image, *PLATFORMS[platform], "--console", "virtio", params="quiet -- cat",
                       stdin=data, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert res.stdout == data
    res = unirealm_run(busybox_image, *PLATFORMS[platform], "--console", "virtio", params="quiet -- sha256sum",
                       stdin=data, tmp=tmp_path)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert res.stdout == f"{hashlib.sha256(data).hexdigest()}  -\n".encode()
