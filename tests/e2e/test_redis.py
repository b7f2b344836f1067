"""Debian's redis-server (7.0, dynamic, with its background threads) on the unikernel behind
`-n mode=user,hostfwd=...`, driven by the host's own redis-cli and redis-benchmark, in all
three environments."""

from __future__ import annotations

import hashlib
import os
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
        large_values(server, CI_VALUE, tmp_path)
    finally:
        server.stop()


CI_VALUE = 2 << 20  # what the suite affords in every environment (a realm moves ~1 MiB/s)
BIG_VALUE = 16 << 20
CHUNK = 65521  # a prime: the server-built value repeats no power-of-two period
# The server builds a value from a key's contents: KEYS[2] repeated ARGV[1] times at KEYS[1], the
# last copy first (that SETRANGE allocates the whole value once), then the others in place.
BUILD_SCRIPT = ("local c = redis.call('GET', KEYS[2]) "
                "for i = tonumber(ARGV[1]) - 1, 0, -1 do redis.call('SETRANGE', KEYS[1], i * #c, c) end "
                "return redis.call('STRLEN', KEYS[1])")


def raw(server: BackgroundRun, *args: str, stdin: Path | None = None) -> bytes:
    """redis-cli's raw reply (its final newline taken off), failing on a timeout or an error."""
    assert REDIS_CLI is not None
    with open(stdin if stdin is not None else os.devnull, "rb") as f:
        res = subprocess.run([REDIS_CLI, "-p", str(server.port), *args], stdin=f, capture_output=True,
                             timeout=600, check=False)
    assert res.returncode == 0 and res.stdout.endswith(b"\n"), (res.stderr, server.log())
    return res.stdout[:-1]


def same(got: bytes, want: bytes) -> None:
    assert len(got) == len(want), f"{len(got)} bytes arrived, {len(want)} sent"
    assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest(), "the bytes differ"


def large_values(server: BackgroundRun, size: int, tmp: Path) -> None:
    """A random value of `size` bytes SET from the host (the guest receives it) and read back
    (the guest sends it), a value the server built itself read (the guest sends what it never
    received), each checked by length and SHA-256; then the server still answers."""
    value = os.urandom(size)
    src = tmp / "value.bin"
    src.write_bytes(value)
    assert raw(server, "-x", "set", "big", stdin=src) == b"OK"
    assert raw(server, "strlen", "big") == str(size).encode()
    same(raw(server, "get", "big"), value)
    chunk = os.urandom(CHUNK)
    src.write_bytes(chunk)
    assert raw(server, "-x", "set", "chunk", stdin=src) == b"OK"
    reps = size // CHUNK + 1
    assert raw(server, "eval", BUILD_SCRIPT, "2", "built", "chunk", str(reps)) == str(CHUNK * reps).encode()
    same(raw(server, "get", "built"), chunk * reps)
    assert raw(server, "del", "big", "built", "chunk") == b"3"
    assert raw(server, "ping") == b"PONG"
    assert "Traceback" not in server.log()


@pytest.mark.slow
@pytest.mark.huge
@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_redis_16mib_values_both_ways(platform: str, redis_image: Path, tmp_path: Path) -> None:
    """16 MiB values through the guest's TCP in each environment: minutes in a realm (most of
    it the first touch of the reply's pages), so `make test-huge` runs it, not `make test`."""
    server = start(redis_image, platform, tmp_path)
    try:
        large_values(server, BIG_VALUE, tmp_path)
    finally:
        server.stop()
