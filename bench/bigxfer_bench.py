"""Large values through the guest's TCP: Debian's redis-server in a plain VM, an RME normal VM
and a realm behind `-n mode=user,hostfwd=...`, the host's redis-cli GETting a 1 MiB and a
16 MiB random value, against the same redis-server binary under qemu-aarch64-static on host
sockets, in the same run. Each GET is timed twice and the faster kept (the first also pays
for the guest pages the reply's buffer touches first); every reply is checked byte for byte.

    python bench/bigxfer_bench.py            (needs build/redis.img: make build/redis.img)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from net_bench import REDIS_PARAMS, UNIREALM, cpu_seconds, free_port

REPO = Path(__file__).resolve().parents[1]
ENVS = {"plain VM": ["--platform", "kvm"], "RME normal VM": ["--platform", "rme"], "realm": ["--realm"]}
SIZES = (1 << 20, 16 << 20)
REDIS_ARGS = ["--protected-mode", "no", "--save", "", "--appendonly", "no", "--ignore-warnings", "ARM64-COW-BUG"]


def redis_cli() -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is missing: apt-get install redis-tools")
    return cli


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited before it answered")
        res = subprocess.run([redis_cli(), "-p", str(port), "ping"], capture_output=True, timeout=30, check=False)
        if res.stdout.strip() == b"PONG":
            return
        time.sleep(0.5)
    raise RuntimeError("the server did not answer in time")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the VMM and its kernel process)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    for child in children:
        with contextlib.suppress(OSError):  # gone meanwhile
            total += tree_cpu(int(child))
    return total


def get_times(port: int, pid: int, values: dict[int, Path]) -> dict[int, tuple[float, float]]:
    """size -> (best wall seconds of a GET, the server's CPU seconds, children included, in it)."""
    out = {}
    for size, path in values.items():
        with open(path, "rb") as f:
            subprocess.run([redis_cli(), "-p", str(port), "-x", "set", f"v{size}"], stdin=f, check=True,
                           capture_output=True, timeout=900)
        want = path.read_bytes() + b"\n"
        best: tuple[float, float] | None = None
        for _ in range(2):
            cpu, start = tree_cpu(pid), time.perf_counter()
            got = subprocess.run([redis_cli(), "-p", str(port), "get", f"v{size}"], capture_output=True,
                                 timeout=900, check=True).stdout
            wall, used = time.perf_counter() - start, tree_cpu(pid) - cpu
            if got != want:
                raise RuntimeError(f"GET of {size} bytes returned {len(got) - 1} bytes that differ")
            if best is None or wall < best[0]:
                best = (wall, used)
        assert best is not None
        out[size] = best
    return out


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def qemu_times(values: dict[int, Path]) -> dict[int, tuple[float, float]]:
    qemu = shutil.which("qemu-aarch64-static")
    rootfs = REPO / "build" / "debian" / "rootfs"
    if qemu is None:
        raise RuntimeError("qemu-aarch64-static is missing: apt-get install qemu-user-static")
    if not (rootfs / "usr/bin/redis-server").exists():
        raise RuntimeError("build/debian/rootfs has no redis-server: make build/redis.img")
    port = free_port()
    proc = subprocess.Popen([qemu, "-L", str(rootfs), str(rootfs / "usr/bin/redis-server"), "--port", str(port),
                             *REDIS_ARGS], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        return get_times(port, proc.pid, values)
    finally:
        stop(proc)


def unirealm_times(image: Path, env: str, values: dict[int, Path], data: str) -> dict[int, tuple[float, float]]:
    port = free_port()
    cmd = [*UNIREALM, "run", "-k", str(image), *ENVS[env], "-n", f"mode=user,hostfwd=tcp:127.0.0.1:{port}-:6379",
           f"--params={REDIS_PARAMS}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, UNIREALM_DATA_DIR=data))
    try:
        wait_ready(port, proc)
        return get_times(port, proc.pid, values)
    finally:
        stop(proc)


def run() -> list[tuple[str, float, float, str]]:
    image = REPO / "build" / "redis.img"
    if not image.exists():
        raise RuntimeError("build/redis.img is missing: make build/redis.img")
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        values = {}
        for size in SIZES:
            path = Path(tmp) / f"value{size}"
            path.write_bytes(os.urandom(size))
            values[size] = path
        base = qemu_times(values)
        plain: dict[int, tuple[float, float]] = {}
        for env in ENVS:
            got = unirealm_times(image, env, values, tmp)
            plain = plain or got
            for size in SIZES:
                rows.append((f"redis GET of {size >> 20} MiB, {env} vs redis-server under qemu-user (wall)",
                             got[size][0], base[size][0], "s"))
                if got is not plain:  # qemu-user's CPU for a GET is below the clock tick: the plain VM's
                    rows.append((f"the same GET, CPU of the VMM and its kernel process: {env} vs plain VM",
                                 got[size][1], plain[size][1], "s"))
    return rows


if __name__ == "__main__":
    for name, value, baseline, unit in run():
        print(f"{name}: {value:.3f} {unit} vs {baseline:.3f} {unit} = {value / baseline:.1f}x")
