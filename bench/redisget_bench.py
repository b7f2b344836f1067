"""Debian's redis-server behind `-n mode=user,hostfwd=...` in a plain VM (and a realm) against
the same binary under qemu-aarch64-static on host sockets, in the same run: redis-benchmark GET
and SET at -c 1, GET at -c 20 and pipelined (-P 16, one client). Rates are requests per second
(higher is better, so the qemu-user figure is the baseline each row divides); CPU is the VMM and
its kernel process per request (min over rounds).

    python bench/redisget_bench.py [--realm] [--rounds N] [--before OLD/src]

With `--before`, the tree at OLD/src (its own images under OLD/../build) is measured in the same
run, alternating with this one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bigxfer_bench import stop
from net_bench import REDIS_PARAMS, cpu_seconds, free_port

REPO = Path(__file__).resolve().parents[1]
ENVS = {"kvm": ["--platform", "kvm"], "realm": ["--realm"]}
# name -> (redis-benchmark's test, its client arguments)
LOADS = {"GET -c 1": ("get", ["-c", "1"]), "SET -c 1": ("set", ["-c", "1"]), "GET -c 20": ("get", ["-c", "20"]),
         "GET -P 16": ("get", ["-c", "1", "-P", "16"])}
Row = tuple[str, float, float, str]


def tools() -> tuple[str, str, str]:
    cli, bench, qemu = shutil.which("redis-cli"), shutil.which("redis-benchmark"), shutil.which("qemu-aarch64-static")
    if not (cli and bench):
        raise RuntimeError("redis-benchmark is missing: apt-get install redis-tools")
    if qemu is None:
        raise RuntimeError("qemu-aarch64-static is missing: apt-get install qemu-user-static")
    return cli, bench, qemu


def children_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its direct children (the VMM and its kernel process)."""
    total = cpu_seconds(pid)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for kid in kids:
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += cpu_seconds(int(kid))
    return total


def wait_ready(cli: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited before it answered")
        try:
            got = subprocess.run([cli, "-p", str(port), "ping"], capture_output=True, timeout=3).stdout
            if got.strip() == b"PONG":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not answer in time")


def gets(bench: str, port: int, pid: int, n: int) -> dict[str, tuple[float, float]]:
    """Requests per second and CPU seconds per request of the server at each load."""
    out: dict[str, tuple[float, float]] = {}
    for name, (test, args) in LOADS.items():
        used = children_cpu(pid)
        text = subprocess.run([bench, "-p", str(port), "-n", str(n), *args, "-t", test, "--csv"],
                              capture_output=True, text=True, timeout=600, check=True).stdout
        cpu = (children_cpu(pid) - used) / n
        label = f'"{test.upper()}"'
        rate = next(float(line.split(",")[1].strip('"')) for line in text.splitlines() if line.startswith(label))
        out[name] = (rate, cpu)
    return out


def qemu_gets(n: int) -> dict[str, tuple[float, float]]:
    cli, bench, qemu = tools()
    rootfs = REPO / "build" / "debian" / "rootfs"
    if not (rootfs / "usr/bin/redis-server").exists():
        raise RuntimeError("build/debian/rootfs has no redis-server: make build/redis.img")
    port = free_port()
    args = REDIS_PARAMS.split()[1:]
    proc = subprocess.Popen([qemu, "-L", str(rootfs), str(rootfs / "usr/bin/redis-server"), "--port", str(port),
                             *[a.strip("'") for a in args]], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(cli, port, proc)
        return gets(bench, port, proc.pid, n)
    finally:
        stop(proc)


def vm_gets(src: Path, image: Path, env: str, data: str, n: int) -> dict[str, tuple[float, float]]:
    cli, bench, _ = tools()
    port = free_port()
    cmd = [sys.executable, "-m", "unirealm.cli.main", "run", "-k", str(image), *ENVS[env], "-n",
           f"mode=user,hostfwd=tcp:127.0.0.1:{port}-:6379", f"--params={REDIS_PARAMS}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, UNIREALM_DATA_DIR=data, PYTHONPATH=str(src)))
    try:
        wait_ready(cli, port, proc)
        return gets(bench, port, proc.pid, n)
    finally:
        stop(proc)


def measure(envs: tuple[str, ...] = ("kvm",), rounds: int = 2, n: int = 2000, before: Path | None = None
            ) -> dict[str, dict[str, tuple[float, float]]]:
    """{"qemu-user" or "ENV TREE": {load: (best rate, least CPU seconds per request)}}, the
    servers alternating round by round."""
    image = REPO / "build" / "redis.img"
    if not image.exists():
        raise RuntimeError("build/redis.img is missing: make build/redis.img")
    trees = {"now": (REPO / "src", image)}
    if before is not None:
        trees["before"] = (before, before.parent / "build" / "redis.img")
    best: dict[str, dict[str, tuple[float, float]]] = {}

    def keep(key: str, got: dict[str, tuple[float, float]]) -> None:
        old = best.setdefault(key, got)
        best[key] = {k: (max(old[k][0], got[k][0]), min(old[k][1], got[k][1])) for k in got}

    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            keep("qemu-user", qemu_gets(n))
            for tree, (src, img) in trees.items():
                for env in envs:
                    keep(f"{env} {tree}", vm_gets(src, img, env, tmp, n))
    return best


def run(envs: tuple[str, ...] = ("kvm",), rounds: int = 2, n: int = 2000, before: Path | None = None) -> list[Row]:
    best = measure(envs, rounds, n, before)
    trees = ["now", "before"] if before is not None else ["now"]
    rows: list[Row] = []
    q = best["qemu-user"]
    for tree in trees:
        for env in envs:
            got = best[f"{env} {tree}"]
            for load in LOADS:
                rows.append((f"redis {load}, {env} ({tree}) vs qemu-user: rate", got[load][0], q[load][0], "req/s"))
            for load in LOADS:
                rows.append((f"redis {load}, {env} ({tree}) vs qemu-user: CPU per request",
                             got[load][1] * 1e6, q[load][1] * 1e6, "µs"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realm", action="store_true", help="measure a realm too")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--before", type=Path)
    args = parser.parse_args()
    envs = ("kvm", "realm") if args.realm else ("kvm",)
    for name, value, base, unit in run(envs, args.rounds, args.n, args.before):
        print(f"{name}: {value:.1f} vs {base:.1f} {unit} = {value / base:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
