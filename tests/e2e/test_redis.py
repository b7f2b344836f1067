"""Debian's redis-server (7.0, dynamic, with its background threads) on the unikernel behind
`-n mode=user,hostfwd=...`, driven by the host's own redis-cli and redis-benchmark, in all
three environments."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import PLATFORMS, BackgroundRun, debian_image

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
# No fork for background saves in a test, and redis's fork-based ARM64 copy-on-write probe
# reads /proc/self/smaps, which the unikernel does not provide.
PARAMS = "-- --port 6379 --protected-mode no --save '' --appendonly no --ignore-warnings ARM64-COW-BUG"
BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def redis_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if REDIS_CLI is None or REDIS_BENCHMARK is None:
        pytest.skip("the host has no redis-cli/redis-benchmark (apt-get install redis-tools)")
    return debian_image(tmp_path_factory, ["redis-server"], "/usr/bin/redis-server")


def cli(server: BackgroundRun, *args: str) -> str:
    assert REDIS_CLI is not None
    try:
        res = subprocess.run([REDIS_CLI, "-p", str(server.port), *args], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return ""  # still booting (the forwarded port accepts before the server listens), or wedged
    return res.stdout.decode().strip()


def start(image: Path, platform: str, tmp: Path) -> BackgroundRun:
    server = BackgroundRun(image, platform, tmp, 6379, PARAMS)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"the VMM exited ({server.proc.returncode}):\n{server.log()}"
        if cli(server, "ping") == "PONG":
            return server
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"redis did not answer within {BOOT_TIMEOUT:.0f} s:\n{server.log()}")


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_redis_cli_and_benchmark(platform: str, redis_image: Path, tmp_path: Path) -> None:
    server = start(redis_image, platform, tmp_path)
    try:
        assert cli(server, "set", "greeting", "hello from a unikernel") == "OK"
        assert cli(server, "get", "greeting") == "hello from a unikernel"
        assert [cli(server, "incr", "counter") for _ in range(3)] == ["1", "2", "3"]
        assert cli(server, "rpush", "list", "a", "b", "c") == "3"
        assert cli(server, "lrange", "list", "0", "-1").split() == ["a", "b", "c"]
        assert "redis_version:7." in cli(server, "info", "server")
        assert REDIS_BENCHMARK is not None
        bench = subprocess.run(
            [REDIS_BENCHMARK, "-p", str(server.port), "-n", "300", "-c", "2", "-t", "set,get", "-q"],
            capture_output=True, timeout=120, check=False,
        )
        assert bench.returncode == 0, bench.stderr.decode()
        summary = bench.stdout.decode().replace("\r", "\n")
        assert "SET:" in summary and "GET:" in summary and "requests per second" in summary
        # greeting, counter, list, and the one key redis-benchmark uses without -r
        assert cli(server, "dbsize") == "4"
        assert len(cli(server, "get", "key:__rand_int__")) == 3  # redis-benchmark writes 3-byte values
    finally:
        server.stop()


def test_redis_16mib_value_round_trip(redis_image: Path, tmp_path: Path) -> None:
    """A 16 MiB random value SET from the host and read back through the guest's TCP, both
    directions checked with SHA-256, and the server answering afterwards (plain VM)."""
    import hashlib
    import os

    assert REDIS_CLI is not None
    value = os.urandom(16 << 20)
    src = tmp_path / "value.bin"
    src.write_bytes(value)
    server = start(redis_image, "kvm", tmp_path)
    try:
        with open(src, "rb") as f:
            res = subprocess.run([REDIS_CLI, "-p", str(server.port), "-x", "set", "big"], stdin=f,
                                 capture_output=True, timeout=300, check=False)
        assert res.stdout.strip() == b"OK", (res.stderr, server.log())
        assert cli(server, "strlen", "big") == str(len(value))
        res = subprocess.run([REDIS_CLI, "-p", str(server.port), "get", "big"], capture_output=True, timeout=300,
                             check=False)
        got = res.stdout[:-1] if res.stdout.endswith(b"\n") else res.stdout  # redis-cli ends raw output with \n
        assert len(got) == len(value) and hashlib.sha256(got).digest() == hashlib.sha256(value).digest()
        assert cli(server, "ping") == "PONG"
        assert "Traceback" not in server.log()
    finally:
        server.stop()
