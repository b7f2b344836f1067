"""`-n mode=tap` as kvmtool has it, inside a network namespace the test creates (root only):
examples/httpreply in the guest, reached from the namespace with the host's curl over the
tap. With `script=none` the VMM creates the tap and gives it host_ip; with `tapif=NAME` and
`script=PATH` the script sets the named tap up. The guest takes kvmtool's default address
(192.168.33.15/24, DHCP finds no server on a bare tap)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import UNIREALM, BackgroundRun
from .test_httpreply import BODY, BOOT_TIMEOUT, CURL
from .test_httpreply import httpreply_image as httpreply_image  # the fixture

IP = shutil.which("ip")
GUEST_URL = "http://192.168.33.15:8123/"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "tap devices and network namespaces need root (CI runs as root)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no tun/tap support in this kernel or container)"
    if IP is None:
        return "iproute2's ip is not installed"
    if CURL is None:
        return "curl is not installed"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    if reason := _why_not():
        pytest.skip(reason)
    assert IP is not None
    name = f"unirealm-{uuid.uuid4().hex[:8]}"
    res = subprocess.run([IP, "netns", "add", name], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {res.stderr.strip()}")
    try:
        subprocess.run([IP, "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run([IP, "netns", "del", name], check=False)


def in_ns(ns: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    assert IP is not None
    return subprocess.run([IP, "netns", "exec", ns, *cmd], capture_output=True, timeout=timeout, check=False)


def curl(ns: str, timeout: float = 5) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return in_ns(ns, CURL, "-s", "--max-time", str(timeout), GUEST_URL, timeout=timeout + 10)


def serve_and_fetch(image: Path, platform: str, tmp: Path, ns: str, net: str) -> BackgroundRun:
    assert IP is not None
    server = BackgroundRun(image, platform, tmp, 8123, net=net, wrap=[IP, "netns", "exec", ns])
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        assert server.proc.poll() is None, f"the VMM exited ({server.proc.returncode}):\n{server.log()}"
        res = curl(ns)
        if res.returncode == 0 and res.stdout == BODY:
            break
        assert time.monotonic() < deadline, f"no HTTP answer over the tap:\n{server.log()}"
        time.sleep(0.5)
    for _ in range(5):
        res = curl(ns, timeout=20)
        assert res.returncode == 0 and res.stdout == BODY, server.log()
    return server


def test_tap_created_and_configured_by_the_vmm(netns: str, httpreply_image: Path, tmp_path: Path) -> None:
    server = serve_and_fetch(httpreply_image, "kvm", tmp_path, netns, "mode=tap,script=none,host_ip=192.168.33.1")
    try:
        addrs = in_ns(netns, "ip", "-4", "-o", "addr").stdout.decode()
        assert "192.168.33.1/24" in addrs, addrs  # host_ip on the VMM's new tap
        # the guest's MAC is on the tap's wire
        neigh = in_ns(netns, "ip", "neigh", "show", "192.168.33.15").stdout.decode()
        assert "02:15:15:15:15:15" in neigh, neigh
        assert "Traceback" not in server.log()
    finally:
        server.stop()
    server.proc.wait(10)
    links = in_ns(netns, "ip", "-o", "link").stdout.decode()
    assert "tap" not in links  # a tap the VMM created goes with it


def test_named_tap_set_up_by_a_script_in_a_realm(netns: str, httpreply_image: Path, tmp_path: Path) -> None:
    up, down, gone = tmp_path / "ifup", tmp_path / "ifdown", tmp_path / "down-ran"
    up.write_text('#!/bin/sh\nip addr add 192.168.33.1/24 dev "$1" && ip link set "$1" up\n')
    down.write_text(f'#!/bin/sh\necho "$1" > {gone}\n')
    up.chmod(0o755)
    down.chmod(0o755)
    net = f"mode=tap,tapif=urtap0,script={up},downscript={down},guest_mac=02:15:15:15:15:42"
    server = serve_and_fetch(httpreply_image, "realm", tmp_path, netns, net)
    try:
        neigh = in_ns(netns, "ip", "neigh", "show", "192.168.33.15").stdout.decode()
        assert "02:15:15:15:15:42" in neigh and "urtap0" in neigh, neigh
    finally:
        server.stop()
    server.proc.wait(10)
    assert gone.read_text().strip() == "urtap0"


def test_tap_set_up_failure_is_one_line(netns: str, tmp_path: Path, httpreply_image: Path) -> None:
    bad = tmp_path / "fails"
    bad.write_text("#!/bin/sh\necho no bridge here >&2\nexit 3\n")
    bad.chmod(0o755)
    res = in_ns(netns, *UNIREALM, "run", "-k", str(httpreply_image), "--platform", "kvm", "-n", f"mode=tap,script={bad}",
                "--params=--", timeout=60)
    err = res.stderr.decode()
    assert res.returncode != 0 and "Traceback" not in err
    assert f"script={bad} failed (exit 3): no bridge here" in err
