"""Servers behind the user-mode network: httpreply (sequential HTTP requests, a new
connection each) and Debian's redis-server (redis-benchmark SET/GET, one client), in a
realm against the same image as a plain VM, measured back to back."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNIREALM = [sys.executable, "-m", "unirealm.cli.main"]
REDIS_PARAMS = "-- --protected-mode no --save '' --appendonly no --ignore-warnings ARM64-COW-BUG"
ENVS = {"kvm": ["--platform", "kvm"], "realm": ["--realm"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, image: Path, env: str, guest_port: int, params: str, data: str) -> None:
        self.port = free_port()
        cmd = [*UNIREALM, "run", "-k", str(image), *ENVS[env], "-n",
               f"mode=user,hostfwd=tcp:127.0.0.1:{self.port}-:{guest_port}", f"--params={params}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=dict(os.environ, UNIREALM_DATA_DIR=data))

    def wait(self, ready: object) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the VMM exited before the server answered")
            try:
                if ready(self.port):  # type: ignore[operator]
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass  # not listening yet
            time.sleep(0.3)
        raise RuntimeError("the server did not answer in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat utime, stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read()
    finally:
        conn.close()


def httpreply_rate(image: Path, env: str, data: str, n: int = 100, cpu: list[float] | None = None) -> float:
    """Requests per second; with `cpu`, the VMM's CPU seconds per request are appended to it."""
    server = Server(image, env, 8123, "--", data)
    try:
        server.wait(lambda port: http_get(port) == b"Hello, World!\n")
        start, used = time.perf_counter(), cpu_seconds(server.proc.pid)
        for _ in range(n):
            http_get(server.port)
        if cpu is not None:
            cpu.append((cpu_seconds(server.proc.pid) - used) / n)
        return n / (time.perf_counter() - start)
    finally:
        server.stop()


def redis_rates(image: Path, env: str, data: str, n: int = 2000, cpu: list[float] | None = None
                ) -> tuple[float, float]:
    """SET/s and GET/s; with `cpu`, the VMM's CPU seconds per request (SET and GET) are appended."""
    server = Server(image, env, 6379, REDIS_PARAMS, data)
    cli, bench = shutil.which("redis-cli"), shutil.which("redis-benchmark")
    assert cli and bench
    try:
        server.wait(lambda port: subprocess.run([cli, "-p", str(port), "ping"], capture_output=True,
                                                timeout=3).stdout.strip() == b"PONG")
        used = cpu_seconds(server.proc.pid)
        out = subprocess.run([bench, "-p", str(server.port), "-n", str(n), "-c", "1", "-t", "set,get", "--csv"],
                             capture_output=True, text=True, timeout=600, check=True).stdout
        if cpu is not None:
            cpu.append((cpu_seconds(server.proc.pid) - used) / (2 * n))
        rates = {line.split(",")[0].strip('"'): float(line.split(",")[1].strip('"'))
                 for line in out.splitlines() if line.startswith('"SET"') or line.startswith('"GET"')}
        return rates["SET"], rates["GET"]
    finally:
        server.stop()


def run() -> list[tuple[str, float, float, str]]:
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        elf, image = Path(tmp) / "httpreply", Path(tmp) / "httpreply.img"
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O2", "-o", str(elf),
                        str(REPO / "examples/httpreply/httpreply.c")], check=True)
        subprocess.run([*UNIREALM, "build", str(elf), "-o", str(image)], check=True, capture_output=True)
        # Rates: higher is better, so the plain VM is the baseline the realm is compared with.
        rows.append(("httpreply req/s: plain VM vs realm",
                     httpreply_rate(image, "kvm", tmp), httpreply_rate(image, "realm", tmp), "req/s"))
        redis = REPO / "build" / "redis.img"
        if redis.exists() and shutil.which("redis-benchmark"):
            vm_set, vm_get = redis_rates(redis, "kvm", tmp)
            realm_set, realm_get = redis_rates(redis, "realm", tmp)
            rows.append(("redis SET/s (1 client): plain VM vs realm", vm_set, realm_set, "req/s"))
            rows.append(("redis GET/s (1 client): plain VM vs realm", vm_get, realm_get, "req/s"))
    return rows
