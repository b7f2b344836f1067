"""examples/httpreply (a static C HTTP server on guest port 8123) behind `-n mode=user` with
`hostfwd=tcp:127.0.0.1:PORT-:8123`, fetched with the host's curl in all three environments,
one client after another and ten at once (requests per second: bench/net_bench.py)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from unirealm.host.image import build_image

from .conftest import PLATFORMS, ROOT, BackgroundRun

CC = shutil.which("aarch64-linux-gnu-gcc")
CURL = shutil.which("curl")
SOURCE = ROOT / "examples/httpreply/httpreply.c"
BODY = b"Hello, World!\n"
BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def httpreply_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CC is None:
        pytest.skip("aarch64-linux-gnu-gcc is not installed (make setup installs it)")
    if not SOURCE.exists():
        pytest.skip("examples/httpreply is not there")
    out = tmp_path_factory.mktemp("httpreply")
    elf = out / "httpreply"
    subprocess.run([CC, "-static", "-O2", "-o", str(elf), str(SOURCE)], check=True)
    image = out / "httpreply.img"
    image.write_bytes(build_image(elf.read_bytes(), "httpreply"))
    return image


class Server(BackgroundRun):
    """httpreply in the background, with curl to reach it."""

    def __init__(self, image: Path, platform: str, tmp: Path) -> None:
        super().__init__(image, platform, tmp, 8123)

    def curl(self, timeout: float = 20.0) -> subprocess.CompletedProcess[bytes]:
        assert CURL is not None
        return subprocess.run([CURL, "-s", "--max-time", str(timeout), f"http://127.0.0.1:{self.port}/"],
                              capture_output=True, timeout=timeout + 10, check=False)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the VMM exited ({self.proc.returncode}):\n{self.log()}"
            res = self.curl(timeout=5)
            if res.returncode == 0 and res.stdout == BODY:
                return
            time.sleep(0.5)
        pytest.fail(f"no HTTP answer within {BOOT_TIMEOUT:.0f} s:\n{self.log()}")


def fetch(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_httpreply_with_curl(platform: str, httpreply_image: Path, tmp_path: Path) -> None:
    if CURL is None:
        pytest.skip("curl is not installed")
    server = Server(httpreply_image, platform, tmp_path)
    try:
        server.wait_ready()
        for _ in range(5):
            res = server.curl()
            assert res.returncode == 0 and res.stdout == BODY, server.log()
        # clients at the same time: each gets its own gateway connection
        clients = [subprocess.Popen([CURL, "-s", "--max-time", "30", f"http://127.0.0.1:{server.port}/"],
                                    stdout=subprocess.PIPE) for _ in range(10)]
        for client in clients:
            out, _ = client.communicate(timeout=60)
            assert client.returncode == 0 and out == BODY, server.log()
        assert server.proc.poll() is None
        assert "Traceback" not in server.log()
    finally:
        server.stop()
